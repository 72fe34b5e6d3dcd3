"""How many CPU threads a process computes with, decided before paddle is imported.

Paddle reads `OMP_NUM_THREADS` once, when it is imported, and sets it to 1 when it is unset, so a command run by
hand would use one core of any machine. `apply` picks the count first: `--threads N`, else an `OMP_NUM_THREADS`
the user set, else the cores this process may run on (its CPU affinity, which a container or `taskset` narrows).
The workflow's jobs always start with `OMP_NUM_THREADS` set to their rule's threads (segdistill.devices), so they
keep exactly that count.

The count changes float rounding (CPU kernels split their sums by thread), so runs record it: `in_effect`.
"""

from __future__ import annotations

import os
import sys

from segdistill.errors import SegDistillError

VAR = "OMP_NUM_THREADS"
# oneDNN runs on OpenMP; MKL and OpenBLAS (numpy, some paddle kernels) get the same count, as segdistill.devices
# gives its jobs.
VARS = (VAR, "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def _positive(value, what: str) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if isinstance(value, bool) or n < 1:
        raise SegDistillError(f"{what} must be a whole number >= 1, got {value!r}")
    return n


def choose(requested: int | None = None, environ=None) -> tuple[int, str]:
    """(thread count, where it came from): `requested` (--threads), else $OMP_NUM_THREADS, else the affinity."""
    environ = os.environ if environ is None else environ
    if requested is not None:
        return _positive(requested, "--threads"), "--threads"
    if environ.get(VAR, "").strip():
        return _positive(environ[VAR], VAR), VAR
    return available_cores(), "the cores available to this process"


def apply(requested: int | None = None) -> int:
    """Set the thread variables for this process (before paddle is imported) and return the count.

    `requested` overrides all three variables; otherwise a variable the user set is kept and the others follow
    OMP_NUM_THREADS. Once paddle is imported its count is fixed: asking then for another one is an error."""
    n, source = choose(requested)
    if "paddle" in sys.modules and n != in_effect():
        raise SegDistillError(
            f"{n} threads asked for ({source}) after paddle was imported with {in_effect()}: "
            f"set {VAR} before importing paddle"
        )
    for var in VARS:
        if requested is not None or var == VAR:
            os.environ[var] = str(n)
        else:
            os.environ.setdefault(var, str(n))
    return n


def in_effect() -> int:
    """The count paddle computes with: $OMP_NUM_THREADS as paddle left it (it sets 1 at import when unset or not a
    number)."""
    try:
        return max(1, int(os.environ.get(VAR, "1")))
    except ValueError:
        return 1


def add_flag(parser) -> None:
    """`--threads N` of a command that runs a model (`apply` takes its value)."""
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"CPU threads (default: ${VAR} if set, else every core this process may use); the count changes "
        f"float rounding",
    )


def describe(n: int) -> str:
    return f"{n} thread" if n == 1 else f"{n} threads"
