"""The study: which runs a config asks for, where its data lives, and the checks that must pass first.

The workflow's `common.smk` calls these, so the Snakefile stays declarative and the logic is tested here.
Run ids are paths: `teacher/seed0`, `student/seed0`, `distilled/<method>/seed0`.

This module is imported while Snakemake parses the workflow, so it must not import paddle (a plain Snakemake
environment has none, and a dry run should not pay for it): `preflight` checks what plain YAML reading can tell;
what needs PaddleSeg's registry and the loss registry runs in jobs that every training job waits for
(`study_configs`, `distill_terms`; see `check`).
"""

from __future__ import annotations

import hashlib
import itertools
import re
import tempfile
from pathlib import Path

from segdistill.errors import SegDistillError
from segdistill.precision import refused

DATA_ROOTS = {"synthetic": "resources/data/synthetic", "optic_disc": "resources/data/optic_disc_seg"}
# Sources in PaddleSeg's generic layout (`type: Dataset`, list files, any number of classes).
GENERIC_SOURCES = ("folder", "url")
# Data sets PaddleSeg names by type in the student YAML (Cityscapes, ADE20K, ...), split by the study.
PADDLESEG = "paddleseg"
SPLITS = ("train", "val", "test")
# The run-id grammar, written once (common.smk's wildcard constraints are these patterns). A method is a `distill`
# key or a sweep point `<method>~<key>=<value>~...` (`method_name`, `parse_method`).
METHOD_PATTERN = r"[A-Za-z0-9_.=~-]+"
RUN_PATTERN = rf"(teacher|student)/seed(\d+)|distilled/({METHOD_PATTERN})/seed(\d+)"
RUN_RE = re.compile(rf"^(?:{RUN_PATTERN})$")
# Keys of PaddleSeg's generic `Dataset` that a user's dataset section may carry over into the study's copy.
_DATASET_KEEP = ("transforms", "ignore_index", "img_channels", "separator", "edge")
# The study's copies of the user's PaddleSeg YAMLs, with the data set filled in (written by `study_configs`).
STUDY_CONFIGS = {"teacher": "results/configs/study/teacher.yml", "student": "results/configs/study/student.yml"}


def url_key(url: str) -> str:
    # A different URL is a different data set: it gets its own download and folder.
    return hashlib.sha256(url.encode()).hexdigest()[:12]


def data_root(config: dict) -> str:
    """The data set's root folder, relative to the working directory (or as the user gave it)."""
    data = config["data"]
    source = data["source"]
    if source == "folder":
        return str(data["folder"]["root"])
    if source == "url":
        return f"resources/data/url-{url_key(data['url']['url'])}"
    if source == PADDLESEG:
        return _paddleseg_identity(config, "student")[1]
    return DATA_ROOTS[source]


def _paddleseg_identity(config: dict, role: str) -> tuple[str, str]:
    """(type, dataset_root) of the role's YAML data set (data.source paddleseg)."""
    from segdistill.paddleseg_sets import identity
    from segdistill.paddleseg_yaml import read_yaml

    path = config[role]["config"]
    if not Path(path).is_file():
        raise SegDistillError(f"{role}.config: file not found: {path} (paths are relative to the working directory)")
    return identity(read_yaml(path), f"{role}.config {path}")


def selection_images(config: dict) -> int | None:
    """How many training images the paddleseg source holds out to choose checkpoints (None: another source)."""
    if config["data"]["source"] != PADDLESEG:
        return None
    return int(config["data"]["paddleseg"]["selection_images"])


def has_selection(config: dict) -> bool:
    """Whether runs choose checkpoints on a val split (every source but a paddleseg one without selection)."""
    return selection_images(config) != 0


def default_class_names(config: dict) -> list[str]:
    """`data.class_names` when the study does not name them: the paddleseg source's type's own names (class_<i>
    for the generic Dataset), else the optic disc set's two."""
    if config["data"]["source"] != PADDLESEG:
        return ["background", "optic_disc"]
    from segdistill.paddleseg_sets import section_classes
    from segdistill.paddleseg_yaml import read_yaml

    path = config["student"]["config"]
    return section_classes(read_yaml(path)["train_dataset"], f"student.config {path}: train_dataset")


