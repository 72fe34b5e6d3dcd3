"""Where a job's wall time goes. The engine times the work a job exists for (training steps, forwards) and the
checkpoint writes, and ends the job's log with one line, `[time] {"train_steps": 24.1, ...}` (seconds).
bench/study_time.py sets those against Snakemake's `benchmark:` wall time: what is left is start-up (the
interpreter, imports, model builds, data sets) and the job's other I/O."""

from __future__ import annotations

import contextlib
import json
import time

# What a job computes, as opposed to what it spends getting there or writing down.
COMPUTE = ("train_steps", "evaluate", "teacher_forward", "latency")
PREFIX = "[time] "


class Clock:
    """Seconds spent per named part, summed over the `with clock("part"):` blocks."""

    def __init__(self):
        self.totals: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, part: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.totals[part] = self.totals.get(part, 0.0) + time.perf_counter() - t0

    def line(self) -> str:
        return PREFIX + json.dumps({k: round(v, 3) for k, v in sorted(self.totals.items())})


def parse_log(text: str) -> dict[str, float]:
    """The parts of a log's last `[time]` line (logs are appended to: a job killed and rerun wrote one before),
    empty when it has none."""
    lines = [line for line in text.splitlines() if line.startswith(PREFIX)]
    return {k: float(v) for k, v in json.loads(lines[-1][len(PREFIX) :]).items()} if lines else {}
