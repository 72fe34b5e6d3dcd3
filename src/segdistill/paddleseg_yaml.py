"""PaddleSeg experiment configs: load with overrides, build components, patch and load teachers strictly.

One YAML per experiment, as in PaddleSeg. We use PaddleSeg's own `Config`/`SegBuilder` for everything they do
correctly on current Paddle (models, datasets, transforms, optimizer, lr scheduler) and keep the parts that do
not (training loop, metrics, cross-entropy) in this package.

Reading and writing YAML needs no paddle: the workflow imports this module while it parses (a plain Snakemake
environment has no paddle), so paddle and paddleseg are imported inside the functions that build or load models.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from segdistill.errors import SegDistillError

DATASET_KEYS = ("train_dataset", "val_dataset")
# Where a data set section says its files lie: not part of what the data is (see data.digest.data_digest).
DATA_PATH_KEYS = ("dataset_root", "train_path", "val_path", "test_path")


def _read_one(path: Path) -> dict:
    """One YAML file as a mapping (its `_base_` key untouched); errors name the file."""
    if not path.is_file():
        raise SegDistillError(f"config file not found: {path}")
    try:
        with open(path) as fh:
            dic = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        raise SegDistillError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(dic, dict):
        raise SegDistillError(f"{path}: expected a mapping at the top level, got {type(dic).__name__}")
    return dic


def read_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping, resolving PaddleSeg's `_base_` inheritance; errors name the file."""
    path = Path(path)
    dic = _read_one(path)
    base = dic.pop("_base_", None)
    if base:
        merged = read_yaml(path.parent / base)
        _deep_update(merged, dic)
        dic = merged
    return dic


def base_files(path: str | os.PathLike) -> list[Path]:
    """The `_base_` files a YAML inherits from, nearest first (the workflow lists them as inputs, so that editing
    only a base file reruns what reads the YAML)."""
    out, path = [], Path(path)
    while base := _read_one(path).get("_base_"):
        path = path.parent / base
        if path in out:
            raise SegDistillError(f"{path}: `_base_` inheritance loops back to this file")
        out.append(path)
    return out


def _deep_update(base: dict, new: dict) -> None:
    # PaddleSeg semantics: nested mappings merge unless the child says `_inherited_: False`.
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and value.pop("_inherited_", True):
            _deep_update(base[key], value)
        else:
            base[key] = value