def fill_class_names(config: dict) -> None:
    """Set `data.class_names` to its default when the study leaves it out (the workflow calls this once)."""
    if not config["data"].get("class_names"):
        config["data"]["class_names"] = default_class_names(config)


def data_archive(config: dict) -> str | None:
    """Where a downloaded data set's archive is kept (None for a folder or the generated set)."""
    data = config["data"]
    if data["source"] == "optic_disc":
        return "resources/downloads/optic_disc_seg.zip"
    if data["source"] == "url":
        name = data["url"]["url"].split("?")[0].rstrip("/").rsplit("/", 1)[-1] or "dataset"
        return f"resources/downloads/url-{url_key(data['url']['url'])}/{name}"
    return None


def list_files(config: dict) -> dict[str, str]:
    """split -> list file name relative to the data root (`<split>_list.txt` unless the study names another)."""
    data = config["data"]
    spec = (data.get(data["source"]) or {}) if data["source"] in GENERIC_SOURCES else {}
    return {s: str(spec.get(f"{s}_list") or f"{s}_list.txt") for s in SPLITS}


def allow_outside_paths(config: dict) -> bool:
    """Whether list files may name files outside the data set's root: never for a downloaded data set (its
    archive must not make training read other files), for a folder only with data.folder.allow_outside_paths."""
    data = config["data"]
    return data["source"] == "folder" and bool(data["folder"].get("allow_outside_paths", False))


def required_splits(config: dict) -> list[str]:
    """Splits that must exist and be non-empty: train, val and every evaluated split."""
    return list(dict.fromkeys(["train", "val", *config["evaluate"]["splits"]]))


def methods(config: dict) -> dict[str, dict]:
    """Distillation methods by name: {'terms': list | None, 'params': {...}} incl. sweep points.

    A sweep point is named `<method>~<key>=<value>~...` and overrides weight/temperature of the base terms.
    """
    out = {name: {"terms": spec.get("terms"), "params": {}} for name, spec in config["distill"].items()}
    sweep = config.get("sweep")
    if sweep:
        base = sweep["method"]
        if base not in out:
            raise SegDistillError(f"sweep.method: '{base}' is not a key of `distill` ({', '.join(out)})")
        if out[base]["terms"] is None:
            raise SegDistillError(
                f"sweep.method: '{base}' takes its terms from the student YAML; write them out under "
                f"distill.{base}.terms to sweep them"
            )
        keys = list(sweep["grid"])
        for values in itertools.product(*(sweep["grid"][k] for k in keys)):
            params = dict(zip(keys, values))
            terms = apply_params(out[base]["terms"], params, "sweep.grid")
            out[method_name(base, params)] = {"terms": terms, "params": params, "base": base}
    return out


def teacher_terms(config: dict) -> list:
    """What the teacher outputs must hold, as term lists reduced to their `teacher:` names, in the order the
    methods first name them (`{}` for a term naming none: the default; None where a method first takes the student
    YAML's `distill_loss`, whose YAML is an input of the job). The cache stores its tensors in first-seen order, so
    this order is the one the methods' own term lists give, and caches keep their manifests (and the distilled
    runs their keys). The teacher_outputs jobs take this, not the methods' terms: a changed weight or
    temperature, or a method storing nothing new, does not recompute them."""
    seen, out = set(), []  # names already listed; out: lists of new names, None at the first YAML method
    for spec in methods(config).values():
        if spec["terms"] is None:
            if None not in out:
                out.append(None)
            continue
        for t in spec["terms"]:
            name = t.get("teacher") if isinstance(t, dict) else None
            if name in seen:
                continue
            seen.add(name)
            if not out or out[-1] is None:
                out.append([])
            out[-1].append({"teacher": name} if name is not None else {})
    return out


def write_teacher_terms(terms: list, out) -> None:
    """The `teacher_terms` job's file: `teacher_terms(config)` as JSON (the teacher_outputs jobs read it)."""
    from segdistill.atomic import write_json

    write_json(out, {"terms": terms})


