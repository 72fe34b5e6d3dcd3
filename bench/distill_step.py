#!/usr/bin/env python
"""Distillation step benchmark: time per training step and peak memory of the distiller against its parts.

On one student/teacher pair and one fixed batch it measures, each configuration in a fresh subprocess:

  bare_student          a bare Paddle loop: student forward, F.cross_entropy, backward, optimizer step
  trainer_student       segdistill's Trainer.step without a teacher
  teacher_forward       the teacher's forward in eval mode under paddle.no_grad()
  distill_kl            Trainer.step distilling with KL on the logits
  distill_kl_cwd        Trainer.step with KL on the logits + CWD on head.aspp and backbone.bb_3_1 (1x1 connector)
  paddleslim_kl         PaddleSlim's Distill (KLLoss on the head logits), teacher set up as PaddleSeg's
                        distill_train.py does it (eval mode, parameters left trainable)
  paddleslim_kl_frozen  the same with the teacher's parameters frozen (stop_gradient), as segdistill freezes them

Step time is the median over all timed steps of all rounds; peak RSS is the child's ru_maxrss (from wait4, so
each configuration is measured alone). Rounds interleave the configurations so that a change in background load
hits all of them alike. The parent process imports nothing heavy: on Linux a child started by exec inherits the
parent's peak RSS as the floor of its own ru_maxrss, so a parent holding paddle would inflate every number.
`--paired N` also steps (a)-(e) round-robin in one process, which gives drift-free step ratios; `--breakdown N`
times each phase of a step. See bench/README.md and docs/benchmark.md.

    python bench/distill_step.py --size 64 --batch 4 --steps 20 --warmup 3 --rounds 3 --breakdown 6 --paired 30 \
        --out bench_distill_step.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import harness

# Feature pairs for the KL + CWD configuration: (student layer, teacher layer, connector).
FEATURE_PAIRS = [("head.aspp", "head.aspp", None), ("backbone.bb_3_1", "backbone.bb_3_1", "conv1x1")]

CONFIGS = {
    "bare_student": "(a) bare loop: student fwd, F.cross_entropy, backward, Momentum step",
    "trainer_student": "(b) Trainer.step, no teacher",
    "teacher_forward": "(c) teacher fwd, eval, no_grad",
    "distill_kl": "(d) Trainer.step, KL on logits",
    "distill_kl_cwd": "(e) Trainer.step, KL + CWD on head.aspp, backbone.bb_3_1",
    "paddleslim_kl": "(f) PaddleSlim Distill, KLLoss on head logits, teacher as PaddleSeg sets it",
    "paddleslim_kl_frozen": "(f') PaddleSlim Distill, same, teacher params frozen",
}

TARGET_STEP = 1.05  # distill step <= 1.05 x (student step + teacher forward)
TARGET_RSS = 1.10  # distill peak RSS <= 1.10 x (student train peak + teacher inference peak)
TARGET_TRAINER = 1.03  # trainer step <= 1.03 x bare loop


# ---------------------------------------------------------------------------------------------------------------
# child side: everything that imports paddle runs here, one configuration per process
# ---------------------------------------------------------------------------------------------------------------


def _optimizer(dic: dict, parameters, source):
    """The student YAML's SGD(+momentum) and PolynomialDecay, built by hand for the bare loop and PaddleSlim."""
    from segdistill.paddle_env import paddle

    from segdistill.errors import SegDistillError

    opt, lr_cfg = dict(dic["optimizer"]), dict(dic["lr_scheduler"])
    if opt.get("type") not in ("SGD", "sgd") or lr_cfg.get("type") != "PolynomialDecay":
        raise SegDistillError(
            f"{source}: the benchmark's hand-built loops support optimizer SGD with "
            f"lr_scheduler PolynomialDecay, got {opt.get('type')} / {lr_cfg.get('type')}"
        )
    lr = paddle.optimizer.lr.PolynomialDecay(
        learning_rate=float(lr_cfg["learning_rate"]),
        decay_steps=int(dic["iters"]),
        end_lr=float(lr_cfg.get("end_lr", 0.0)),
        power=float(lr_cfg.get("power", 1.0)),
    )
    wd = opt.get("weight_decay")
    if "momentum" in opt:
        o = paddle.optimizer.Momentum(
            learning_rate=lr, momentum=float(opt["momentum"]), parameters=parameters, weight_decay=wd
        )
    else:
        o = paddle.optimizer.SGD(learning_rate=lr, parameters=parameters, weight_decay=wd)
    return o, lr


