"""Task losses: PaddleSeg's `loss:` block, as its config checker and training loop apply it, and the one registry
saying which loss types exist and whose code computes each.

PaddleSeg 2.8's rules (cvlibs/config_checker.py `DefaultLossRule`, `DefaultSyncIgnoreIndexRule`; core/train.py
`loss_computation`):

- `types` and `coef` are lists; one type with several coefficients is that type repeated for every coefficient,
  otherwise there is one type per coefficient (any other pairing is an error);
- entry i applies to the model's output i (in train mode: the main head first, auxiliary heads after), and the
  model must produce exactly as many outputs as there are entries;
- `MixedLoss` (its own `losses` and `coef`) applies each of its losses to output i, times its coef and entry i's;
- `KLLoss` compares output 0 with output 1 (detached), whatever i;
- every loss's `ignore_index` is the data set's: filled in when absent, an error when it differs.

`BCELoss` with `edge_label: true` takes PaddleSeg's edge labels (its Dataset's `edge: true`), which segdistill's
data stream does not produce: refused by name, as is every option a loss here does not implement.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from segdistill.errors import SegDistillError


@dataclass(frozen=True)
class TaskLossKind:
    type: str  # PaddleSeg's class name
    short: str  # the loss part's name in the training log
    options: tuple  # the PaddleSeg options segdistill takes (besides `type` and `ignore_index`)
    source: str  # whose code computes it
    make: Callable  # (options, ignore_index, where) -> fn(outputs, i, label) -> 0-D tensor


TASK_LOSSES: dict[str, TaskLossKind] = {}


def _task(type_name, short, options, source):
    def deco(make):
        TASK_LOSSES[type_name] = TaskLossKind(type_name, short, tuple(options), source, make)
        return make

    return deco


def _on_output(fn):
    """fn(logits, label) as a loss on output i."""
    return lambda outputs, i, label: fn(outputs[i], label)


@_task(
    "CrossEntropyLoss",
    "ce",
    ("weight", "avg_non_ignore", "top_k_percent_pixels"),
    "segdistill (losses/segmentation.py; PaddleSeg's fails on paddle 3.3)",
)
def _ce(opts, ignore_index, where):
    from segdistill.losses.segmentation import cross_entropy

    weight = opts.get("weight")
    if weight is not None and not isinstance(weight, (list, tuple)):
        raise SegDistillError(f"{where}.weight must be a list of class weights, got {weight!r}")
    top_k = float(opts.get("top_k_percent_pixels", 1.0))
    if not 0.0 < top_k <= 1.0:
        raise SegDistillError(f"{where}.top_k_percent_pixels must be in (0, 1], got {top_k}")
    kw = {"weight": weight, "avg_non_ignore": bool(opts.get("avg_non_ignore", True)), "top_k_percent_pixels": top_k}
    # Labels were range-checked on the host by the data stream: no device-to-host copy per step.
    return _on_output(lambda x, y: cross_entropy(x, y, ignore_index=ignore_index, check_labels=False, **kw))


@_task(
    "OhemCrossEntropyLoss",
    "ohem",
    ("thresh", "min_kept"),
    "segdistill (losses/ohem.py; PaddleSeg's fails on paddle 3.3)",
)
def _ohem(opts, ignore_index, where):
    from segdistill.losses.ohem import ohem_cross_entropy

    thresh, min_kept = float(opts.get("thresh", 0.7)), opts.get("min_kept", 10000)
    if not isinstance(min_kept, int) or min_kept < 0:
        raise SegDistillError(f"{where}.min_kept must be a non-negative integer, got {min_kept!r}")
    return _on_output(lambda x, y: ohem_cross_entropy(x, y, ignore_index, thresh, min_kept))


def _paddleseg(type_name, short, options):
    def make(opts, ignore_index, where):
        from segdistill.losses.paddleseg_task import paddleseg_loss

        if type_name == "BCELoss" and opts.get("edge_label"):
            raise SegDistillError(
                f"{where}: BCELoss option edge_label: true needs PaddleSeg's edge labels, which "
                f"segdistill's data stream does not produce; not supported"
            )
        kw = {k: opts[k] for k in options if k in opts and k != "edge_label"}
        if type_name == "BCELoss" and isinstance(kw.get("weight"), (list, tuple)):
            raise SegDistillError(f"{where}.weight: PaddleSeg's BCELoss takes 'dynamic' or a tensor, not a list")
        try:
            return _on_output(paddleseg_loss(type_name, ignore_index=ignore_index, **kw))
        except (TypeError, ValueError, AssertionError) as exc:
            raise SegDistillError(f"{where}: {type_name}: {exc}") from None

    _task(type_name, short, options, f"PaddleSeg's own class (paddleseg.models.losses.{type_name})")(make)


_paddleseg("DiceLoss", "dice", ("weight", "smooth"))
_paddleseg("BCELoss", "bce", ("weight", "pos_weight", "edge_label"))
_paddleseg("LovaszSoftmaxLoss", "lovasz", ("classes",))
_paddleseg("DetailAggregateLoss", "detail", ())


@_task("KLLoss", "kl_aux", ("temperature",), "segdistill (losses/logits.py), on outputs 0 and 1 as PaddleSeg")
def _kl(opts, ignore_index, where):
    from segdistill.losses.logits import kl_loss

    temperature = float(opts.get("temperature", 1.0))

    def fn(outputs, i, label):
        if len(outputs) < 2:
            raise SegDistillError(f"{where}: KLLoss compares the model's outputs 0 and 1; it has {len(outputs)}")
        return kl_loss(outputs[0], outputs[1].detach(), temperature=temperature)

    return fn


def expand_types(block, where: str):
    """(types, coefs) of a PaddleSeg loss block: one type over every coefficient, else one type per coefficient."""
    if not isinstance(block, dict) or "types" not in block or "coef" not in block:
        raise SegDistillError(f"{where}: expected a mapping with `types` and `coef` lists")
    types, coefs = block["types"] or [], block["coef"] or []
    if not isinstance(types, list) or not isinstance(coefs, list) or not types:
        raise SegDistillError(f"{where}: `types` and `coef` must be non-empty lists")
    if len(types) == 1 and len(coefs) > 1:
        types = types * len(coefs)
    if len(types) != len(coefs):
        raise SegDistillError(
            f"{where}: types has {len(types)} entries but coef has {len(coefs)} (PaddleSeg takes "
            f"one type for every coefficient, or one type per coefficient)"
        )
    for i, t in enumerate(types):
        if not isinstance(t, dict) or "type" not in t:
            raise SegDistillError(f"{where}.types[{i}]: expected a mapping with a `type`, got {t!r}")
    return types, [float(c) for c in coefs]


def task_kind(type_name, where: str) -> TaskLossKind:
    try:
        return TASK_LOSSES[type_name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(type_name), list(TASK_LOSSES) + ["MixedLoss"], n=3, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise SegDistillError(
            f"{where}: loss type '{type_name}' is not supported{hint} (supported: "
            f"{', '.join(sorted([*TASK_LOSSES, 'MixedLoss']))})"
        ) from None


def _one(cfg: dict, ignore_index: int, where: str):
    """(short name, fn) of one non-mixed loss entry, its options checked."""
    kind = task_kind(cfg["type"], where)
    unknown = sorted(set(cfg) - {"type", "ignore_index", *kind.options})
    if unknown:
        allowed = ", ".join(kind.options) or "none"
        raise SegDistillError(f"{where}: {kind.type} option(s) {unknown} are not supported (supported: {allowed})")
    if cfg.get("ignore_index", ignore_index) != ignore_index:
        raise SegDistillError(
            f"{where}.ignore_index is {cfg['ignore_index']} but the data set's is {ignore_index} "
            f"(PaddleSeg requires them equal)"
        )
    return kind.short, kind.make(cfg, ignore_index, where)


@dataclass
class TaskLosses:
    """The parsed `loss:` block: entry i -> [(part name, coefficient, fn)] (several for MixedLoss)."""

    entries: list
    source: str

    def check_outputs(self, n: int) -> None:
        if n != len(self.entries):
            raise SegDistillError(
                f"{self.source}: the model returns {n} output(s) in training but loss has {len(self.entries)} "
                f"entr{'y' if len(self.entries) == 1 else 'ies'} (PaddleSeg: one per output; give `coef` one "
                f"value per output)"
            )

    def __call__(self, outputs, label) -> dict:
        """{part name: coefficient x loss} of the model's outputs (a list) on `label`."""
        self.check_outputs(len(outputs))
        return {name: coef * fn(outputs, i, label) for i, parts in enumerate(self.entries) for name, coef, fn in parts}