def read_teacher_terms(path) -> list:
    import json

    return json.loads(Path(path).read_text())["terms"]


def method_name(base: str, params: dict) -> str:
    """A sweep point's name: ("kl", {"weight": 2.0}) -> `kl~weight=2`."""
    return base + "".join(f"~{k}={v:g}" if isinstance(v, float) else f"~{k}={v}" for k, v in params.items())


def parse_method(name: str) -> tuple[str, dict]:
    """`kl_cwd~weight=2~cwd.temperature=4` -> ("kl_cwd", {"weight": 2.0, "cwd.temperature": 4.0})."""
    base, *points = name.split("~")
    params = {}
    for p in points:
        key, sep, value = p.partition("=")
        if not sep:
            raise SegDistillError(f"sweep arm name '{name}': '{p}' is not key=value")
        try:
            params[key] = float(value)
        except ValueError:
            params[key] = value
    return base, params


def apply_params(terms: list[dict], params: dict, source: str) -> list[dict]:
    """Copy of `terms` with `weight`/`temperature` overridden (all terms, or `<term name>.<field>`)."""
    terms = [dict(t) for t in terms]
    names = [t.get("name") for t in terms]
    for key, value in params.items():
        term_name, _, field = key.rpartition(".")
        if field not in ("weight", "temperature"):
            raise SegDistillError(f"{source}: '{key}' must end in weight or temperature")
        if term_name and term_name not in names:
            raise SegDistillError(f"{source}: '{key}' names no term (terms: {', '.join(map(str, names))})")
        for t in terms:
            if not term_name or t.get("name") == term_name:
                if "temperature" in (t.get("options") or {}) and field == "temperature":  # where the term keeps it
                    t["options"] = {**t["options"], "temperature": value}
                else:
                    t[field] = value
    return terms


def train_flags(config: dict, arm: str) -> dict:
    """The `train` section one arm trains with: the teacher evaluates on `teacher.save_interval` when it is set
    (a 300-iteration teacher needs far fewer val evaluations than an 80-iteration student)."""
    flags = dict(config["train"])
    if arm == "teacher" and config["teacher"].get("save_interval") is not None:
        flags["save_interval"] = int(config["teacher"]["save_interval"])
    return flags


def teacher_per_seed(config: dict) -> bool:
    """Whether each seed trains its own teacher (a given teacher is one run, under the first seed)."""
    return bool(config["teacher"]["per_seed"]) and not teacher_weights(config)


def teacher_seed(config: dict, seed: int) -> int:
    """The seed of the teacher run a seed distils from."""
    return int(seed) if teacher_per_seed(config) else int(config["seeds"][0])


def distinct_teacher_outputs(config: dict) -> bool:
    """Whether the seeds' teacher-output caches gather from one table of the teacher on every distinct training
    input (segdistill.distill.distinct_inputs): cached outputs and one teacher for all seeds. Decided by the study,
    not by how many seeds it has, so a seed added later changes nothing for the others."""
    return config["teacher"]["outputs"] == "cached" and not teacher_per_seed(config)


def runs(config: dict) -> list[str]:
    seeds = config["seeds"]
    teacher_seeds = sorted({teacher_seed(config, s) for s in seeds})
    out = [f"teacher/seed{s}" for s in teacher_seeds]
    out += [f"student/seed{s}" for s in seeds]
    out += [f"distilled/{m}/seed{s}" for m in methods(config) for s in seeds]
    return out


def parse_run(run: str) -> dict:
    m = RUN_RE.match(run)
    if not m:
        raise SegDistillError(f"not a run id: {run}")
    if m.group(1):
        return {"arm": m.group(1), "method": "none", "seed": int(m.group(2))}
    return {"arm": "distilled", "method": m.group(3), "seed": int(m.group(4))}


def ignore_index(config: dict) -> int:
    """The label value that marks unlabelled pixels: the student YAML's `train_dataset.ignore_index`, else 255."""
    from segdistill.paddleseg_yaml import read_yaml

    ds = read_yaml(config["student"]["config"]).get("train_dataset") or {}
    return int(ds.get("ignore_index", 255))