def write_yaml(dic: dict, path: str | os.PathLike) -> None:
    """Write atomically: a half-written config must never look complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(dic, fh, sort_keys=False)
    os.replace(tmp, path)


def experiment_dict(
    path: str | os.PathLike,
    *,
    data_root: str | None = None,
    iters: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    grad_clip_norm: float | None = None,
    pretrained_cache: str | None = None,
    resolve_backbone: bool = True,
    pretrained_backbone: bool = True,
) -> dict:
    """The experiment as a plain dict, with command-line overrides applied and required keys checked.

    `pretrained_backbone=False` drops a backbone's `pretrained:` (train from scratch, the opt-out for offline
    machines); `resolve_backbone=False` leaves a URL as it is (structure checks only).
    """
    dic = read_yaml(path)
    for key in ("model", "train_dataset", "val_dataset", "optimizer", "lr_scheduler", "loss"):
        if key not in dic:
            raise SegDistillError(f"{path}: missing required key '{key}'")
    if data_root is not None:
        for key in DATASET_KEYS:
            dic[key]["dataset_root"] = str(data_root)
    if iters is not None:
        dic["iters"] = int(iters)
    if batch_size is not None:
        dic["batch_size"] = int(batch_size)
    if learning_rate is not None:
        dic["lr_scheduler"]["learning_rate"] = float(learning_rate)
    if grad_clip_norm is not None:
        dic["optimizer"]["grad_clip_cfg"] = {"name": "ClipGradByGlobalNorm", "clip_norm": float(grad_clip_norm)}
    for key in ("iters", "batch_size"):
        if not isinstance(dic.get(key), int) or dic[key] < 1:
            raise SegDistillError(f"{path}: '{key}' must be a positive integer, got {dic.get(key)!r}")
    if not isinstance(dic["model"], dict):
        raise SegDistillError(f"{path}: 'model' must be a mapping")
    backbone = dic["model"].get("backbone") or {}
    if not pretrained_backbone and backbone.get("pretrained"):
        backbone["pretrained"] = None
    if resolve_backbone and is_url(backbone.get("pretrained")):
        backbone["pretrained"] = resolve_pretrained(backbone["pretrained"], pretrained_cache, path)
    return dic


def is_url(value: Any) -> bool:
    """Whether a `pretrained:` or `teacher.weights` value is a URL to download (http or https)."""
    return isinstance(value, str) and value.split("://")[0] in ("http", "https")


def pretrained_cache_path(url: str, cache_dir: str | os.PathLike) -> Path:
    """Where a backbone downloaded from `url` is cached: `<cache>/<archive stem>/model.pdparams`."""
    stem = url.rstrip("/").rsplit("/", 1)[-1]
    for ext in (".tar.gz", ".tgz", ".zip", ".pdparams"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    return Path(cache_dir) / stem / "model.pdparams"


def resolve_pretrained(url: str, cache_dir: str | None, cfg_path: Any) -> str:
    """Map a `pretrained:` URL to its cached local file; never download during training.

    Downloads belong to the workflow's `fetch_backbone` rule (or `segdistill fetch-backbone`), so a training job
    that would hang on an unreachable host stops before it starts, with the fix in the message.
    """
    if cache_dir is None:
        cache_dir = os.environ.get("SEGDISTILL_PRETRAINED_DIR", "resources/pretrained")
    local = pretrained_cache_path(url, cache_dir)
    if local.is_file():
        return str(local)
    raise SegDistillError(
        f"{cfg_path}: model.backbone.pretrained is a URL ({url}) and no cached copy exists at {local}. "
        f"Run `segdistill fetch-backbone {url} --cache_dir {cache_dir}` where the URL is reachable, or put the "
        f"extracted model.pdparams at {local} by hand, or set `model.backbone.pretrained: null` "
        f"(workflow: `pretrained_backbones: false`) to train the backbone from scratch."
    )


def check_dataset_keys(dic: dict, source: Any = "<config>") -> None:
    """Every key of a data set section must be an argument of its type's constructor. PaddleSeg says so only when
    it builds the data set, without naming the file or section. The usual cause is a key inherited through
    `_base_`: a base's generic `Dataset` with `train_path` and `num_classes` under an override to `OpticDiscSeg`."""
    import inspect

    from segdistill.paddle_env import paddle  # noqa: F401

    from paddleseg.cvlibs import manager

    for key in DATASET_KEYS:
        section = dic.get(key)
        if not isinstance(section, dict) or section.get("type") not in manager.DATASETS.components_dict:
            continue  # an unknown type is PaddleSeg's error, with its list of types
        params = inspect.signature(manager.DATASETS[section["type"]].__init__).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            continue
        taken = [name for name in params if name != "self"]
        extra = sorted(set(section) - {"type", *taken})
        if extra:
            raise SegDistillError(
                f"{source}: {key}: {section['type']} takes no {', '.join(map(repr, extra))} (it takes "
                f"{', '.join(taken)}); a key inherited through `_base_` is dropped by writing `_inherited_: false` "
                f"in the section, which then replaces the base's instead of merging with it"
            )


