"""Device truth: what Paddle runs on, checked against what the job leased; `segdistill doctor` prints it all.

Why: `make install` puts CPU Paddle in the venv. On a GPU box jobs lease devices and set CUDA_VISIBLE_DEVICES,
and a CPU build of Paddle then trains on the CPU without a word. A training job that leased GPUs therefore
checks, before building anything, that Paddle is compiled with CUDA and sees the leased devices, and every job
log names the device(s) and the Paddle/CUDA/cuDNN versions.
"""

from __future__ import annotations

import os
import re
from importlib import metadata
from pathlib import Path

from segdistill import threads
from segdistill.errors import SegDistillError

LEASED_ENV = "SEGDISTILL_LEASED_GPUS"  # set by segdistill.devices.run for the command it runs


def leased_gpus() -> list[str]:
    """The GPU ids this process's job leased (segdistill.devices.run sets them); [] when it leased none."""
    return [d for d in os.environ.get(LEASED_ENV, "").split(",") if d.strip()]


def _version(fn) -> str:
    try:
        v = fn()
    except Exception:  # noqa: BLE001  (old/new paddle builds lack some of these)
        return "unknown"
    return "none" if v in (False, "False", None, "", 0, "0") else str(v)


def build_info() -> dict:
    from segdistill.paddle_env import paddle

    cuda_build = paddle.is_compiled_with_cuda()
    return {
        "paddle": paddle.__version__,
        "paddle_commit": getattr(paddle.version, "commit", "unknown"),
        "compiled_with_cuda": cuda_build,
        "cuda": _version(paddle.version.cuda),
        "cudnn": _version(paddle.version.cudnn),
        "nccl": _version(getattr(paddle.version, "nccl", lambda: None)),
    }


def devices_info() -> list[dict]:
    from segdistill.paddle_env import paddle

    if not paddle.is_compiled_with_cuda():
        return []
    out = []
    for i in range(paddle.device.cuda.device_count()):
        props = paddle.device.cuda.get_device_properties(i)
        out.append(
            {
                "id": i,
                "name": props.name,
                "capability": f"{props.major}.{props.minor}",
                "memory_gb": round(props.total_memory / 2**30, 1),
            }
        )
    return out


def check_devices(world: int = 1) -> str:
    """Fail at once if the job leased GPUs that Paddle cannot use; return the log line naming the device(s).

    `world` is the number of ranks (the launcher may narrow each rank's view to its one device).
    """
    from segdistill.paddle_env import paddle

    leased = leased_gpus()
    info = build_info()
    versions = f"paddle {info['paddle']} ({info['paddle_commit'][:10]}), CUDA {info['cuda']}, cuDNN {info['cudnn']}"
    if leased:
        if not info["compiled_with_cuda"]:
            raise SegDistillError(
                f"this job leased GPU(s) {','.join(leased)} but the installed Paddle ({info['paddle']}) is a CPU "
                f"build (paddle.is_compiled_with_cuda() is False), so it would train on the CPU. Install the GPU "
                f"build (`make install GPU=cu126`, see README 'GPUs'), or run on CPU with `gpus_per_job: 0` / "
                f"`--resources gpu=0`. `segdistill doctor` shows what is installed."
            )
        seen = paddle.device.cuda.device_count()
        if seen != len(leased) and not (seen == 1 and world == len(leased)):
            raise SegDistillError(
                f"this job leased {len(leased)} GPU(s) ({','.join(leased)}) but Paddle sees {seen} "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')!r}); check the "
                f"device pool (SEGDISTILL_GPU_IDS) against `nvidia-smi -L` and `segdistill doctor`"
            )
        if not paddle.get_device().startswith("gpu"):
            raise SegDistillError(
                f"this job leased GPU(s) {','.join(leased)} but Paddle's device is {paddle.get_device()}"
            )
    place = paddle.get_device()
    if place.startswith("gpu"):
        i = int(place.split(":")[1]) if ":" in place else 0
        props = paddle.device.cuda.get_device_properties(i)
        where = f"{place} ({props.name}, compute capability {props.major}.{props.minor})"
        if leased:
            where += f", leased {','.join(leased)}"
    else:
        where = f"{place} ({threads.describe(threads.in_effect())})"
        if os.environ.get("CUDA_VISIBLE_DEVICES") and not info["compiled_with_cuda"]:
            where += (
                f"; note: CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']} is set but this Paddle "
                f"is a CPU build"
            )
    return f"device: {where}; {versions}"