def teacher_weights(config: dict) -> str | None:
    """The user's trained teacher (a path or URL), or None when the study trains its own."""
    return config["teacher"].get("weights") or None


def trained_arms(config: dict) -> list[str]:
    """Arms the `train` rule trains: the teacher only when the study has no trained one given."""
    return ["student"] if teacher_weights(config) else ["teacher", "student"]


def check_teacher_weights(weights: str | None, sha256: str | None) -> None:
    """A URL must come with a pinned SHA-256; a local file must exist. Both checked before any job."""
    if not weights:
        return
    if sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", str(sha256)):
        raise SegDistillError(f"teacher.sha256 must be 64 lowercase hex digits, got {sha256!r}")
    from segdistill.paddleseg_yaml import is_url

    if is_url(weights):
        if not sha256:
            raise SegDistillError(
                f"teacher.weights is a URL ({weights}) but teacher.sha256 is not set. A .pdparams file is a Python "
                f"pickle: loading one runs whatever code it carries, so segdistill loads a downloaded teacher only "
                f"when its SHA-256 is pinned. Set teacher.sha256 to the digest published with the weights (or "
                f"`sha256sum` of a copy you trust), or download the file yourself and give its local path."
            )
    elif not Path(weights).is_file():
        raise SegDistillError(
            f"teacher.weights: file not found: {weights} (paths are relative to the working directory)"
        )


def _declared_classes(dic: dict) -> dict[str, int]:
    """Where a PaddleSeg YAML states its class count: model and data set sections."""
    out = {}
    if isinstance(dic.get("model"), dict) and dic["model"].get("num_classes") is not None:
        out["model.num_classes"] = dic["model"]["num_classes"]
    for key in ("train_dataset", "val_dataset"):
        if isinstance(dic.get(key), dict) and dic[key].get("num_classes") is not None:
            out[f"{key}.num_classes"] = dic[key]["num_classes"]
    return out


def experiment(config: dict, role: str) -> dict:
    """The role's PaddleSeg YAML as the study uses it: the user's file with the study's data set filled in.

    Generic sources (folder, url) and the generated set with the cup replace the data set sections by PaddleSeg's
    `type: Dataset` with the root, the three list files and the class count, keeping the user's transforms; the
    generated disc-only and optic disc sets keep the YAML's type and get the root. A class count the YAML states
    must equal `data.class_names`.
    """
    from segdistill.paddleseg_yaml import read_yaml

    path = config[role]["config"]
    if not Path(path).is_file():
        raise SegDistillError(f"{role}.config: file not found: {path} (paths are relative to the working directory)")
    dic = read_yaml(path)
    for key in ("model", "train_dataset", "val_dataset"):
        if not isinstance(dic.get(key), dict):
            raise SegDistillError(f"{path}: missing required key '{key}' (a mapping)")
    names = config["data"]["class_names"]
    for key, n in _declared_classes(dic).items():
        if n != len(names):
            raise SegDistillError(
                f"{role}.config {path}: {key} is {n} but data.class_names names {len(names)} classes "
                f"({', '.join(names)}); make them agree (or drop num_classes from the YAML: the study fills it in)"
            )
    source = config["data"]["source"]
    root = data_root(config)
    # The generated set with the cup has three classes: OpticDiscSeg's two do not fit, the generic Dataset does.
    if source in GENERIC_SOURCES or (source == "synthetic" and len(names) > 2):
        lists = {f"{s}_path": str(Path(root) / name) for s, name in list_files(config).items()}
        for key, mode in (("train_dataset", "train"), ("val_dataset", "val")):
            user = dic[key]
            dic[key] = {
                "type": "Dataset",
                "dataset_root": root,
                "num_classes": len(names),
                "mode": user.get("mode", mode),
                **lists,
                **{k: user[k] for k in _DATASET_KEEP if k in user},
            }
        dic["model"].setdefault("num_classes", len(names))
    elif source == PADDLESEG:
        _paddleseg_sections(dic, root, len(names))
    else:
        for key in ("train_dataset", "val_dataset"):
            dic[key]["dataset_root"] = root
    return dic


