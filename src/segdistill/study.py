"""The study: which runs a config asks for, and the checks that must pass before any job starts.

The workflow's `common.smk` calls these, so the Snakefile stays declarative and the logic is tested here.
Run ids are paths: `teacher/seed0`, `student/seed0`, `distilled/<method>/seed0`.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from segdistill.errors import SegDistillError

DATA_ROOTS = {"synthetic": "resources/data/synthetic", "optic_disc": "resources/data/optic_disc_seg"}
RUN_RE = re.compile(r"^(teacher|student)/seed(\d+)$|^distilled/([A-Za-z0-9_.=~-]+)/seed(\d+)$")


def data_root(config: dict) -> str:
    return DATA_ROOTS[config["data"]["source"]]


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
            name = base + "".join(f"~{k}={_fmt(v)}" for k, v in params.items())
            out[name] = {"terms": apply_params(out[base]["terms"], params, "sweep.grid"), "params": params,
                         "base": base}
    return out


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


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
                t[field] = value
    return terms


def teacher_seed(config: dict, seed: int) -> int:
    return int(seed) if config["teacher"]["per_seed"] else int(config["seeds"][0])


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


def check(config: dict) -> None:
    """Everything that can be known wrong before a job starts, with the key or file named."""
    from segdistill.config import experiment_dict, num_classes
    from segdistill.distill import resolve_terms

    dicts = {}
    for role in ("teacher", "student"):
        path = config[role]["config"]
        if not Path(path).is_file():
            raise SegDistillError(f"{role}.config: file not found: {path}")
        # Backbone URLs are resolved by the fetch rule later; only the structure is checked here.
        dicts[role] = experiment_dict(path, pretrained_cache=None, resolve_backbone=False)
    n_t, n_s = num_classes(dicts["teacher"]), num_classes(dicts["student"])
    if n_t != n_s:
        raise SegDistillError(
            f"teacher {config['teacher']['config']} has num_classes {n_t} but student "
            f"{config['student']['config']} has {n_s}"
        )
    names = config["data"]["class_names"]
    if len(names) != n_s:
        raise SegDistillError(f"data.class_names has {len(names)} names but the models have num_classes {n_s}")
    for name, spec in methods(config).items():
        resolve_terms(spec["terms"], config["student"]["config"], dicts["student"], f"distill.{name}.terms")


def backbone_urls(config: dict) -> list[str]:
    """`pretrained:` URLs of the teacher/student backbones that the fetch rule must provide."""
    from segdistill.config import read_yaml

    if not config.get("pretrained_backbones", True):
        return []
    urls = []
    for role in ("teacher", "student"):
        bb = (read_yaml(config[role]["config"]).get("model") or {}).get("backbone") or {}
        url = bb.get("pretrained")
        if isinstance(url, str) and url.startswith(("http://", "https://")) and url not in urls:
            urls.append(url)
    return urls


def pretrained_path(url: str) -> Path:
    """Where the workflow caches the backbone behind `url`."""
    from segdistill.config import pretrained_cache_path

    return pretrained_cache_path(url, "resources/pretrained")
