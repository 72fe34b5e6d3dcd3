"""What each job kind takes, declared once: training, teacher outputs, evaluation.

Why: an option used to be spelled in the schema, the rule's script, the command line's flags, the code that
turned flags into arguments and the engine's arguments. Now a job is one typed spec: the workflow's script
builds it from `snakemake.params` (whose sections use the fields' names), the command line's flags are made
from its fields (`segdistill.cli`, help text from the field's metadata), and a job that runs on leased devices
gets it as a JSON file (`write_spec` / `read_spec`): every rank of a multi-device job reads the same file.
A new training option is a schema key, a field here with its identity mark (`opt(identity=...)`: the run key and
the run's summary are computed from the marks), and the code that uses it. At its default it is in neither the run
key nor the jobs' params (segdistill.schema.job_view), so finished studies stay done.

No paddle here: the command line's `--help` and the workflow's scripts build specs without importing it.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from segdistill.errors import SegDistillError
from segdistill.report.names import HEADLINE_SPLIT


def opt(default=dataclasses.MISSING, help=None, identity=None, **cli):
    """A spec field: its default, the command line's help text and flag details (`choices`, `nargs`,
    `cli_default` where the command line's default differs from the engine's, `positional=True` for an argument
    without a flag, `cli=False` for none).

    `identity` (a training spec's fields must say; see `identity`): does the field change a run's result?
    True: it enters the run key when it differs from its default (a new option: runs made before it keep their
    keys); ALWAYS: it is always in the key; RESOLVED: it enters through what the trainer resolves from it (the
    experiment YAML with its overrides, the training data's digest, the distiller's terms and teacher);
    NESTED: a block whose own fields say; False: it changes no result. `identity_name`: its name in the key, where
    that is not the field's; `identity_value`: the spec's attribute that holds its value in the key."""
    kw = {"default_factory": default} if callable(default) else {"default": default}
    return field(**kw, metadata={"help": help, "identity": identity, **cli})


ALWAYS, RESOLVED, NESTED = "always", "resolved", "nested"


def _default(f):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def identity(spec, every: bool = False) -> dict:
    """What of `spec` changes its run's result, by its fields' identity marks, under their key names: the
    ALWAYS fields, and the True ones that differ from their default (`every`: those at their default too, as the
    run's summary records them). The trainer adds what it resolves (segdistill.trainer)."""
    out = {}
    for f in dataclasses.fields(spec):
        mark, value = f.metadata.get("identity"), getattr(spec, f.name)
        if mark == NESTED:
            out.update(identity(value, every))
        elif mark == ALWAYS or (mark is True and (every or value != _default(f))):
            out[f.metadata.get("identity_name", f.name)] = getattr(spec, f.metadata.get("identity_value", f.name))
    return out


class _Keyed:
    """A job over the keyed training stream (segdistill.data.stream): its key is `data_seed`, else `seed`."""

    @property
    def stream_seed(self) -> int:
        return self.seed if self.data_seed is None else self.data_seed


def test_config_arg(text: str):
    """A command line's test_config: `yaml`, or a mapping written in YAML (flow style)."""
    import yaml

    value = yaml.safe_load(text)
    if value != "yaml" and not isinstance(value, dict):
        raise ValueError(f"not yaml or a mapping: {text}")
    return value


@dataclass
class EvaluateOptions:
    """How a run's model is evaluated: the study's `evaluate` section, field for field."""

    splits: list[str] = opt(lambda: ["val"], nargs="+", help="splits to evaluate", identity=False)
    # It may move val's numbers by rounding, so which checkpoint is best.
    batch_size: int = opt(
        1,
        help="images per forward (same-size images; val during training too); 1 as PaddleSeg",
        identity=True,
        identity_name="eval_batch_size",
    )
    # The YAML's own test_config enters through the experiment; another protocol chooses other checkpoints.
    test_config: dict | str = opt(
        "yaml",
        type=test_config_arg,
        help="PaddleSeg test_config for every model, a YAML mapping (e.g. '{aug_eval: true, scales: 0.5}'), or "
        "yaml: each model under its YAML's own",
        identity=True,
    )


@dataclass
class TrainSpec(_Keyed):
    """One training run: teacher, student baseline, or distilled student (`teacher_config` set)."""

    config: str = opt(help="PaddleSeg experiment YAML", identity=RESOLVED)
    save_dir: str = opt(help="run folder: checkpoints, best_model/, logs", identity=False)
    seed: int = opt(0, identity=ALWAYS)
    data_root: str | None = opt(None, help="override train/val dataset_root", identity=RESOLVED)
    iters: int | None = opt(None, identity=RESOLVED)
    batch_size: int | None = opt(
        None, help="images per device (rank), as PaddleSeg: the global batch is batch_size x ranks", identity=RESOLVED
    )
    learning_rate: float | None = opt(None, identity=RESOLVED)
    grad_clip_norm: float | None = opt(
        None,
        help="clip the global L2 norm of the gradients (student and connectors) to this; default: none",
        identity=RESOLVED,
    )
    save_interval: int = opt(1000, identity=ALWAYS)
    log_iters: int = opt(10, identity=False)
    keep_checkpoint_max: int = opt(5, help="checkpoints kept, newest first (PaddleSeg: 5)", identity=False)
    # The engine evaluates unless told not to; the command line, as PaddleSeg's, only with --do_eval.
    do_eval: bool = opt(True, cli_default=False, identity=ALWAYS)
    use_vdl: bool = opt(False, identity=False)
    num_workers: int = opt(
        0, help="data loader worker processes (0: in-process); results do not depend on it", identity=False
    )
    resume_model: str | None = opt(
        None, help="checkpoint folder to resume from (default: newest valid in save_dir)", identity=False
    )
    class_names: list[str] | None = opt(None, nargs="+", identity=False)
    teacher_config: str | None = opt(None, help="patched teacher YAML: distil into the student", identity=RESOLVED)
    distill: str | None = opt(
        None, help="YAML with `terms:` (default: the student YAML's distill_loss)", identity=RESOLVED
    )
    distill_terms: list | None = opt(None, cli=False, identity=RESOLVED)  # raw term mappings, not a `distill` file
    pretrained_cache: str | None = opt(
        None, help="folder of downloaded backbones (default resources/pretrained)", identity=RESOLVED
    )
    pretrained_backbone: bool = opt(
        True,
        help="use the backbone's `pretrained:` (--no_pretrained_backbone: train from scratch)",
        identity=RESOLVED,
    )
    precision: str = opt(
        "fp32",
        choices=["fp32", "fp16", "bf16"],
        help="mixed precision (GPU only; fp16 with loss scaling), as PaddleSeg's --precision",
        identity=ALWAYS,
    )
    amp_level: str = opt(
        "O1",
        choices=["O1", "O2"],
        help="O1: cast per op (white list); O2: cast the parameters too (fp32 master weights)",
        identity=ALWAYS,
    )
    deterministic: bool = opt(
        False,
        help="GPU: cuDNN's deterministic algorithms (FLAGS_cudnn_deterministic); see docs/distillation.md",
        identity=True,
    )
    data_seed: int | None = opt(
        None,
        help="key of the augmented data stream (default: --seed); see docs/distillation.md",
        identity=ALWAYS,
        identity_value="stream_seed",
    )
    teacher_outputs: str | None = opt(
        None,
        help="folder written by `segdistill teacher-outputs` for this run's stream: the teacher is not built",
        identity=RESOLVED,
    )
    data_record: str | None = opt(
        None, help="the data validation record (validation.json), checked with the cache", identity=RESOLVED
    )
    # The workflow's training jobs evaluate their best model while the engine is loaded, instead of a job that
    # starts the interpreter, imports paddle and builds the model again (segdistill.evaluate.evaluate_run).
    evaluate_out: str | None = opt(
        None,
        help="after training, evaluate best_model on --evaluate_splits and write the record here (JSON)",
        identity=False,
    )
    evaluate: EvaluateOptions = opt(EvaluateOptions, identity=NESTED)
    run_id: str | None = opt(
        None, help="run id recorded in the --evaluate_out record, e.g. distilled/kl/seed0", identity=False
    )
    # --no_final_checkpoint: only best_model/ at the end (a finished run is never resumed).
    final_checkpoint: bool = opt(True, help="write a checkpoint at the last iteration too", identity=False)

    def __post_init__(self):
        if isinstance(self.evaluate, dict):  # as the study's `evaluate` section or a spec file gives it
            self.evaluate = from_mapping(EvaluateOptions, self.evaluate, "evaluate")
        if self.distill and self.distill_terms is not None:
            raise SegDistillError("give the distillation terms once: a `distill` file or `distill_terms`")
        if self.distill and not self.teacher_config:
            raise SegDistillError("--distill needs --teacher_config")
        if self.teacher_outputs and not self.teacher_config:
            raise SegDistillError(
                "--teacher_outputs needs --teacher_config (its weights' SHA-256 is checked against the cache)"
            )


@dataclass
class TeacherOutputsSpec(_Keyed):
    """One seed's teacher outputs: the teacher over the distilled runs' training stream, stored."""

    config: str = opt(help="the student's PaddleSeg YAML (its data, transforms, iters, batch)")
    teacher_config: str = opt(help="patched teacher YAML (model.pretrained = trained weights)")
    out: str = opt(help="folder to write (manifest.json + one .npy per tensor)")
    distill: list[str] = opt(
        list, nargs="*", help="terms files of every method to serve (default: the student YAML's distill_loss)"
    )
    # Instead of `distill` files: raw term lists, None for the student YAML's distill_loss (the workflow passes
    # only their `teacher:` names, segdistill.study.teacher_terms).
    distill_terms: list | None = opt(None, cli=False)
    seed: int = opt(0, help="the distilled runs' --seed")
    data_seed: int | None = opt(None, help="the runs' --data_seed (default: --seed)")
    data_root: str | None = opt(None)
    iters: int | None = opt(None)
    batch_size: int | None = opt(None, help="per rank, as in train")
    ranks: int = opt(1, help="ranks of the distill runs (global batch = batch_size x ranks)")
    dtype: str = opt("float16", choices=["float16", "bfloat16", "float32"])
    max_gb: float = opt(8.0, help="refuse before writing when the cache would be larger")
    data_record: str | None = opt(None, help="the data validation record (validation.json)")
    pretrained_cache: str | None = opt(None)
    distinct: bool = opt(
        False, help="write the teacher's outputs on every distinct training input instead (what --shared reads)"
    )
    shared: str | None = opt(None, help="a --distinct folder to gather rows from (same teacher, data, tensors)")


@dataclass(kw_only=True)
class EvaluateSpec(EvaluateOptions):
    """Metrics of one run's trained weights on each split: the evaluation options and the run's files."""

    config: str = opt(help="PaddleSeg experiment YAML")
    model: str = opt(help="model.pdparams")
    data_root: str | None = opt(None)
    class_names: list[str] | None = opt(None, nargs="+")
    run: str | None = opt(None, help="run id recorded in the JSON, e.g. distilled/kl/seed0")
    out: str | None = opt(None, help="JSON file to write (-: print it)", cli_default="-")


# Steps whose engine function takes the spec's fields by name (`run_step`): the workflow's script calls the
# function with them, the command line parses them into the spec.
@dataclass
class StatsSpec:
    """evaluation JSONs -> stats.json (per-arm mean ± std, paired gains, best setting)"""

    engine: ClassVar[str] = "segdistill.report.stats:write_stats"
    eval_paths: list[str] = opt(nargs="+", positional=True, help="evaluation records (results/eval/**/*.json)")
    out_json: str = opt(help="stats.json to write")
    split: str = opt(HEADLINE_SPLIT, help="headline split (val chose the checkpoints: biased)")
    min_effect: float | None = opt(
        None, help="gain in mIoU points the power line plans seeds for (default: each arm's observed mean)"
    )


@dataclass
class PatchTeacherSpec:
    """a copy of a teacher YAML whose model.pretrained is its trained weights (the tutorial's step 2.5)"""

    engine: ClassVar[str] = "segdistill.paddleseg_yaml:patch_teacher"
    config_path: str = opt(help="the teacher's PaddleSeg YAML")
    weights: str = opt(help="its trained weights (model.pdparams)")
    out: str = opt(help="the patched YAML to write")


@dataclass
class FetchBackboneSpec:
    """download and cache a `pretrained:` backbone URL"""

    engine: ClassVar[str] = "segdistill.pretrained:fetch_backbone"
    url: str = opt(positional=True, help="the backbone's URL (a .pdparams, or a .tar.gz holding one)")
    cache_dir: str = opt("resources/pretrained", help="the cache folder")
    sha256: str | None = opt(None, help="the file's published SHA-256: a download that differs is refused")


@dataclass
class CostSpec:
    """params, FLOPs and latency of teacher and student -> cost.csv"""

    engine: ClassVar[str] = "segdistill.cost:cost_job"  # takes the spec (a job on leased devices)
    teacher_config: str = opt(help="the teacher's PaddleSeg YAML")
    student_config: str = opt(help="the student's PaddleSeg YAML")
    out: str = opt(help="cost.csv to write")
    teacher_model: str | None = opt(None, help="the teacher's weights (default: the untrained model)")
    student_model: str | None = opt(None, help="the student's weights (default: the untrained model)")
    runs: int = opt(20, help="timed forward passes per model")
    warmup: int = opt(3, help="untimed forward passes first")
    test_config: dict | None = opt(
        None,
        type=test_config_arg,
        help="PaddleSeg test_config timed for both models, a YAML mapping (default: each YAML's own)",
    )


@dataclass
class PredictSpec:
    """class ids of an exported model folder, or of a YAML with weights, over images -> PaddleSeg's pseudo-colour
    PNGs and overlays"""

    engine: ClassVar[str] = "segdistill.predict:predict"
    model: str = opt(help="an exported model folder (deploy.yaml), or .pdparams weights with --config")
    images: str = opt(help="an image, a folder of images (searched recursively), or a list file (first column)")
    out: str = opt(help="folder to write pseudo_color_prediction/ and added_prediction/ into")
    config: str | None = opt(None, help="PaddleSeg experiment YAML of the --model weights")
    batch_size: int = opt(1, help="images (or windows, views) per forward, as evaluation batches them")
    device: str = opt("auto", choices=["auto", "cpu", "gpu"], help="auto: the GPU when Paddle has one")
    test_config: dict | str = opt(
        "yaml",
        type=test_config_arg,
        help="PaddleSeg test_config, a YAML mapping (e.g. '{aug_eval: true, scales: 0.5}'), or yaml: the YAML's "
        "own for weights, the one the exported run was evaluated under for an exported folder",
    )


STEPS = {
    "stats": StatsSpec,
    "patch-teacher": PatchTeacherSpec,
    "fetch-backbone": FetchBackboneSpec,
    "predict": PredictSpec,
}


def run_step(spec):
    """The step's engine function called with the spec's fields by name (`StatsSpec`, ...), or with the spec."""
    import importlib

    module, name = spec.engine.split(":")
    function = getattr(importlib.import_module(module), name)
    return function(**dataclasses.asdict(spec)) if type(spec) in STEPS.values() else function(spec)


# A job's kind is the command-line subcommand that runs it (`segdistill <kind>`; a job on leased devices reads
# its spec from a file: `--spec FILE`).
KINDS = {
    "train": TrainSpec,
    "teacher-outputs": TeacherOutputsSpec,
    "evaluate": EvaluateSpec,
    "cost": CostSpec,
}
_KIND_OF = {cls: kind for kind, cls in KINDS.items()}


def kind_of(spec) -> str:
    return _KIND_OF[type(spec)]


def write_spec(spec, path) -> Path:
    """The spec as JSON (`{"kind": ..., "spec": {field: value}}`), written whole or not at all.

    `spec` may be a list of specs of one kind: one job that runs them one after another in one process, so that
    it starts the interpreter and imports paddle once (the workflow's teacher outputs of the seeds sharing a
    teacher). The file's `spec` is then the list."""
    from segdistill.atomic import write_json

    many = isinstance(spec, (list, tuple))
    kinds = {kind_of(s) for s in spec} if many else {kind_of(spec)}
    if len(kinds) != 1:
        raise SegDistillError(f"one job runs specs of one kind, got {', '.join(sorted(kinds)) or 'none'}")
    body = [dataclasses.asdict(s) for s in spec] if many else dataclasses.asdict(spec)
    write_json(path, {"kind": kinds.pop(), "spec": body})
    return Path(path)


def from_mapping(cls, values: dict, source: str):
    """`cls(**values)`, but an unknown or missing key is named with `source` and the closest field names."""
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
            raise SegDistillError(
                f"{source}: '{key}' is not a field of the {_KIND_OF.get(cls, 'evaluate options')} spec"
                + (f" (closest: {', '.join(close)})" if close else "")
            )
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise SegDistillError(f"{source}: missing {', '.join(missing)}")
    return cls(**values)


def read_spec(path):
    """The spec `write_spec` wrote to `path` (a list of specs when a list was written)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SegDistillError(f"{path}: not a job spec: {exc}") from None
    body = record.get("spec") if isinstance(record, dict) else None
    many = isinstance(body, list) and body and all(isinstance(b, dict) for b in body)
    if not isinstance(record, dict) or record.get("kind") not in KINDS or not (isinstance(body, dict) or many):
        raise SegDistillError(f"{path}: not a job spec (expected kind: one of {', '.join(KINDS)}, and spec)")
    cls = KINDS[record["kind"]]
    if many:
        return [from_mapping(cls, b, f"{path} (spec {i + 1})") for i, b in enumerate(body)]
    return from_mapping(cls, body, str(path))