# Each builder returns (step, parts): a zero-argument callable doing one step of its configuration on the fixed
# batch, and {phase: [(owner, attribute or index)]} naming the callables that make up each phase (--breakdown).


def _student_dic(work: Path):
    from segdistill.paddleseg_yaml import read_yaml

    return read_yaml(work / "student.yml")


def _minimizing(loss_of, opt, lr):
    """A hand-built loop's step: the loss `loss_of()`, backward, the optimizer's and the scheduler's steps."""

    def step():
        loss = loss_of()
        loss.backward()
        opt.step()
        opt.clear_grad()
        lr.step()
        return float(loss)

    return step


def _bare_student(name: str, work: Path, spec: dict):
    """(a) the loop anyone would write: student forward, F.cross_entropy, backward, optimizer step."""
    import paddle.nn.functional as F

    from segdistill.paddleseg_yaml import build_model, ignore_index

    sdic = _student_dic(work)
    ign = ignore_index(sdic)
    images, labels = harness.batch(work, spec)
    model = build_model(sdic, work / "student.yml")
    model.train()
    opt, lr = _optimizer(sdic, model.parameters(), work / "student.yml")
    lab4 = labels.unsqueeze(1)

    step = _minimizing(lambda: F.cross_entropy(model(images)[0], lab4, ignore_index=ign, axis=1), opt, lr)
    return step, {
        "student_fwd": [(model, "forward")],
        "ce": [(F, "cross_entropy")],
        "optimizer": [(opt, "step"), (opt, "clear_grad")],
    }


TRAINER_TERMS = {
    "trainer_student": None,
    "distill_kl": [{"name": "kl", "loss": "kl", "weight": 3.0}],
    "distill_kl_cwd": [{"name": "kl", "loss": "kl", "weight": 3.0}]
    + [
        {
            "name": f"cwd_{s}",
            "student": s,
            "teacher": t,
            "loss": "cwd",
            "weight": 1.0,
            "temperature": 4.0,
            **({"connector": c} if c else {}),
        }
        for s, t, c in FEATURE_PAIRS
    ],
}


def _trainer_step(name: str, work: Path, spec: dict):
    """(b), (d), (e): segdistill's own Trainer.step, without a teacher or distilling with TRAINER_TERMS[name]."""
    trainer = harness.work_trainer(work, spec, TRAINER_TERMS[name])
    images, labels = harness.batch(work, spec)

    def step():
        loss, _ = trainer.step(images, labels)
        return float(loss)

    parts = {
        "student_fwd": [(trainer.model, "forward")],
        "ce": [(trainer, "task_loss")],
        "optimizer": [(trainer.optimizer, "step"), (trainer.optimizer, "clear_grad")],
    }
    d = trainer.distiller
    if d is not None:
        parts["teacher_fwd"] = [(d.teacher, "forward")]
        parts["distill_losses"] = [(d.loss_fns, i) for i in range(len(d.loss_fns))]
        parts["connectors"] = [(c, "forward") for c in d.connectors.values()]
    return step, parts


def _teacher_forward(name: str, work: Path, spec: dict):
    """(c) the teacher's forward as the distiller runs it: eval mode, no autograd."""
    from segdistill.paddle_env import paddle

    images, _ = harness.batch(work, spec)
    teacher = harness.teacher_model(work)
    teacher.eval()

    def step():
        with paddle.no_grad():
            out = teacher(images)
        return float(out[0][0, 0, 0, 0])

    return step, {"teacher_fwd": [(teacher, "forward")]}


