"""Distillation terms as declared in YAML: which tensors to compare, with which loss, weight and options.

A term's `options:` are its loss's own keyword arguments (`segdistill.losses.options(loss)` lists them with their
defaults); they are checked here, so a new loss with new hyperparameters needs no edit to this parser, the
schema or the distiller. `temperature:` at the term's top level is kept as a shorthand for
`options: {temperature: ...}` (PaddleSeg's and the tutorial's spelling): it is moved into the options, giving
both is an error, and a loss without a temperature refuses it like any unknown option. Unset options take the
loss's defaults (e.g. cirkd_pixel's temperature 0.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segdistill.errors import SegDistillError

TERM_KEYS = {"name", "student", "teacher", "loss", "weight", "temperature", "connector", "options"}

# PaddleSeg `distill_loss` types (tutorial student YAML) -> our loss names.
PADDLESEG_LOSSES = {"KLLoss": "kl", "MSELoss": "mse", "CWDLoss": "cwd", "SegChannelwiseLoss": "channelwise_legacy"}


@dataclass
class DistillTerm:
    student: str = "logits"
    teacher: str = "logits"
    loss: str = "kl"
    weight: float = 1.0
    connector: Any = None
    name: str = field(default="")
    options: dict = field(default_factory=dict)  # the loss's keyword arguments; unset ones take its defaults

    def __post_init__(self):
        if not self.name:
            self.name = (
                f"{self.loss}:{self.student}"
                if self.student == self.teacher
                else (f"{self.loss}:{self.student}->{self.teacher}")
            )

    @property
    def temperature(self) -> float | None:
        """The temperature the loss runs at: the option, else the loss's default (None: it has none)."""
        from segdistill.losses import options

        return self.options.get("temperature", options(self.loss).get("temperature"))


def _term(item: dict, where: str) -> DistillTerm:
    """One term mapping -> DistillTerm, its options checked against its loss; `temperature:` moved into them."""
    from segdistill.losses import available, check_options

    unknown = set(item) - TERM_KEYS
    if unknown:
        raise SegDistillError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(TERM_KEYS)}")
    item = dict(item)
    opts = item.pop("options", None) or {}
    if not isinstance(opts, dict):
        raise SegDistillError(f"{where}.options: expected a mapping of option names to values, got {opts!r}")
    opts = dict(opts)
    if "temperature" in item:
        if "temperature" in opts:
            raise SegDistillError(f"{where}: temperature is given twice (as a key and in options); keep one")
        opts["temperature"] = item.pop("temperature")
    term = DistillTerm(**item)
    if term.loss not in available():
        raise SegDistillError(f"{where}.loss: unknown loss '{term.loss}' (known: {', '.join(available())})")
    term.options = check_options(term.loss, opts, f"{where} (term '{term.name}').options")
    if "temperature" in term.options:
        if not float(term.options["temperature"]) > 0:
            raise SegDistillError(f"{where}.temperature: must be > 0, got {term.options['temperature']}")
        term.options["temperature"] = float(term.options["temperature"])
    term.weight = float(term.weight)
    return term


def parse_terms(raw, source: str = "distill.terms") -> list[DistillTerm]:
    """Validate a list of term mappings (from the study config or a standalone YAML)."""
    if not isinstance(raw, list) or not raw:
        raise SegDistillError(f"{source}: expected a non-empty list of distillation terms")
    terms = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise SegDistillError(f"{source}[{i}]: expected a mapping, got {item!r}")
        terms.append(_term(item, f"{source}[{i}]"))
    names = [t.name for t in terms]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise SegDistillError(f"{source}: duplicate term name(s) {sorted(dupes)}; give each term a `name:`")
    return terms


def terms_from_paddleseg(distill_loss: dict, source: str = "distill_loss") -> list[DistillTerm]:
    """PaddleSeg's `distill_loss: {types: [...], coef: [...]}` as output-to-output terms, with its `loss:` rules
    (segdistill.losses.task.expand_types): entry i compares the student's output i with the teacher's output i
    (`logits`, `logits.1`, ...), as PaddleSeg's distill_loss_computation does."""
    from segdistill.distill.recorder import output_name
    from segdistill.losses.task import expand_types

    types, coefs = expand_types(distill_loss, source)
    raw = []
    for i, (t, c) in enumerate(zip(types, coefs)):
        kind = t.get("type")
        if kind not in PADDLESEG_LOSSES:
            raise SegDistillError(
                f"{source}.types[{i}]: unsupported type '{kind}' (supported: {', '.join(PADDLESEG_LOSSES)})"
            )
        unknown = sorted(set(t) - {"type", "temperature", "ignore_index"})
        if unknown:
            raise SegDistillError(
                f"{source}.types[{i}]: {kind} option(s) {unknown} are not supported (supported: temperature)"
            )
        out = output_name(i)
        raw.append(
            {
                "student": out,
                "teacher": out,
                "loss": PADDLESEG_LOSSES[kind],
                "weight": c,
                "temperature": t.get("temperature", 1.0),
            }
        )
    return parse_terms(raw, source)


def resolve_terms(
    terms, student_config, student_dic: dict | None = None, source: str = "distill.terms"
) -> list[DistillTerm]:
    """The terms a distillation optimises: `terms` (raw mappings) when given, else the student YAML's
    `distill_loss` (the tutorial's way of declaring them).

    The one place of that fallback: the study check, the terms file the workflow writes and the trainer all come
    here, so they cannot disagree. `student_dic` is the student's experiment dict when the caller has it.
    """
    if terms is not None:
        return parse_terms(terms, source)
    if student_dic is None:
        from segdistill.paddleseg_yaml import read_yaml

        student_dic = read_yaml(student_config)
    if not student_dic.get("distill_loss"):
        raise SegDistillError(f"{source}: no terms given and {student_config} has no `distill_loss`")
    return terms_from_paddleseg(student_dic["distill_loss"], f"{student_config}: distill_loss")


def write_terms_file(terms, student_config: str, out: str, source: str = "distill.terms") -> list[DistillTerm]:
    """Write `{terms: [...]}` in full (see `resolve_terms`), so a run records exactly what it optimised."""
    from dataclasses import asdict

    from segdistill.paddleseg_yaml import write_yaml

    parsed = resolve_terms(terms, student_config, source=source)
    write_yaml({"terms": [asdict(t) for t in parsed]}, out)
    return parsed


def read_terms_file(path) -> list[dict]:
    """The raw `terms:` list of a terms file (as `write_terms_file` writes it); validated by `resolve_terms`."""
    from segdistill.paddleseg_yaml import read_yaml

    raw = read_yaml(path)
    terms = raw.get("terms")
    if terms is None:
        raise SegDistillError(f"{path}: expected a mapping with a `terms:` list")
    return terms
