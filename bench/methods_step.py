#!/usr/bin/env python
"""What each distillation method of config/methods.yaml costs: its distill step and peak RSS against the student's.

Every arm of the methods study (its terms, read from the study file, so the two never disagree) runs as
segdistill's `Trainer.step` with the teacher's tensors read from a float32 teacher-outputs cache (as the study
runs them: no teacher forward in the distill step), on one fixed batch, next to `student` (Trainer.step without a
teacher). Two measurements:

- paired step time: all configurations built in one process and stepped round-robin, `--paired` rounds, so every
  ratio compares steps taken moments apart (background load hits them alike); the report gives each method's
  median step, and the median over rounds of (method step / student step of the same round);
- peak RSS: each configuration alone in a fresh process for `--steps` steps; the peak is the child's ru_maxrss
  (wait4), and the parent imports nothing heavy (a child started by exec inherits its parent's peak as a floor);
- losses alone (`--loss-sides`): each arm's losses, forward + backward, on random tensors of the shapes
  DeepLabV3P has at output stride 16 for larger inputs, each in a fresh process: time and peak-RSS growth, i.e.
  how a method's own cost grows with the image (CIRKD's pixel-pair matrices grow with (H*W)^2).

    python bench/methods_step.py --size 64 --batch 4 --steps 10 --paired 20 --out bench_methods_step.json

Configs: the study's (`--study`, default config/methods.yaml) teacher and student YAMLs, resized to `--size`,
backbones without pretrained weights and a random teacher (speed and memory do not depend on weight values).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import harness  # the set-up (configs, data, random teacher, patched config), the trainer and the children

ROOT = harness.ROOT
STUDENT = "student"  # the configuration without a teacher


def _study_terms(study: Path) -> dict:
    import yaml

    cfg = yaml.safe_load(study.read_text())
    return {arm: spec["terms"] for arm, spec in cfg["distill"].items()}


# -- child side -------------------------------------------------------------------------------------------------


def _prepare(work: Path, spec: dict) -> dict:
    from segdistill.distill import cache
    from segdistill.paddleseg_yaml import write_yaml
    from segdistill.specs import TeacherOutputsSpec

    versions = harness.prepare(work, spec)
    terms = work / "terms.yml"
    write_yaml({"terms": [t for ts in spec["arms"].values() for t in ts]}, terms)
    cache.write_teacher_outputs(
        TeacherOutputsSpec(
            config=str(work / "student.yml"),
            teacher_config=str(work / "teacher_patched.yml"),
            distill=[str(terms)],
            out=str(work / "cache"),
            data_seed=spec["seed"],
            data_root=str(work / "data"),
            iters=1,
            batch_size=spec["batch"],
            dtype="float32",
        ),
        log=lambda m: None,
    )
    return versions


def _step(name: str, work: Path, spec: dict):
    """A zero-argument callable doing one Trainer.step of configuration `name` on the first batch."""
    from segdistill.paddle_env import paddle

    from segdistill.trainer import seed_everything

    seed_everything(spec["seed"])
    terms, cache = (None, None) if name == STUDENT else (spec["arms"][name], work / "cache")
    trainer = harness.work_trainer(work, spec, terms, f"run_{name}", 1, cache)
    images, labels = (paddle.to_tensor(a) for a in trainer.stream.batch(1))

    def step():
        loss, _ = trainer.step(images, labels, it=1)
        value = float(loss)
        if value != value:
            raise RuntimeError(f"{name}: the step returned NaN")
        return value

    return step


def _paired(work: Path, spec: dict) -> dict:
    names = [STUDENT, *spec["arms"]]
    steps = {n: _step(n, work, spec) for n in names}
    for _ in range(spec["warmup"]):
        for fn in steps.values():
            fn()
    times = {n: [] for n in names}
    for _ in range(spec["paired"]):
        for n, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[n].append(time.perf_counter() - t0)
    return {"step_times_s": times}


def _alone(name: str, work: Path, spec: dict) -> dict:
    step = _step(name, work, spec)
    times = []
    for _ in range(spec["warmup"] + spec["steps"]):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"step_times_s": times[spec["warmup"] :]}


def _loss_alone(arm: str, side: int, spec: dict) -> dict:
    """One arm's losses alone, forward + backward on random tensors shaped as DeepLabV3P's at output stride 16
    for a `side` x `side` input (logits side x side x 2 classes, other layers side/16 with 256 channels): how the
    loss itself scales with the image, which the 64 x 64 step cannot show."""
    import resource

    from segdistill.paddle_env import paddle

    import numpy as np

    from segdistill.distill.connectors import build_connector
    from segdistill.distill.terms import parse_terms
    from segdistill.losses import get_loss

    rng = np.random.default_rng(0)
    n = spec["batch"]
    label = rng.integers(0, 2, size=(n, side, side))
    calls = []
    for term in parse_terms(spec["arms"][arm], arm):
        c, hw = (2, side) if term.student == "logits" else (256, max(1, side // 16))
        s, t = (
            paddle.to_tensor(rng.normal(size=(n, c, hw, hw)).astype("float32"), stop_gradient=False) for _ in range(2)
        )
        fn = get_loss(term.loss)
        ctx = {}
        if fn.module_factory:
            ctx["module"] = build_connector(fn.module_factory, c, c, term.name)
        if fn.keyed:
            ctx["keys"] = [[0, 0, 1, j, 0] for j in range(n)]
        calls.append((fn, s, t, ctx, term.options))
    lab = paddle.to_tensor(label)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(spec["warmup"] + spec["steps"]):
        t0 = time.perf_counter()
        total = sum(fn(s, t, label=lab, ignore_index=255, **opts, **ctx) for fn, s, t, ctx, opts in calls)
        total.backward()
        times.append(time.perf_counter() - t0)
    grow = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    return {"median_s": statistics.median(times[spec["warmup"] :]), "rss_growth_kb": grow}


def run_child(name: str, work: Path, result: Path) -> None:
    spec = json.loads((work / "spec.json").read_text())
    if name.startswith("loss:"):
        _, arm, side = name.split(":")
        out = _loss_alone(arm, int(side), spec)
    else:
        out = (
            _prepare(work, spec)
            if name == "prepare"
            else _paired(work, spec)
            if name == "paired"
            else _alone(name, work, spec)
        )
    result.write_text(json.dumps(out))


# -- parent side: stdlib only -----------------------------------------------------------------------------------


def _child(name: str, work: Path, timeout: float) -> tuple[dict, int]:
    """Run one child; (its result, its peak RSS in kB from wait4)."""
    return harness.run_child_script(__file__, name, work, timeout)


def summarise(paired: dict, peaks: dict) -> dict:
    times = paired["step_times_s"]
    base = times[STUDENT]
    out = {}
    for name, ts in times.items():
        per_round = [t / b for t, b in zip(ts, base)]
        out[name] = {
            "median_step_s": round(statistics.median(ts), 5),
            "step_vs_student": round(statistics.median(per_round), 3),
            "peak_rss_mb": round(peaks[name] / 1024.0, 1),
            "rss_vs_student": round(peaks[name] / peaks[STUDENT], 3),
        }
    return out


def table(confs: dict, terms: dict) -> str:
    rows = [
        "| configuration | terms | median step (s) | step / student step | peak RSS (MB) | RSS / student |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, c in confs.items():
        what = "; ".join(f"{t['loss']} on {t.get('student', 'logits')}" for t in terms.get(name, [])) or "no teacher"
        rows.append(
            f"| {name} | {what} | {c['median_step_s']:.3f} | {c['step_vs_student']:.2f} | "
            f"{c['peak_rss_mb']:.0f} | {c['rss_vs_student']:.2f} |"
        )
    return "\n".join(rows)


def loss_table(losses: dict) -> str:
    sides = sorted({int(k.split(":")[1]) for k in losses})
    rows = [
        "| arm | " + " | ".join(f"{s}x{s}: fwd+bwd (s), RSS growth (MB)" for s in sides) + " |",
        "| --- |" + " --- |" * len(sides),
    ]
    for arm in dict.fromkeys(k.split(":")[0] for k in losses):
        cells = [losses[f"{arm}:{s}"] for s in sides]
        rows.append(
            f"| {arm} | " + " | ".join(f"{c['median_s']:.4f}, {c['rss_growth_kb'] / 1024:.0f}" for c in cells) + " |"
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--study", default=str(ROOT / "config/methods.yaml"), help="study file: its arms and YAMLs")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=10, help="steps per configuration alone (peak RSS)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--paired", type=int, default=20, help="round-robin rounds over all configurations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--loss-sides",
        type=int,
        nargs="*",
        default=[64, 256, 512],
        help="input sides for the losses-alone measurement (none: skip it)",
    )
    p.add_argument("--losses-only", action="store_true", help="only the losses-alone measurement")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--out", default="bench_methods_step.json")
    args = harness.parse_or_run_child(p, argv, run_child)
    if args is None:
        return 0
    import yaml  # light; the parent must not import paddle

    study = Path(args.study)
    cfg = yaml.safe_load(study.read_text())
    terms = _study_terms(study)
    with tempfile.TemporaryDirectory(prefix="bench_methods_") as tmp:
        work = Path(tmp)
        spec = {
            "size": args.size,
            "batch": args.batch,
            "steps": args.steps,
            "warmup": args.warmup,
            "paired": args.paired,
            "seed": args.seed,
            "arms": terms,
            # a study's paths are relative to the workflow's folder, the repository root
            **{f"{role}_config": str(ROOT / cfg[role]["config"]) for role in ("teacher", "student")},
        }
        (work / "spec.json").write_text(json.dumps(spec))
        load_before = os.getloadavg()
        versions, peaks, paired = {}, {}, {"step_times_s": {}}
        if not args.losses_only:
            versions, _ = _child("prepare", work, args.timeout)
            for name in [STUDENT, *terms]:
                _, peaks[name] = _child(name, work, args.timeout)
                print(f"{name}: peak RSS {peaks[name] / 1024:.0f} MB", file=sys.stderr, flush=True)
            paired, _ = _child("paired", work, args.timeout)
        losses = {
            f"{arm}:{side}": _child(f"loss:{arm}:{side}", work, args.timeout)[0]
            for arm in terms
            for side in args.loss_sides
        }
    confs = summarise(paired, peaks) if peaks else {}
    report = {
        "settings": {k: v for k, v in spec.items() if k != "arms"},
        "study": str(study),
        "versions": versions,
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "configurations": confs,
        "terms": terms,
        "paired_step_times_s": paired["step_times_s"],
        "losses_alone": losses,
    }
    Path(args.out).write_text(json.dumps(report, indent=2))
    if confs:
        print(table(confs, terms))
    if losses:
        print(f"\nlosses alone (batch {args.batch}, forward + backward, median):\n" + loss_table(losses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