def _paddleslim(name: str, work: Path, spec: dict):
    """(f), (f'): PaddleSlim's Distill with KLLoss on the head logits, teacher frozen only for (f')."""
    from paddleslim.dygraph.dist import Distill

    import segdistill.losses as seg_losses
    from segdistill.paddleseg_yaml import build_model, ignore_index

    sdic = _student_dic(work)
    ign = ignore_index(sdic)
    images, labels = harness.batch(work, spec)
    student = build_model(sdic, work / "student.yml")
    teacher = harness.teacher_model(work)
    teacher.eval()
    student.train()
    if name == "paddleslim_kl_frozen":
        for p in teacher.parameters():
            p.stop_gradient = True
    # The final logits come from F.interpolate, not a sublayer; an eval-mode teacher never routes functional
    # calls through PaddleSlim's wrappers, so the head's (pre-upsampling) logits are the hookable ones.
    cfg = [
        {
            "layers": [
                {"layers_name": ["head", "head"], "idx": [0, 0], "loss_function": "KLLoss", "weight": 3.0, "axis": 1}
            ]
        }
    ]
    # convert_fn=False: the name hook needs no functional wrappers, and with them any plain function calling
    # paddle.nn.functional (our cross_entropy) fails inside PaddleSlim's frame inspection.
    distill = Distill(cfg, student, teacher, convert_fn=False, return_model_outputs=True)
    opt, lr = _optimizer(sdic, distill.parameters(), work / "student.yml")

    def loss():
        dloss, s_out, _ = distill(images)
        return seg_losses.cross_entropy(s_out[0], labels, ignore_index=ign) + dloss

    return _minimizing(loss, opt, lr), {
        "student_fwd": [(student, "forward")],
        "teacher_fwd": [(teacher, "forward")],
        "ce": [(seg_losses, "cross_entropy")],
        "distill_losses": [(distill.distill_loss, "forward")],
        "optimizer": [(opt, "step"), (opt, "clear_grad")],
    }


BUILDERS = {
    "bare_student": _bare_student,
    "trainer_student": _trainer_step,
    "teacher_forward": _teacher_forward,
    "distill_kl": _trainer_step,
    "distill_kl_cwd": _trainer_step,
    "paddleslim_kl": _paddleslim,
    "paddleslim_kl_frozen": _paddleslim,
}


def _build_step(name: str, work: Path, spec: dict):
    """(step, parts) of configuration `name` (see BUILDERS), with every generator seeded alike first."""
    from segdistill.trainer import seed_everything

    if name not in BUILDERS:
        raise ValueError(f"unknown configuration {name!r}")
    seed_everything(spec["seed"])
    return BUILDERS[name](name, work, spec)


def _instrument(parts: dict, totals: dict) -> None:
    """Wrap every callable of every phase so that its wall time adds to totals[phase]; backward is one phase."""
    from segdistill.paddle_env import paddle

    parts = dict(parts, backward=[(paddle.Tensor, "backward")])
    for phase, targets in parts.items():
        totals.setdefault(phase, 0.0)
        for owner, key in targets:
            fn = owner[key] if isinstance(key, int) else getattr(owner, key)

            @functools.wraps(fn)  # keeps the attributes callers read (a loss's module_factory)
            def timed(*a, _fn=fn, _phase=phase, **k):
                t0 = time.perf_counter()
                try:
                    return _fn(*a, **k)
                finally:
                    totals[_phase] += time.perf_counter() - t0

            if isinstance(key, int):
                owner[key] = timed
            else:
                setattr(owner, key, timed)


def _breakdown(step, parts: dict, n: int) -> dict:
    """Median seconds per step of each phase over n extra steps; `other` is what no phase covers."""
    totals: dict = {}
    _instrument(parts, totals)
    per_step = []
    for _ in range(n):
        for k in totals:
            totals[k] = 0.0
        t0 = time.perf_counter()
        step()
        row = dict(totals)
        row["total"] = time.perf_counter() - t0
        row["other"] = row["total"] - sum(v for k, v in totals.items())
        per_step.append(row)
    return {k: round(statistics.median(r[k] for r in per_step), 5) for k in per_step[0]}


PAIRED = ["bare_student", "trainer_student", "teacher_forward", "distill_kl", "distill_kl_cwd"]


def _paired(work: Path, spec: dict) -> dict:
    """All step-time targets' parts in one process, stepped round-robin: the ratios then compare steps taken
    moments apart, which removes the drift between processes (several % here) from differences of a few %."""
    steps = {n: _build_step(n, work, spec)[0] for n in PAIRED}
    for _ in range(spec["warmup"]):
        for fn in steps.values():
            fn()
    times: dict = {n: [] for n in PAIRED}
    cpu: dict = {n: [] for n in PAIRED}
    for _ in range(spec["paired"]):
        for n, fn in steps.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            times[n].append(time.perf_counter() - t0)
            cpu[n].append(time.process_time() - c0)
    return {"step_times_s": times, "step_cpu_s": cpu}