def build(dic: dict, source: Any = "<config>"):
    """A PaddleSeg `SegBuilder` for the experiment dict. `model.pretrained` is NOT loaded here (see load_weights)."""
    from segdistill.paddle_env import paddle  # noqa: F401  (imports paddle safely before paddleseg)

    from paddleseg.cvlibs import Config, SegBuilder

    from segdistill.paddleseg_sets import register_transforms

    register_transforms()  # the label mapping a study's copy of an ADE20K YAML names (data.source paddleseg)
    check_dataset_keys(dic, source)
    dic = copy.deepcopy(dic)
    dic["model"]["pretrained"] = None
    # PaddleSeg's Config only reads files, so hand it a temporary one.
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp) / "experiment.yml"
        write_yaml(dic, tmp_path)
        try:
            cfg = Config(str(tmp_path))
        except (AssertionError, ValueError, KeyError) as exc:
            raise SegDistillError(f"{source}: PaddleSeg rejected the config: {exc}") from None
    return SegBuilder(cfg)


def open_dataset(builder, source: Any, name: str = "train_dataset"):
    """The builder's data set `name` (train_dataset, val_dataset); one that cannot be opened is named with `source`."""
    try:
        return getattr(builder, name)
    except (AssertionError, FileNotFoundError, OSError) as exc:
        raise SegDistillError(f"{source}: cannot open the data set: {exc}") from None


def build_model(dic: dict, source: Any = "<config>"):
    """The model, with `model.pretrained` (if any) loaded strictly."""
    builder = build(dic, source)
    try:
        model = builder.model
    except (AssertionError, ValueError, KeyError, TypeError) as exc:
        raise SegDistillError(f"{source}: cannot build the model: {exc}") from None
    weights = dic["model"].get("pretrained")
    if weights:
        load_weights(model, weights, source=f"{source}: model.pretrained")
    return model


def num_classes(dic: dict) -> int:
    n = dic["model"].get("num_classes")
    if n is None:
        from segdistill.paddle_env import paddle  # noqa: F401

        from paddleseg.cvlibs import manager

        n = getattr(manager.DATASETS[dic["train_dataset"]["type"]], "NUM_CLASSES", None)
    if n is None:
        raise SegDistillError("model.num_classes is not set and the dataset type does not define it")
    return int(n)


def ignore_index(dic: dict) -> int:
    from segdistill.paddle_env import paddle  # noqa: F401

    from paddleseg.cvlibs import manager

    ds = dic["train_dataset"]
    if "ignore_index" in ds:
        return int(ds["ignore_index"])
    return int(getattr(manager.DATASETS[ds["type"]], "IGNORE_INDEX", 255))


def load_weights(model, path: str | os.PathLike, source: str = "weights") -> None:
    """Load a state dict strictly: every model parameter must be present with its shape, and nothing else."""
    from segdistill.paddle_env import paddle

    path = Path(path)
    if not path.is_file():
        raise SegDistillError(f"{source}: weights file not found: {path}")
    try:
        state = paddle.load(str(path))
    except Exception as exc:  # paddle raises many types for a corrupt pickle
        raise SegDistillError(f"{source}: cannot read weights {path}: {exc}") from None
    from segdistill.checkpoint import state_differences

    missing, unexpected, mismatched = state_differences(state, model, "file")
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s), e.g. {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), e.g. {', '.join(unexpected[:3])}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es), e.g. {', '.join(mismatched[:3])}")
    if problems:
        raise SegDistillError(
            f"{source}: {path} does not match the model {type(model).__name__}: " + "; ".join(problems)
        )
    model.set_state_dict(state)


def patch_teacher(
    config_path: str | os.PathLike, weights: str | os.PathLike, out: str | os.PathLike, check: bool = True
) -> dict:
    """The tutorial's step 2.5: a copy of the teacher config whose `model.pretrained` is the trained teacher.

    The user's file is never edited. With `check`, the copy is proven to load (every teacher parameter present
    with its shape; errors name the key); a copy that fails is removed, so it never looks complete.
    """
    dic = read_yaml(config_path)
    if "model" not in dic:
        raise SegDistillError(f"{config_path}: missing required key 'model'")
    dic["model"]["pretrained"] = str(weights)
    write_yaml(dic, out)
    if check:
        try:
            build_model(experiment_dict(out, pretrained_backbone=False), out)
        except BaseException:
            Path(out).unlink(missing_ok=True)
            raise
    return dic
