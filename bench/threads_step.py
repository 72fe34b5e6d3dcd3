#!/usr/bin/env python
"""Training step time at 1 and more CPU threads: the student's and the teacher's `Trainer.step`, and the teacher's
forward (what the teacher-outputs job runs), on one fixed batch.

Every (case, threads) pair runs in its own fresh process with OMP_NUM_THREADS (and MKL/OpenBLAS) set before paddle
is imported, as `segdistill --threads N` does. Rounds interleave the pairs, rotating their order, so a change in
the machine's background load hits every thread count alike; each round gives the ratio (median step at 1 thread)
/ (median step at N threads), and the report is the median of those ratios next to the step times. The losses of
the timed steps show whether the thread count changed the rounding (same batch, same initial weights).

    python bench/threads_step.py --size 64 --steps 8 --warmup 2 --rounds 3 --out threads_64.json
    python bench/threads_step.py --size 512 --steps 2 --warmup 1 --rounds 1 --cases student teacher \\
        --teacher-config config/paddleseg/optic_disc/deeplabv3p_resnet50_os8_optic_disc_512x512_1k_teacher.yml \\
        --student-config config/paddleseg/optic_disc/deeplabv3p_resnet18_os8_optic_disc_512x512_1k_student.yml \\
        --out threads_512.json

Results: docs/benchmark.md ("Threads") and docs/scaling.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness  # the same resized configs, generated data and random teacher weights

ROOT = harness.ROOT

DEFAULT_TEACHER = ROOT / "config/paddleseg/cpu/deeplabv3p_resnet50_os16_synthetic_64x64_teacher.yml"
DEFAULT_STUDENT = ROOT / "config/paddleseg/cpu/deeplabv3p_resnet18_os16_synthetic_64x64_student.yml"
CASES = {
    "student": "student Trainer.step (the `train` jobs of students and, less the cache read, distilled runs)",
    "teacher": "teacher Trainer.step (the teacher's `train` job)",
    "teacher_forward": "teacher forward, eval, no_grad (the `teacher_outputs` job)",
}


def _step(case: str, work: Path, spec: dict):
    """A zero-argument callable doing one step of `case` on the fixed batch; returns the loss (or an output)."""
    from segdistill.paddle_env import paddle

    images, labels = harness.batch(work, spec)
    if case == "teacher_forward":
        teacher = harness.teacher_model(work)
        teacher.eval()

        def forward():
            with paddle.no_grad():
                return float(teacher(images)[0].sum())

        return forward
    from segdistill.trainer import Trainer, TrainSpec

    role = "student" if case == "student" else "teacher"
    trainer = Trainer(
        TrainSpec(
            config=str(work / f"{role}.yml"),
            save_dir=str(work / f"run-{case}-{os.getpid()}"),
            seed=spec["seed"],
            data_root=str(work / "data"),
            batch_size=spec["batch"],
            do_eval=False,
            pretrained_backbone=False,
        ),
        log=lambda msg: None,
    )
    trainer.net.train()
    return lambda: float(trainer.step(images, labels)[0])


def run_child(case: str, work: Path, spec: dict, out: Path) -> None:
    from segdistill import threads

    step = _step(case, work, spec)
    for _ in range(spec["warmup"]):
        step()
    times, cpu, losses = [], [], []
    for _ in range(spec["steps"]):
        t0, c0 = time.perf_counter(), time.process_time()
        losses.append(step())
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    result = {"case": case, "threads": threads.in_effect(), "step_s": times, "cpu_s": cpu, "losses": losses}
    out.write_text(json.dumps(result))


def _child(case: str, n: int, work: Path, spec: dict, timeout: float) -> dict:
    out = work / f"result-{case}-{n}.json"
    out.unlink(missing_ok=True)
    env = dict(os.environ, **{var: str(n) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    cmd = [
        sys.executable,
        __file__,
        "--child",
        case,
        "--work",
        str(work),
        "--spec",
        json.dumps(spec),
        "--out",
        str(out),
    ]
    subprocess.run(cmd, env=env, check=True, timeout=timeout)
    return json.loads(out.read_text())


def measure(work: Path, spec: dict, cases, counts, rounds: int, timeout: float) -> list[dict]:
    """One row per child, rounds interleaved and each round's order rotated."""
    pairs = [(c, n) for c in cases for n in counts]
    rows = []
    for r in range(rounds):
        k = r % len(pairs)
        for case, n in pairs[k:] + pairs[:k]:
            busy = harness.cpu_busy(1.0)
            res = _child(case, n, work, spec, timeout)
            res.update(round=r, background_busy=busy, load=os.getloadavg())
            rows.append(res)
            print(
                f"round {r} {case} {res['threads']} threads: median {statistics.median(res['step_s']):.3f} s "
                f"(background CPU {busy})",
                file=sys.stderr,
                flush=True,
            )
    return rows


def summarise(rows: list[dict], counts) -> list[dict]:
    """Per case: median step per thread count, the median over rounds of t(1 thread) / t(n), and whether the
    losses of n threads equal those of 1 thread bit for bit."""
    out = []
    for case in dict.fromkeys(r["case"] for r in rows):
        mine = [r for r in rows if r["case"] == case]
        by = {n: [r for r in mine if r["threads"] == n] for n in counts}
        row = {"case": case}
        for n in counts:
            row[f"step_s_{n}"] = statistics.median(t for r in by[n] for t in r["step_s"])
            row[f"cpu_s_{n}"] = statistics.median(t for r in by[n] for t in r["cpu_s"])
        base = {r["round"]: r for r in by[counts[0]]}
        for n in counts[1:]:
            ratios = [
                statistics.median(base[r["round"]]["step_s"]) / statistics.median(r["step_s"])
                for r in by[n]
                if r["round"] in base
            ]
            row[f"speedup_{n}"] = statistics.median(ratios)
            row[f"speedup_{n}_rounds"] = ratios
            row[f"same_losses_{n}"] = all(base[r["round"]]["losses"] == r["losses"] for r in by[n])
        out.append(row)
    return out


def table(summary: list[dict], counts, size: int) -> str:
    more = counts[1:]
    head = ["case", *(f"{n} thread(s) s/step" for n in counts), *(f"speed-up at {n}" for n in more)]
    head += [f"losses equal at {n}" for n in more]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for s in summary:
        cells = [f"{s['case']} ({size}x{size})", *(f"{s[f'step_s_{n}']:.3f}" for n in counts)]
        cells += [f"{s[f'speedup_{n}']:.2f}x" for n in more] + [str(s[f"same_losses_{n}"]) for n in more]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per process")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts; the first is the base")
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--teacher-config", default=str(DEFAULT_TEACHER))
    ap.add_argument("--student-config", default=str(DEFAULT_STUDENT))
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = _args(argv)
    if args.child:
        run_child(args.child, Path(args.work), json.loads(args.spec), Path(args.out))
        return 0
    spec = {
        "size": args.size,
        "batch": args.batch,
        "seed": 0,
        "steps": args.steps,
        "warmup": args.warmup,
        "teacher_config": args.teacher_config,
        "student_config": args.student_config,
    }
    with tempfile.TemporaryDirectory(prefix="segdistill-threads-") as tmp:
        work = Path(tmp)
        versions = harness.prepare(work, spec)
        t0 = time.time()
        rows = measure(work, spec, args.cases, args.threads, args.rounds, args.timeout)
    summary = summarise(rows, args.threads)
    print(table(summary, args.threads, args.size))
    report = {
        "spec": spec,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "versions": versions,
        "wall_s": time.time() - t0,
        "summary": summary,
        "rows": rows,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
