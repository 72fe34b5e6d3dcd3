"""Checkpoints that survive being killed at any instant.

A checkpoint is a folder `iter_<N>/` holding `model.pdparams`, `model.pdopt`, one `rng_rank<k>.pkl` per rank and
`state.json`; the state records the SHA-256 of the other files. It is written into a hidden temp folder and
renamed into place, so a folder named `iter_<N>` is either complete or absent; a file damaged later is caught by
its checksum.

Why one RNG file per rank: each rank draws from its own generators (on a GPU its own device's generator), so
rank k must get back rank k's state; rank 0 writes every rank's (gathered by the trainer) into the one folder.
Checkpoints written before this held one `rng.pkl` (one rank), which is read as rank 0's.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import shutil
import sys
from pathlib import Path

from segdistill.paddle_env import paddle

import numpy as np

FILES = ("model.pdparams", "model.pdopt")  # plus the RNG files, rng_file(rank)
LEGACY_RNG = "rng.pkl"


def rng_file(rank: int) -> str:
    return f"rng_rank{rank}.pkl"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def rng_state() -> dict:
    """This process's generators: Python's, numpy's, Paddle's CPU one and, on a GPU, the current device's ones
    (paddle.get_rng_state() of the current place: every visible device's generator as this process sees it)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "paddle_cpu": paddle.get_rng_state("cpu")}
    if not paddle.get_device().startswith("cpu"):
        state["paddle"] = paddle.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "paddle_cpu" in state:
        paddle.set_rng_state(state["paddle_cpu"], "cpu")
    if "paddle" in state:  # the current place's generators (a legacy rng.pkl holds only these)
        paddle.set_rng_state(state["paddle"])


def save(
    save_dir: str | os.PathLike,
    iteration: int,
    model,
    optimizer,
    state: dict,
    keep: int | None = None,
    rng_states: list | None = None,
) -> Path:
    """Write `iter_<iteration>` atomically; keep at most `keep` checkpoints (newest first).

    `rng_states`: every rank's `rng_state()`, in rank order (default: this process's, as rank 0's)."""
    save_dir = Path(save_dir)
    final = save_dir / f"iter_{iteration}"
    tmp = save_dir / f".iter_{iteration}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    paddle.save(model.state_dict(), str(tmp / "model.pdparams"))
    paddle.save(optimizer.state_dict(), str(tmp / "model.pdopt"))
    rng_states = rng_states if rng_states is not None else [rng_state()]
    for rank, rng in enumerate(rng_states):
        with open(tmp / rng_file(rank), "wb") as fh:
            pickle.dump(rng, fh)
    files = list(FILES) + [rng_file(r) for r in range(len(rng_states))]
    meta = dict(state, iteration=iteration, sha256={f: _sha256(tmp / f) for f in files})
    with open(tmp / "state.json", "w") as fh:
        json.dump(meta, fh)
        fh.flush()
        os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep:
        for old in list_checkpoints(save_dir)[keep:]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(save_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint folders, newest iteration first."""
    save_dir = Path(save_dir)
    found = []
    for p in save_dir.glob("iter_*"):
        suffix = p.name[len("iter_") :]
        if p.is_dir() and suffix.isdigit():
            found.append((int(suffix), p))
    return [p for _, p in sorted(found, reverse=True)]


def verify(path: Path) -> dict:
    """The checkpoint's state if every file is present and matches its checksum; raises ValueError otherwise."""
    try:
        with open(path / "state.json") as fh:
            meta = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"state.json unreadable ({exc})") from None
    recorded = meta.get("sha256", {})
    rng = [n for n in recorded if n.startswith("rng")]
    if not rng:
        raise ValueError("no RNG state recorded")
    for name in list(FILES) + rng:
        f = path / name
        if not f.is_file():
            raise ValueError(f"{name} missing")
        if _sha256(f) != meta.get("sha256", {}).get(name):
            raise ValueError(f"{name} does not match its recorded checksum (truncated or corrupt)")
    return meta


def latest_valid(save_dir: str | os.PathLike, log=None) -> tuple[Path, dict] | tuple[None, None]:
    """The newest checkpoint that verifies; damaged ones are reported and skipped (never deleted)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    for path in list_checkpoints(save_dir):
        try:
            return path, verify(path)
        except ValueError as exc:
            log(f"checkpoint {path} is damaged and was skipped: {exc}")
    return None, None


def _problems(what: str, missing, unexpected, mismatched) -> list[str]:
    out = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            shown = ", ".join(items[:5]) + (f", ... ({len(items)} in all)" if len(items) > 5 else "")
            out.append(f"{what}: {label}: {shown}")
    return out


def state_differences(state: dict, model, source: str) -> tuple[list, list, list]:
    """How a state dict differs from `model`'s: its entries `state` lacks, the entries of `state` the model does not
    have, and those of another shape (noted as `source` vs model). set_state_dict skips all three silently."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} ({source} {list(state[k].shape)}, model {list(expected[k].shape)})"
        for k in expected
        if k in state and list(state[k].shape) != list(expected[k].shape)
    ]
    return missing, unexpected, mismatched


