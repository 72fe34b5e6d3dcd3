#!/usr/bin/env python
"""Teacher-cache benchmark: a distill step reading cached teacher outputs against a student step alone.

paired      student Trainer.step (no teacher), KL distill step with cached teacher outputs (float16), and KL
            distill step with the online teacher, stepped round-robin in one process on the same iterations
            (drift-free ratios, as bench/distill_step.py --paired)
rss         peak RSS of a process doing N steps of each (student / cached KL / online KL), each in its own child
            (ru_maxrss from wait4)
bytes       cache bytes per training image (from the teacher's tensor shapes, see segdistill.distill.cache) at
            the default CPU configs (64x64) and the optic-disc configs (512x512), for KL on logits and for
            KL + CWD on head.aspp

  python bench/teacher_cache.py --size 64 --batch 4 --paired 30 --warmup 3 --rss_steps 20 --out bench_cache.json
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

import harness  # the same prepared configs, data and teacher as the distill step benchmark

ROOT = harness.ROOT

TARGET = 1.10  # cached distill step <= 1.10 x student step; peak RSS likewise
KL = [{"name": "kl", "loss": "kl", "weight": 3.0}]
CONFIGS = ("student", "cached_kl", "online_kl")
BYTES_CONFIGS = {
    "cpu 64x64": ("config/paddleseg/cpu/deeplabv3p_resnet50_os8_synthetic_64x64_teacher.yml", 64),
    "optic disc 512x512": (
        "config/paddleseg/optic_disc/deeplabv3p_resnet50_os8_optic_disc_512x512_1k_teacher.yml",
        512,
    ),
}


# -- child side -------------------------------------------------------------------------------------------------


def _trainer(work: Path, spec: dict, name: str):
    terms = None if name == "student" else KL
    cache = work / "cache" if name == "cached_kl" else None
    return harness.work_trainer(work, spec, terms, f"run_{name}", spec["iters"], cache)


def _batches(trainer, n: int):
    from segdistill.paddle_env import paddle

    return [tuple(map(paddle.to_tensor, trainer.stream.batch(it))) for it in range(1, n + 1)]


def child_prepare(work: Path, spec: dict) -> dict:
    from segdistill.distill.cache import write_teacher_outputs
    from segdistill.specs import TeacherOutputsSpec

    versions = harness.prepare(work, spec)
    (work / "kl.yml").write_text(json.dumps({"terms": KL}))
    write_teacher_outputs(
        TeacherOutputsSpec(
            config=str(work / "student.yml"),
            teacher_config=str(work / "teacher_patched.yml"),
            distill=[str(work / "kl.yml")],
            out=str(work / "cache"),
            data_seed=spec["seed"],
            data_root=str(work / "data"),
            iters=spec["iters"],
            batch_size=spec["batch"],
            dtype="float16",
        ),
        log=lambda m: None,
    )
    return {"versions": versions, "manifest": json.loads((work / "cache/manifest.json").read_text())}


def child_paired(work: Path, spec: dict) -> dict:
    trainers = {n: _trainer(work, spec, n) for n in CONFIGS}
    batches = _batches(trainers["student"], spec["iters"])
    times = {n: [] for n in CONFIGS}
    for cycle in range(spec["warmup"] + spec["paired"]):
        it = cycle % spec["iters"] + 1
        images, labels = batches[it - 1]
        for n, t in trainers.items():
            t0 = time.perf_counter()
            loss, _ = t.step(images, labels, it)
            float(loss)
            if cycle >= spec["warmup"]:
                times[n].append(time.perf_counter() - t0)
    return {"step_times_s": times}


def child_rss(work: Path, spec: dict, name: str) -> dict:
    t = _trainer(work, spec, name)
    batches = _batches(t, min(spec["iters"], spec["rss_steps"]))
    t0 = time.perf_counter()
    for i in range(spec["rss_steps"]):
        it = i % len(batches) + 1
        float(t.step(*batches[it - 1], it)[0])
    return {"seconds": time.perf_counter() - t0}


def child_bytes(spec: dict) -> dict:
    """Bytes per image of each stored tensor, from a forward of an untrained teacher on one image."""
    from segdistill.paddle_env import paddle

    import numpy as np

    from segdistill.distill.cache import logits_rule
    from segdistill.distill.recorder import Recorder
    from segdistill.paddleseg_yaml import build_model, experiment_dict

    out = {}
    for label, (config, size) in BYTES_CONFIGS.items():
        dic = experiment_dict(ROOT / config, pretrained_backbone=False, resolve_backbone=False)
        dic["model"]["pretrained"] = None
        model = build_model(dic, config)
        model.eval()
        x = paddle.zeros([1, 3, size, size])
        rule = logits_rule(model, x)
        with paddle.no_grad(), Recorder(model, ["head", "head.aspp"]) as rec:
            full = model(x)[0]
        shapes = {
            "logits (stored)": list(rec["head"].shape[1:]) if rule else list(full.shape[1:]),
            "logits (full size)": list(full.shape[1:]),
            "head.aspp": list(rec["head.aspp"].shape[1:]),
        }
        elems = {k: int(np.prod(v)) for k, v in shapes.items()}
        out[label] = {
            "shapes": shapes,
            "pre_upsample": bool(rule),
            "bytes_per_image": {
                dt: {
                    "kl": elems["logits (stored)"] * b,
                    "kl_cwd_aspp": (elems["logits (stored)"] + elems["head.aspp"]) * b,
                    "kl_full_size_logits": elems["logits (full size)"] * b,
                }
                for dt, b in (("float16", 2), ("bfloat16", 2), ("float32", 4))
            },
        }
    return out


def run_child(name: str, work: Path, result: Path) -> None:
    spec = json.loads((work / "spec.json").read_text())
    if name == "prepare":
        out = child_prepare(work, spec)
    elif name == "paired":
        out = child_paired(work, spec)
    elif name == "bytes":
        out = child_bytes(spec)
    else:
        out = child_rss(work, spec, name.removeprefix("rss_"))
    harness.write_json(out, result)


# -- parent side: stdlib only (a parent holding paddle would raise every child's ru_maxrss floor) ----------------


def _child(name: str, work: Path, timeout: float) -> tuple[dict, int]:
    """Run one child; (its result, its peak RSS in kB from wait4)."""
    return harness.run_child_script(__file__, name, work, timeout)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iters", type=int, default=20, help="iterations of the cache (steps cycle over them)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--paired", type=int, default=30, help="round-robin cycles")
    ap.add_argument("--rss_steps", type=int, default=20)
    ap.add_argument("--student_config", default=str(harness.DEFAULT_STUDENT))
    ap.add_argument("--teacher_config", default=str(harness.DEFAULT_TEACHER))
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--out", default="-")
    args = harness.parse_or_run_child(ap, argv, run_child)
    if args is None:
        return 0
    spec = {
        "size": args.size,
        "batch": args.batch,
        "seed": args.seed,
        "iters": args.iters,
        "warmup": args.warmup,
        "paired": args.paired,
        "rss_steps": args.rss_steps,
        "student_config": args.student_config,
        "teacher_config": args.teacher_config,
    }
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_cache_") as tmp:
        work = Path(tmp)
        harness.write_json(spec, work / "spec.json")
        prep, _ = _child("prepare", work, args.timeout)
        paired, _ = _child("paired", work, args.timeout)
        rss = {n: _child(f"rss_{n}", work, args.timeout)[1] / 1024.0 for n in CONFIGS}
        nbytes, _ = _child("bytes", work, args.timeout)
    med = {n: statistics.median(v) for n, v in paired["step_times_s"].items()}
    per_cycle = [c / s for c, s in zip(paired["step_times_s"]["cached_kl"], paired["step_times_s"]["student"])]
    report = {
        "spec": spec,
        "versions": prep["versions"],
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "paired_median_step_s": {n: round(v, 4) for n, v in med.items()},
        "cached_kl_vs_student": round(med["cached_kl"] / med["student"], 3),
        "cached_kl_vs_student_median_of_cycles": round(statistics.median(per_cycle), 3),
        "online_kl_vs_student": round(med["online_kl"] / med["student"], 3),
        "peak_rss_mb": {n: round(v, 1) for n, v in rss.items()},
        "rss_cached_kl_vs_student": round(rss["cached_kl"] / rss["student"], 3),
        "rss_online_kl_vs_student": round(rss["online_kl"] / rss["student"], 3),
        "cache_bytes": prep["manifest"]["bytes"],
        "bytes_per_image": nbytes,
        "target": TARGET,
    }
    report["met"] = {
        "step": report["cached_kl_vs_student"] <= TARGET,
        "rss": report["rss_cached_kl_vs_student"] <= TARGET,
    }
    text = json.dumps(report, indent=2)
    if args.out == "-":
        print(text)
    else:
        Path(args.out).write_text(text + "\n")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