def _paddleseg_sections(dic: dict, root: str, num_classes: int) -> None:
    """Replace the data set sections by PaddleSeg's generic Dataset over the study's split lists, keeping the
    user's transforms after the type's label mapping (ADE20K's shift), so every job reads the split lists."""
    from segdistill.paddleseg_sets import SPLIT_FILES, label_shift_transform, set_type

    kind = set_type(dic["train_dataset"], "train_dataset")
    for key, mode in (("train_dataset", "train"), ("val_dataset", "val")):
        user = dic[key]
        dic[key] = {
            "type": "Dataset",
            "dataset_root": root,
            "num_classes": num_classes,
            "mode": mode,
            **{f"{s}_path": path for s, path in SPLIT_FILES.items()},
            "ignore_index": kind.ignore_index,
            "transforms": label_shift_transform(kind) + list(user.get("transforms") or []),
            **{k: user[k] for k in ("img_channels", "edge") if k in user},
        }
    dic["model"].setdefault("num_classes", num_classes)


def _preflight_paddleseg(config: dict) -> None:
    """Before any job: the student's data set is one known type with an existing root (named when missing), the
    teacher's YAML names the same data set, and without a selection split nothing asks for val."""
    from segdistill.paddleseg_sets import dataset_root, section_classes, sections
    from segdistill.paddleseg_yaml import read_yaml

    if not isinstance(config["data"].get(PADDLESEG), dict):
        raise SegDistillError("data.source is paddleseg but data.paddleseg (selection_images) is not given")
    path = config["student"]["config"]
    student = _paddleseg_identity(config, "student")
    teacher = _paddleseg_identity(config, "teacher")
    if student != teacher:
        raise SegDistillError(
            f"teacher.config {config['teacher']['config']} names the data set {teacher[0]} at {teacher[1]} but "
            f"student.config {path} names {student[0]} at {student[1]}; a study distils on one data set"
        )
    train = sections(read_yaml(path), f"student.config {path}")["train_dataset"]
    dataset_root(train, f"student.config {path}: train_dataset")
    own = section_classes(train, f"student.config {path}: train_dataset")
    names = config["data"].get("class_names") or own
    if len(names) != len(own):
        raise SegDistillError(
            f"data.class_names names {len(names)} classes but student.config {path} reads {train['type']}, which "
            f"has {len(own)}; leave data.class_names out to use the type's own names"
        )
    if not has_selection(config) and "val" in [*config["evaluate"]["splits"], config.get("report", {}).get("split")]:
        raise SegDistillError(
            "data.paddleseg.selection_images is 0: there is no val split (every run keeps its final weights); "
            "set evaluate.splits: [test] and report.split: test"
        )


def test_config_override(evaluate: dict) -> dict | None:
    """The study's `evaluate.test_config` (from its `evaluate` section) for every model, or None: each model
    under its own YAML's."""
    value = evaluate.get("test_config", "yaml")
    return None if value == "yaml" else value


def preflight(config: dict) -> None:
    """What can be known wrong before any job, without paddle: files, class counts, sweep, teacher weights."""
    data = config["data"]
    if data["source"] in GENERIC_SOURCES and not isinstance(data.get(data["source"]), dict):
        raise SegDistillError(f"data.source is {data['source']} but data.{data['source']} is not given")
    if data["source"] == PADDLESEG:
        _preflight_paddleseg(config)
    if data["source"] == "synthetic":
        from segdistill.data.synthetic import checked_classes

        checked_classes(data["class_names"])
    if data["source"] == "folder" and not Path(data["folder"]["root"]).is_dir():
        raise SegDistillError(
            f"data.folder.root: folder not found: {data['folder']['root']} (paths are relative "
            f"to the working directory)"
        )
    dicts = {role: experiment(config, role) for role in ("teacher", "student")}
    from segdistill.protocol import of_experiment

    for role, dic in dicts.items():  # a test_config PaddleSeg would not run is refused before any job
        of_experiment(dic, f"{role}.config {config[role]['config']}", test_config_override(config["evaluate"]))
    for name, spec in methods(config).items():
        if spec["terms"] is None and not dicts["student"].get("distill_loss"):
            raise SegDistillError(
                f"distill.{name}.terms is null but {config['student']['config']} has no `distill_loss`"
            )
    check_teacher_weights(teacher_weights(config), config["teacher"].get("sha256"))
    precision, level = config.get("train", {}).get("precision", "fp32"), config.get("train", {}).get("amp_level", "O1")
    why = refused(precision, level, config.get("gpus_per_job", 1))
    if why:
        raise SegDistillError(
            f"train.precision {precision} with train.amp_level {level} and gpus_per_job {config['gpus_per_job']} {why}"
        )
    split = config.get("report", {}).get("split", "test")
    if split not in config["evaluate"]["splits"]:
        raise SegDistillError(
            f"report.split is '{split}' but evaluate.splits ({', '.join(config['evaluate']['splits'])}) does not "
            f"evaluate it; add it there"
        )