def check_model_state(state: dict, model) -> list[str]:
    """Every model entry present with its shape, and nothing else."""
    return _problems("model", *state_differences(state, model, "checkpoint"))


def check_optimizer_state(state: dict, optimizer) -> list[str]:
    """The optimizer's accumulators must belong to this optimizer's parameters, with their shapes.

    A fresh optimizer has no accumulators yet (they are made at the first step), so the check goes by name:
    Paddle calls them `<parameter name>_<accumulator>_<n>`. A checkpoint written after a step holds them for
    every trainable parameter.
    """
    params = {p.name: p for p in optimizer._parameter_list if not p.stop_gradient}
    names = sorted(params, key=len, reverse=True)  # longest first: `conv_1.w_0` must not claim `conv_1.w_01_...`
    owned, unexpected, mismatched = set(), [], []
    for key, value in state.items():
        if key in ("LR_Scheduler", "master_weights") or not hasattr(value, "shape"):
            continue
        owner = next((n for n in names if key.startswith(n + "_")), None)
        if owner is None:
            unexpected.append(key)
            continue
        owned.add(owner)
        shape = list(value.shape)
        if shape not in (list(params[owner].shape), [1]):
            mismatched.append(f"{key} (checkpoint {shape}, parameter {list(params[owner].shape)})")
    missing = [n for n in params if n not in owned] if owned else []
    return _problems("optimizer", [f"accumulators of {n}" for n in missing], unexpected, mismatched)


def load(path: Path, model, optimizer, rank: int = 0, log=None) -> None:
    """Restore a checkpoint strictly: any missing, unexpected or mis-shaped entry is an error naming it.
    The RNG state restored is rank `rank`'s."""
    from segdistill.errors import SegDistillError

    model_state = paddle.load(str(path / "model.pdparams"))
    opt_state = paddle.load(str(path / "model.pdopt"))
    problems = check_model_state(model_state, model) + check_optimizer_state(opt_state, optimizer)
    if problems:
        raise SegDistillError(
            f"checkpoint {path} does not match this run's model/optimizer (different config or connectors?): "
            + "; ".join(problems)
            + ". Resume with the config that wrote it, or start in an empty save_dir."
        )
    model.set_state_dict(model_state)
    optimizer.set_state_dict(opt_state)
    rng = path / rng_file(rank)
    if not rng.is_file() and rank == 0 and (path / LEGACY_RNG).is_file():
        rng = path / LEGACY_RNG
    if not rng.is_file():
        # Only an explicit --resume_model of a run with fewer ranks gets here (the run key includes the ranks).
        (log or print)(
            f"note: {path} has no RNG state of rank {rank} (written with fewer ranks); this rank "
            f"continues with its generators as seeded"
        )
        return
    with open(rng, "rb") as fh:
        set_rng_state(pickle.load(fh))


def save_weights(model, path: str | os.PathLike) -> None:
    """Model weights alone (best_model), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    paddle.save(model.state_dict(), str(tmp))
    os.replace(tmp, path)