def run_child(name: str, work: Path, result: Path) -> None:
    spec = json.loads((work / "spec.json").read_text())
    if name == "paired":
        harness.write_json(_paired(work, spec), result)
        return
    if name == "prepare":
        harness.write_json({"versions": harness.prepare(work, spec)}, result)
        return
    # Import what the configuration needs first, so its floor (runtime + libraries) is recorded apart; for the
    # segdistill configurations that floor (paddle, paddleseg, segdistill) is the runtime every process pays.
    import paddleseg  # noqa: F401

    import segdistill.distill  # noqa: F401
    import segdistill.trainer  # noqa: F401

    if name.startswith("paddleslim"):
        import paddleslim.dygraph.dist  # noqa: F401
    rss_imports = harness.maxrss_kb()
    step, parts = _build_step(name, work, spec)
    rss_built = harness.maxrss_kb()
    t0 = time.perf_counter()
    value = step()
    first = time.perf_counter() - t0
    for _ in range(max(0, spec["warmup"] - 1)):
        value = step()
    times, cpu = [], []
    for _ in range(spec["steps"]):
        c0, t0 = time.process_time(), time.perf_counter()
        value = step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    if value != value:  # NaN: the numbers would describe a broken run
        raise RuntimeError(f"{name}: the step returned NaN")
    out = {
        "step_times_s": times,
        "step_cpu_s": cpu,
        "first_step_s": first,
        "rss_imports_kb": rss_imports,
        "rss_built_kb": rss_built,
        "vmhwm_kb": harness.vmhwm_kb(),
    }
    # After the timed steps, so the wrappers never touch the headline numbers.
    if spec.get("breakdown"):
        out["breakdown_s"] = _breakdown(step, parts, spec["breakdown"])
    harness.write_json(out, result)


# ---------------------------------------------------------------------------------------------------------------
# parent side: stdlib only
# ---------------------------------------------------------------------------------------------------------------


def _wait_quiet(max_busy: float, patience: float) -> float:
    """Wait up to `patience` seconds for other programs' CPU use to drop to `max_busy`; returns the last sample."""
    deadline = time.monotonic() + patience
    busy = harness.cpu_busy()
    while busy > max_busy and time.monotonic() < deadline:
        busy = harness.cpu_busy(2.0)
    return busy


def _run(tasks: list[tuple[str, str]], work: Path, args) -> list[dict]:
    """Run (name, tag) children, at most args.jobs at a time; results in task order."""
    out: list[dict | None] = [None] * len(tasks)
    running: list[tuple[int, harness.Child, float]] = []
    pending = list(enumerate(tasks))
    try:
        while pending or running:
            while pending and len(running) < args.jobs:
                i, (name, tag) = pending.pop(0)
                busy = _wait_quiet(args.max_busy, args.patience) if args.jobs == 1 else float("nan")
                running.append((i, harness.Child(__file__, name, work, args.timeout, tag), busy))
            time.sleep(0.05)
            for item in list(running):
                i, child, busy = item
                if child.done():
                    running.remove(item)
                    res = json.loads(child.result.read_text())
                    out[i] = {"result": res, "maxrss_kb": child.maxrss_kb, "background_busy": busy}
                    if isinstance(res.get("step_times_s"), list) and res["step_times_s"]:
                        print(
                            f"{child.name}{tasks[i][1]}: median {statistics.median(res['step_times_s']):.3f} s, "
                            f"peak RSS {_mb(child.maxrss_kb):.0f} MB, background CPU {busy}",
                            file=sys.stderr,
                            flush=True,
                        )
    finally:
        for _, child, _ in running:
            child.kill()
    return out


def _mb(kb: float) -> float:
    return round(kb / 1024.0, 1)


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _ratio(value: float, limit_base: float, limit: float) -> dict:
    r = value / limit_base
    return {"ratio": round(r, 4), "limit": limit, "met": r <= limit}