def check(config: dict) -> dict[str, dict]:
    """Everything the workflow checks before training, in one call (tests, and the command line's view).

    The workflow splits it: `preflight` at parse time, `checked_experiments` in the `study_configs` job, and
    every method's terms in its `distill_terms` job, which training waits for.
    """
    from segdistill.distill.terms import resolve_terms

    preflight(config)
    dicts = checked_experiments(config)
    for name, spec in methods(config).items():
        resolve_terms(spec["terms"], config["student"]["config"], dicts["student"], f"distill.{name}.terms")
    return dicts


def checked_experiments(config: dict) -> dict[str, dict]:
    """The study's teacher and student YAMLs (`experiment`), read through PaddleSeg's registry: the class count
    their data set type implies must equal `data.class_names`, and each data set section may hold only arguments
    of its type (`config.check_dataset_keys`). Needs paddle; reads only `data` and the paths."""
    from segdistill.paddleseg_yaml import check_dataset_keys, experiment_dict, num_classes, write_yaml

    names = config["data"]["class_names"]
    dicts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for role in ("teacher", "student"):
            dic = experiment(config, role)
            path = Path(tmp) / f"{role}.yml"
            write_yaml(dic, path)
            # Backbone URLs are resolved by the fetch rule later; only the structure is checked here.
            checked = experiment_dict(path, pretrained_cache=None, resolve_backbone=False)
            check_dataset_keys(checked, f"{role}.config {config[role]['config']}")
            n = num_classes(checked)
            if n != len(names):
                raise SegDistillError(
                    f"{role}.config {config[role]['config']}: its data set type "
                    f"{checked['train_dataset'].get('type')} has {n} classes but data.class_names names "
                    f"{len(names)} ({', '.join(names)})"
                )
            dicts[role] = dic
    return dicts


def write_configs(data: dict, teacher_config: str, student_config: str, outputs: dict[str, str]) -> None:
    """Write the study's PaddleSeg YAMLs (role -> path) for the `data` section; the user's files stay as they are.

    Only what shapes the copies goes in, so that adding a seed or a method does not rewrite them (and retrain).
    """
    from segdistill.paddleseg_yaml import write_yaml

    config = {"data": data, "teacher": {"config": teacher_config}, "student": {"config": student_config}}
    for role, dic in checked_experiments(config).items():
        write_yaml(dic, outputs[role])
        print(f"wrote {outputs[role]} from {config[role]['config']}")


def backbone_urls(config: dict) -> list[str]:
    """`pretrained:` URLs of the teacher/student backbones that the fetch rule must provide."""
    from segdistill.paddleseg_yaml import read_yaml

    if not config.get("pretrained_backbones", True):
        return []
    urls = []
    # A provided teacher's file holds its whole model, backbone included.
    roles = ("student",) if teacher_weights(config) else ("teacher", "student")
    for role in roles:
        bb = (read_yaml(config[role]["config"]).get("model") or {}).get("backbone") or {}
        url = bb.get("pretrained")
        if isinstance(url, str) and url.startswith(("http://", "https://")) and url not in urls:
            urls.append(url)
    return urls


def pretrained_path(url: str) -> Path:
    """Where the workflow caches the backbone behind `url`."""
    from segdistill.paddleseg_yaml import pretrained_cache_path

    return pretrained_cache_path(url, "resources/pretrained")