def task_losses(loss_cfg, source, ignore_index: int) -> TaskLosses:
    """The YAML `loss:` block of `source` with PaddleSeg's semantics (see the module docstring)."""
    types, coefs = expand_types(loss_cfg, f"{source}: loss")
    entries, taken = [], set()

    def name(short, i):
        base = short if i == 0 else f"{short}_{i}"
        out, k = base, 1
        while out in taken:
            k += 1
            out = f"{base}.{k}"
        taken.add(out)
        return out

    for i, (cfg, coef) in enumerate(zip(types, coefs)):
        where = f"{source}: loss.types[{i}]"
        if cfg["type"] != "MixedLoss":
            short, fn = _one(cfg, ignore_index, where)
            entries.append([(name(short, i), coef, fn)])
            continue
        unknown = sorted(set(cfg) - {"type", "losses", "coef"})
        if unknown:
            raise SegDistillError(f"{where}: MixedLoss option(s) {unknown} are not supported (supported: losses, coef)")
        subs = cfg.get("losses") or []
        sub_coefs = cfg.get("coef") or []
        if not isinstance(subs, list) or not isinstance(sub_coefs, list) or not subs or len(subs) != len(sub_coefs):
            raise SegDistillError(
                f"{where}: MixedLoss needs `losses` and `coef` lists of equal length, got "
                f"{len(subs) if isinstance(subs, list) else subs!r} and "
                f"{len(sub_coefs) if isinstance(sub_coefs, list) else sub_coefs!r}"
            )
        parts = []
        for j, (sub, c) in enumerate(zip(subs, sub_coefs)):
            sub_where = f"{where}.losses[{j}]"
            if not isinstance(sub, dict) or sub.get("type") in (None, "MixedLoss"):
                raise SegDistillError(f"{sub_where}: expected a loss mapping with a `type` (not MixedLoss)")
            short, fn = _one(sub, ignore_index, sub_where)
            parts.append((name(short, i), coef * float(c), fn))
        entries.append(parts)
    return TaskLosses(entries, str(source))


def sources() -> dict[str, str]:
    """{PaddleSeg loss type: whose code computes it} (the docs' table)."""
    out = {t: k.source for t, k in TASK_LOSSES.items()}
    out["MixedLoss"] = "segdistill (losses/task.py): each of its `losses` from this registry"
    return dict(sorted(out.items()))