def summarise(runs: dict, runtime_kb: float) -> tuple[dict, dict]:
    confs = {}
    for name, rounds in runs.items():
        times = [t for r in rounds for t in r["result"]["step_times_s"]]
        peaks = [r["maxrss_kb"] for r in rounds]
        confs[name] = {
            "description": CONFIGS[name],
            "median_step_s": round(statistics.median(times), 5),
            "round_medians_s": [round(statistics.median(r["result"]["step_times_s"]), 5) for r in rounds],
            "min_step_s": round(min(times), 5),
            # CPU seconds (all threads) per step: less sensitive than wall time to other programs' load.
            "median_step_cpu_s": round(statistics.median(t for r in rounds for t in r["result"]["step_cpu_s"]), 5),
            "background_busy": [r["background_busy"] for r in rounds],
            "first_step_s": round(statistics.median(r["result"]["first_step_s"] for r in rounds), 5),
            "peak_rss_mb": _mb(statistics.median(peaks)),
            "peak_rss_mb_rounds": [_mb(p) for p in peaks],
            "peak_rss_net_mb": _mb(statistics.median(peaks) - runtime_kb),
            "rss_after_imports_mb": _mb(statistics.median(r["result"]["rss_imports_kb"] for r in rounds)),
            "rss_after_build_mb": _mb(statistics.median(r["result"]["rss_built_kb"] for r in rounds)),
            "vmhwm_mb": _mb(statistics.median(r["result"]["vmhwm_kb"] for r in rounds)),
            **(
                {"breakdown_s": _median_dicts([r["result"]["breakdown_s"] for r in rounds])}
                if "breakdown_s" in rounds[0]["result"]
                else {}
            ),
            "step_times_s": [round(t, 5) for t in times],
        }
    step = {k: v["median_step_s"] for k, v in confs.items()}
    cpu = {k: v["median_step_cpu_s"] for k, v in confs.items()}
    rss = {k: v["peak_rss_mb"] for k, v in confs.items()}
    net = {k: v["peak_rss_net_mb"] for k, v in confs.items()}
    ratios = {}
    # With --only some ratios lack their parts; those are left out.
    parts = "trainer_student" in confs and "teacher_forward" in confs
    for d in ("distill_kl", "distill_kl_cwd"):
        if d not in confs:
            continue
        if parts:
            ratios[f"{d}_step_vs_student_plus_teacher"] = _ratio(
                step[d], step["trainer_student"] + step["teacher_forward"], TARGET_STEP
            )
            # The same on CPU seconds: robust when other programs share the machine.
            ratios[f"{d}_cpu_vs_student_plus_teacher"] = _ratio(
                cpu[d], cpu["trainer_student"] + cpu["teacher_forward"], TARGET_STEP
            )
            ratios[f"{d}_rss_vs_student_plus_teacher"] = _ratio(
                rss[d], rss["trainer_student"] + rss["teacher_forward"], TARGET_RSS
            )
            ratios[f"{d}_rss_net_vs_student_plus_teacher_net"] = _ratio(
                net[d], net["trainer_student"] + net["teacher_forward"], TARGET_RSS
            )
        for ps in ("paddleslim_kl", "paddleslim_kl_frozen"):
            if ps in confs:
                ratios[f"{d}_rss_vs_{ps}"] = _ratio(rss[d], rss[ps], 1.0)
                ratios[f"{d}_step_vs_{ps}"] = {"ratio": round(step[d] / step[ps], 4), "limit": None, "met": None}
    if "trainer_student" in confs and "bare_student" in confs:
        ratios["trainer_step_vs_bare_loop"] = _ratio(step["trainer_student"], step["bare_student"], TARGET_TRAINER)
        ratios["trainer_cpu_vs_bare_loop"] = _ratio(cpu["trainer_student"], cpu["bare_student"], TARGET_TRAINER)
    return confs, ratios


