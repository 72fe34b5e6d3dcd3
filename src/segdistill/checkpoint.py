"""Checkpoints that survive being killed at any instant.

A checkpoint is a folder `iter_<N>/` holding `model.pdparams`, `model.pdopt`, `rng.pkl` and `state.json`; the
state records the SHA-256 of the other files. It is written into a hidden temp folder and renamed into place,
so a folder named `iter_<N>` is either complete or absent; a file damaged later is caught by its checksum.
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

import numpy as np

from segdistill.paddle_env import paddle

FILES = ("model.pdparams", "model.pdopt", "rng.pkl")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "paddle": paddle.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    paddle.set_rng_state(state["paddle"])


def save(save_dir: str | os.PathLike, iteration: int, model, optimizer, state: dict, keep: int | None = None) -> Path:
    """Write `iter_<iteration>` atomically; keep at most `keep` checkpoints (newest first)."""
    save_dir = Path(save_dir)
    final = save_dir / f"iter_{iteration}"
    tmp = save_dir / f".iter_{iteration}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    paddle.save(model.state_dict(), str(tmp / "model.pdparams"))
    paddle.save(optimizer.state_dict(), str(tmp / "model.pdopt"))
    with open(tmp / "rng.pkl", "wb") as fh:
        pickle.dump(rng_state(), fh)
    meta = dict(state, iteration=iteration, sha256={f: _sha256(tmp / f) for f in FILES})
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
        suffix = p.name[len("iter_"):]
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
    for name in FILES:
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


def check_model_state(state: dict, model) -> list[str]:
    """Every model entry present with its shape, and nothing else (set_state_dict skips both silently)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} (checkpoint {list(state[k].shape)}, model {list(expected[k].shape)})"
                  for k in expected if k in state and list(state[k].shape) != list(expected[k].shape)]
    return _problems("model", missing, unexpected, mismatched)


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


def load(path: Path, model, optimizer) -> None:
    """Restore a checkpoint strictly: any missing, unexpected or mis-shaped entry is an error naming it."""
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
    with open(path / "rng.pkl", "rb") as fh:
        set_rng_state(pickle.load(fh))


def save_weights(model, path: str | os.PathLike) -> None:
    """Model weights alone (best_model), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    paddle.save(model.state_dict(), str(tmp))
    os.replace(tmp, path)
