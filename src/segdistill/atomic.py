"""Atomic writes: a file is either absent or complete, never half-written (a killed job leaves no output that
looks finished). Write to a hidden sibling, then rename over the target."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


@contextlib.contextmanager
def replacing(path, suffix: str = ".tmp"):
    """Yields a temporary sibling path; renamed onto `path` when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj, **kw) -> None:
    write_text(path, json.dumps(obj, indent=2, **kw) + "\n")