def summarise_paired(res: dict) -> dict:
    """Ratios as the median over cycles of the per-cycle ratio: steps of one cycle ran seconds apart, so a burst
    of other programs' load mostly hits numerator and denominator alike."""
    out = {
        "median_step_s": {n: round(statistics.median(t), 5) for n, t in res["step_times_s"].items()},
        "median_step_cpu_s": {n: round(statistics.median(t), 5) for n, t in res["step_cpu_s"].items()},
        "ratios": {},
    }
    for clock, key in (("step", "step_times_s"), ("cpu", "step_cpu_s")):
        t = res[key]
        parts = [s_ + c_ for s_, c_ in zip(t["trainer_student"], t["teacher_forward"])]
        pairs = {
            f"trainer_{clock}_vs_bare_loop": (t["trainer_student"], t["bare_student"], TARGET_TRAINER),
            f"distill_kl_{clock}_vs_student_plus_teacher": (t["distill_kl"], parts, TARGET_STEP),
            f"distill_kl_cwd_{clock}_vs_student_plus_teacher": (t["distill_kl_cwd"], parts, TARGET_STEP),
        }
        for name, (num, den, limit) in pairs.items():
            r = statistics.median(a / b for a, b in zip(num, den))
            out["ratios"][name] = {"ratio": round(r, 4), "limit": limit, "met": r <= limit}
    out["step_times_s"] = {n: [round(x, 5) for x in t] for n, t in res["step_times_s"].items()}
    out["step_cpu_s"] = {n: [round(x, 5) for x in t] for n, t in res["step_cpu_s"].items()}
    return out


def _median_dicts(rows: list[dict]) -> dict:
    return {k: round(statistics.median(r[k] for r in rows), 5) for k in rows[0]}


