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


def load(path: Path, model, optimizer) -> None:
    model.set_state_dict(paddle.load(str(path / "model.pdparams")))
    optimizer.set_state_dict(paddle.load(str(path / "model.pdopt")))
    with open(path / "rng.pkl", "rb") as fh:
        set_rng_state(pickle.load(fh))


def save_weights(model, path: str | os.PathLike) -> None:
    """Model weights alone (best_model), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    paddle.save(model.state_dict(), str(tmp))
    os.replace(tmp, path)
