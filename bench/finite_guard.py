"""What the non-finite guard costs a training step (segdistill.finite), measured within one process.

Per step, the trainer queues `LossGuard.update` (is the loss and each part finite; the first iteration each went
non-finite) on the device, and reads it only at log rows, evaluations and checkpoints (`first_nonfinite`); at each
evaluation and checkpoint it also checks every parameter and buffer (`state_problem`). This runs a distilled
student (KL on the logits, the default study's method) on one fixed batch and times, step by step and in the same
cycle: the step itself, the guard's update after it, the read of the flag, the reading of the loss to the host
that the trainer used to do every step (`float(loss)`), and, per evaluation, the state check.

On a CPU every operation completes before it returns, so these are the work the guard adds. On a GPU, kernels
are queued and `float(loss)` / `.numpy()` copy with `GpuMemcpySync` (Paddle's `tensor_method_numpy`,
paddle/fluid/pybind/eager_method.cc): the host waits for the whole step, so that read would cost a stall per step
however small the copy; the guard's update queues a few element-wise kernels on a vector of a handful of numbers
and waits for nothing, and its read happens every `log_iters` steps.

    python bench/finite_guard.py --steps 30 --out bench_finite_guard.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import distill_step  # noqa: E402  (the same prepared configs, data and teacher as the distill step benchmark)

KL = [{"student": "logits", "teacher": "logits", "loss": "kl", "weight": 3, "temperature": 1}]


def measure(work: Path, spec: dict) -> dict:
    from segdistill.finite import LossGuard, state_problem

    distill_step._prepare(work, spec)
    trainer = distill_step.work_trainer(work, spec, KL, iters=spec["steps"] + spec["warmup"])
    images, labels = distill_step._batch(work, spec)
    guard = LossGuard()
    times = {"step": [], "guard_update": [], "guard_read": [], "float_loss": [], "state_check": []}
    for i in range(spec["warmup"] + spec["steps"]):
        t0 = time.perf_counter()
        loss, parts = trainer.step(images, labels, i + 1)
        t1 = time.perf_counter()
        guard.update(i + 1, loss, parts)
        t2 = time.perf_counter()
        found = guard.first_nonfinite()
        t3 = time.perf_counter()
        float(loss)
        t4 = time.perf_counter()
        problem = state_problem([trainer.model])
        t5 = time.perf_counter()
        if found or problem:
            raise SystemExit(f"the benchmark's run went non-finite: {found or problem}")
        if i >= spec["warmup"]:
            for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                times[key].append(value)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "spec": spec,
        "median_s": med,
        "guard_update_per_step": med["guard_update"] / med["step"],
        "guard_read_per_step": med["guard_read"] / med["step"],
        "state_check_per_step": med["state_check"] / med["step"],
        "all_s": times,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--student_config", default=str(distill_step.DEFAULT_STUDENT))
    ap.add_argument("--teacher_config", default=str(distill_step.DEFAULT_TEACHER))
    ap.add_argument("--out", default="-")
    args = ap.parse_args(argv)
    spec = {k: getattr(args, k) for k in ("size", "batch", "seed", "steps", "warmup", "student_config")}
    spec["teacher_config"] = args.teacher_config
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(Path(tmp), spec)
    med = result["median_s"]
    print("| what | median s | per step |\n| --- | --- | --- |")
    for key in ("step", "guard_update", "guard_read", "float_loss", "state_check"):
        print(f"| {key} | {med[key]:.6f} | {med[key] / med['step']:.2%} |")
    text = json.dumps(result, indent=2)
    if args.out == "-":
        print(text)
    else:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
