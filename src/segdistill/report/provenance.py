"""Provenance of a study's results: package versions, config hashes, git commit, machine and date."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from segdistill.data.fetch import sha256_of

PACKAGES = (
    "paddlepaddle",
    "paddlepaddle-gpu",
    "paddleseg",
    "paddleslim",
    "snakemake",
    "numpy",
    "pandas",
    "scipy",
    "matplotlib",
    "opencv-python-headless",
    "opencv-python",
    "PyYAML",
    "docutils",
    "segdistill",
)


def config_hash(config: dict) -> str:
    """SHA-256 of the study config as canonical JSON: equal for equal settings, whatever the YAML layout."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def package_versions(names=PACKAGES) -> dict:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_info(repo_dir) -> dict | None:
    """Commit and whether tracked files differ from it; None outside a git checkout or without git."""

    def git(*args):
        return subprocess.run(
            ["git", "-C", str(repo_dir), *args], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        branch = git("rev-parse", "--abbrev-ref", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "branch": branch, "dirty": dirty}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def machine_info() -> dict:
    info = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "python_executable_version": sys.version.split()[0],
    }
    try:
        from segdistill.paddle_env import paddle

        info["paddle_cuda"] = bool(paddle.is_compiled_with_cuda())
        info["gpus"] = (
            [paddle.device.cuda.get_device_name(i) for i in range(paddle.device.cuda.device_count())]
            if info["paddle_cuda"]
            else []
        )
    except Exception as exc:  # provenance must not fail because a device query does
        info["gpus_error"] = str(exc)
    return info


def _run_id(path: Path) -> str:
    """`distilled/kl/seed0` of results/runs/distilled/kl/seed0/train_summary.json (the folder outside results/runs)."""
    parts = path.parent.parts
    return "/".join(parts[parts.index("runs") + 1 :]) if "runs" in parts else str(path.parent)


def teacher_sources(summaries) -> dict:
    """Run id -> how its teacher's tensors came ({'mode': 'online'} or 'cached' with the cache manifest's SHA-256),
    from the distilled runs' train_summary.json (results/runs/<run>/train_summary.json); other runs are skipped."""
    out = {}
    for path in map(Path, summaries):
        if "distilled" in path.parts:
            out[_run_id(path)] = json.loads(path.read_text()).get("teacher_outputs") or {"mode": "online"}
    return out


def job_threads(summaries) -> dict:
    """The CPU threads every job computed with (the count changes float rounding): run id -> its training job's,
    and teacher-output folder -> the job's that wrote it, from the runs' train_summary.json. None: a run from
    before the count was recorded."""
    runs, caches = {}, {}
    for path in map(Path, summaries):
        summary = json.loads(path.read_text())
        runs[_run_id(path)] = summary.get("threads")
        source = summary.get("teacher_outputs") or {}
        if source.get("mode") == "cached":
            caches[source["folder"]] = source.get("threads")
    return {"runs": runs, "teacher_outputs": caches}


def collect(
    config: dict, config_files=(), result_files=(), repo_dir=None, now=None, train_summaries=(), backbones=()
) -> dict:
    """Everything needed to say where a set of results came from; the runs' `train_summaries` add the threads of
    every job (`job_threads`) and whether each distilled run's teacher was cached or online (`teacher_sources`),
    `backbones` (the backbone files the
    runs loaded) their digests and sources (`segdistill.pretrained.backbone_records`)."""
    from segdistill.pretrained import backbone_records

    now = now or _dt.datetime.now(_dt.timezone.utc)
    # The config as JSON sees it: a study config handed over by Snakemake may hold types JSON does not know.
    config = json.loads(json.dumps(dict(config), default=str))
    return {
        "date_utc": now.replace(microsecond=0).isoformat(),
        "config_sha256": config_hash(config),
        "config": config,
        "config_files": {str(p): sha256_of(p) for p in config_files},
        "result_files": {str(p): sha256_of(p) for p in result_files},
        "teacher_outputs": teacher_sources(train_summaries),
        "threads": job_threads(train_summaries),
        "backbones": backbone_records(backbones),
        "git": git_info(repo_dir) if repo_dir else None,
        "packages": package_versions(),
        "machine": machine_info(),
    }


def write_provenance(out_json, **kw) -> dict:
    rec = collect(**kw)
    from segdistill.atomic import write_json

    write_json(out_json, rec, default=str)
    return rec