def format_table(report: dict) -> str:
    s = report["settings"]
    lines = [
        f"size {s['size']}x{s['size']}, batch {s['batch']}, {s['steps']} timed steps x {s['rounds']} rounds "
        f"(+{s['warmup']} warm-up), {report['machine']['cpus']} CPUs"
    ]
    if not s["timings_valid"]:
        lines.append(f"WARNING: {s['jobs']} children ran at once; the times below are not valid measurements")
    lines += [
        "",
        "| configuration | median step (s) | round medians (s) | CPU per step (s) | first step (s) "
        "| RSS after imports / after build (MB) | peak RSS (MB) | peak net of runtime (MB) |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in report["configurations"].values():
        rm = " / ".join(f"{x:.3f}" for x in c["round_medians_s"])
        lines.append(
            f"| {c['description']} | {c['median_step_s']:.3f} | {rm} | {c['median_step_cpu_s']:.3f} | "
            f"{c['first_step_s']:.3f} | {c['rss_after_imports_mb']:.0f} / {c['rss_after_build_mb']:.0f} | "
            f"{c['peak_rss_mb']:.0f} | {c['peak_rss_net_mb']:.0f} |"
        )
    lines.append(
        f"| runtime: paddle, paddleseg, segdistill imported, nothing built | | | | | | "
        f"{report['reference']['runtime_peak_rss_mb']:.0f} | 0 |"
    )
    phases = [
        "teacher_fwd",
        "student_fwd",
        "ce",
        "distill_losses",
        "connectors",
        "backward",
        "optimizer",
        "other",
        "total",
    ]
    rows = {n: c["breakdown_s"] for n, c in report["configurations"].items() if "breakdown_s" in c}
    if rows:
        lines += [
            "",
            "phase breakdown, median seconds per step (separate, instrumented steps):",
            "",
            "| configuration | " + " | ".join(phases) + " |",
            "| --- |" + " ---: |" * len(phases),
        ]
        for n, b in rows.items():
            lines.append(f"| {n} | " + " | ".join(f"{b[k]:.3f}" if k in b else "" for k in phases) + " |")
    lines += ["", "| ratio | measured | target | met |", "| --- | ---: | ---: | --- |"]
    ratios = dict(report["ratios"])
    if report.get("paired"):
        ratios.update({f"paired: {k}": v for k, v in report["paired"]["ratios"].items()})
    for key, r in ratios.items():
        limit = "" if r["limit"] is None else f"<= {r['limit']:.2f}"
        met = "" if r["met"] is None else ("yes" if r["met"] else "NO")
        lines.append(f"| {key} | {r['ratio']:.3f} | {limit} | {met} |")
    if report.get("paired"):
        med = report["paired"]["median_step_s"]
        cpu = report["paired"]["median_step_cpu_s"]
        lines += [
            "",
            f"paired (one process, round-robin, {s['paired']} cycles), median step wall / CPU (s): "
            + ", ".join(f"{n} {v:.3f} / {cpu[n]:.3f}" for n, v in med.items()),
        ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=64, help="image side in pixels (configs are resized to it)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=20, help="timed steps per configuration and round")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (the first one is reported apart)")
    p.add_argument("--rounds", type=int, default=3, help="fresh processes per configuration, interleaved")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher-config", default=str(harness.DEFAULT_TEACHER))
    p.add_argument("--student-config", default=str(harness.DEFAULT_STUDENT))
    p.add_argument("--only", nargs="+", choices=list(CONFIGS), help="run only these configurations")
    p.add_argument("--timeout", type=float, default=900, help="seconds allowed per child process")
    p.add_argument("--out", default="bench_distill_step.json", help="JSON report path")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="children at once; >1 only for a quick functional check (timings then interfere)",
    )
    p.add_argument(
        "--max-busy",
        type=float,
        default=0.15,
        help="before each child, wait for other programs' CPU use to drop to this fraction",
    )
    p.add_argument("--patience", type=float, default=60, help="at most this many seconds of that wait per child")
    p.add_argument(
        "--breakdown",
        type=int,
        default=6,
        metavar="N",
        help="after the timed steps, N more steps timing each phase (forward, losses, backward, ...)",
    )
    p.add_argument(
        "--paired",
        type=int,
        default=30,
        metavar="N",
        help="also step (a)-(e) round-robin in one process for N cycles (drift-free step ratios)",
    )
    p.add_argument("--keep-work", action="store_true", help="keep the temporary folder (configs, logs)")
    args = harness.parse_or_run_child(p, argv, run_child)
    if args is None:
        return 0

    for key in ("teacher_config", "student_config"):
        if not Path(getattr(args, key)).is_file():
            p.error(f"--{key.replace('_', '-')}: file not found: {getattr(args, key)}")
    if min(args.steps, args.warmup, args.rounds, args.batch, args.jobs) < 1 or args.size < 16:
        p.error("--steps, --warmup, --rounds, --batch, --jobs must be >= 1 and --size >= 16")
    needed = [n for n in CONFIGS if n in (args.only or CONFIGS)]
    spec = {
        "size": args.size,
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "seed": args.seed,
        "breakdown": args.breakdown,
        "paired": args.paired,
        "teacher_config": str(Path(args.teacher_config).resolve()),
        "student_config": str(Path(args.student_config).resolve()),
    }
    work = Path(tempfile.mkdtemp(prefix="segdistill-bench-"))
    started = time.time()
    load_before = _loadavg()
    try:
        harness.write_json(spec, work / "spec.json")
        prep = _run([("prepare", "")], work, args)[0]["result"]
        tasks = []
        for r in range(args.rounds):
            # Rotate the order so that no configuration always runs first or last in a round.
            k = r % len(needed)
            tasks += [(name, f"_{r}") for name in needed[k:] + needed[:k]]
        if args.paired:
            tasks.append(("paired", ""))
        done = _run(tasks, work, args)
        floors = [d["result"]["rss_imports_kb"] for (n, _), d in zip(tasks, done) if n in CONFIGS]
        lean = [
            d["result"]["rss_imports_kb"]
            for (n, _), d in zip(tasks, done)
            if n in CONFIGS and not n.startswith("paddleslim")
        ]
        runtime_kb = statistics.median(lean or floors)
        runs = {n: [d for (m, _), d in zip(tasks, done) if m == n] for n in needed}
        confs, ratios = summarise(runs, runtime_kb)
        paired = summarise_paired(done[-1]["result"]) if args.paired else None
    finally:
        if args.keep_work:
            print(f"work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report = {
        "settings": {
            **spec,
            "rounds": args.rounds,
            "jobs": args.jobs,
            "timings_valid": args.jobs == 1,
            "feature_pairs": [list(fp) for fp in FEATURE_PAIRS],
            "command": " ".join([Path(sys.executable).name, "bench/distill_step.py", *(argv or sys.argv[1:])]),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            **prep["versions"],
            "loadavg_before": load_before,
            "loadavg_after": _loadavg(),
            "wall_s": round(time.time() - started, 1),
        },
        "reference": {"runtime_peak_rss_mb": _mb(runtime_kb)},
        "configurations": confs,
        "ratios": ratios,
        "paired": paired,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    harness.write_json(report, out)
    print(format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
