"""The Python code is linted and formatted as pyproject.toml's [tool.ruff] says (src/, tests/, bench/, scripts)."""

import subprocess

import pytest

from conftest import BIN, ROOT


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff_passes(args):
    proc = subprocess.run([str(BIN / "ruff"), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"ruff {' '.join(args)} found problems:\n{proc.stdout[-4000:]}{proc.stderr[-2000:]}"