# -- the installed stack against the pins ---------------------------------------------------------------------
# The GPU build of Paddle stands in for the pinned CPU package.
_SUBSTITUTES = {"paddlepaddle": ("paddlepaddle", "paddlepaddle-gpu")}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(req_dir: str | os.PathLike) -> dict[str, str]:
    """name -> pinned version from every `name==version` line of requirements/*.txt."""
    pins = {}
    for f in sorted(Path(req_dir).glob("*.txt")):
        for line in f.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
            if m:
                pins[_norm(m.group(1))] = m.group(2)
    return pins


def check_pins(pins: dict[str, str]) -> list[dict]:
    """One row per pin: {name, pinned, installed (or None), ok}."""
    rows = []
    for name, want in sorted(pins.items()):
        installed, dist = None, name
        for cand in _SUBSTITUTES.get(name, (name,)):
            try:
                installed, dist = metadata.version(cand), cand
                break
            except metadata.PackageNotFoundError:
                continue
        # A GPU wheel may carry a local tag (3.3.1.post126); the release is what the pin means.
        base = installed.split("+")[0] if installed else None
        ok = base is not None and (base == want or re.sub(r"\.post\d+$", "", base) == want)
        rows.append({"name": name, "dist": dist, "pinned": want, "installed": installed, "ok": ok})
    return rows


def default_requirements_dir() -> Path | None:
    here = Path(__file__).resolve().parents[2] / "requirements"
    return here if here.is_dir() else None


def report(req_dir: str | os.PathLike | None = None) -> tuple[str, bool]:
    """The text `segdistill doctor` prints, and whether everything matched."""
    from segdistill.paddle_env import paddle

    from segdistill import devices
    from segdistill.precision import supported_precisions

    info = build_info()
    lines = [
        f"paddle: {info['paddle']} (commit {info['paddle_commit']}), "
        f"{'CUDA build' if info['compiled_with_cuda'] else 'CPU build'}",
        f"CUDA: {info['cuda']}   cuDNN: {info['cudnn']}   NCCL: {info['nccl']}",
    ]
    devs = devices_info()
    lines.append(
        f"GPUs Paddle sees: {len(devs)}"
        + (
            f" (CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r})"
            if "CUDA_VISIBLE_DEVICES" in os.environ
            else ""
        )
    )
    lines += [f"  gpu:{d['id']} {d['name']}, compute capability {d['capability']}, {d['memory_gb']} GiB" for d in devs]
    try:
        pool = devices.available_devices()
    except SegDistillError as exc:
        pool, ok_pool = [], False
        lines.append(f"GPU lease pool: error: {exc}")
    else:
        ok_pool = True
        lines.append(f"GPU lease pool (what jobs lease): {','.join(pool) if pool else 'empty (CPU)'}")
    ok = ok_pool
    if pool and not info["compiled_with_cuda"]:
        ok = False
        lines.append(
            "PROBLEM: the lease pool has GPUs but Paddle is a CPU build; jobs that lease GPUs will "
            "stop. Install the GPU build: make install GPU=<cuda tag> (README 'GPUs')."
        )
    cpu = threads.describe(threads.in_effect())
    lines.append(f"device now: {paddle.get_device()} ({cpu}); precisions: {', '.join(supported_precisions())}")
    req_dir = req_dir or default_requirements_dir()
    if req_dir is None:
        lines.append("pins: requirements/ not found (not a source checkout); pass --requirements DIR")
    else:
        rows = check_pins(read_pins(req_dir))
        bad = [r for r in rows if not r["ok"]]
        ok = ok and not bad
        lines.append(f"pins ({req_dir}): {len(rows) - len(bad)}/{len(rows)} match")
        for r in bad:
            lines.append(f"  MISMATCH {r['name']}: pinned {r['pinned']}, installed {r['installed'] or 'missing'}")
        gpu = [r for r in rows if r["dist"] != r["name"]]
        for r in gpu:
            lines.append(f"  {r['dist']} {r['installed']} stands in for {r['name']}=={r['pinned']}")
    return "\n".join(lines), ok
