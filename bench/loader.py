"""Data loader throughput vs what a training step consumes.

Images/s that segdistill's keyed stream delivers with the optic-disc configs' training transforms (512x512:
Resize, RandomHorizontalFlip, Normalize) on synthetic 512x512 JPEG/PNG pairs, with 0 (in-process), 1 and 2 worker
processes, next to the images/s a ResNet18_vd DeepLabV3P student step consumes at 512x512, batch 4, on this
machine. The loader keeps a device busy when its images/s exceed the step's.

    python bench/loader.py --iters 40 --step-steps 2 --out loader.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ROOT / "config/paddleseg/optic_disc/deeplabv3p_resnet18_os8_optic_disc_512x512_1k_student.yml"


def _dic(data_root: Path, batch: int):
    from segdistill.paddleseg_yaml import experiment_dict

    # The backbone's pretrained weights do not change the step time; leave the URL out (no download).
    return experiment_dict(STUDENT, data_root=str(data_root), batch_size=batch, pretrained_backbone=False)


def loader_rate(data_root: Path, batch: int, iters: int, workers: int) -> dict:
    from segdistill.data.stream import KeyedStream
    from segdistill.paddleseg_yaml import build

    dic = _dic(data_root, batch)
    stream = KeyedStream(build(dic, STUDENT).train_dataset, batch, seed=0, num_classes=2)
    it = stream.loader(1, iters + 2, workers)
    next(it), next(it)  # start-up (worker processes) is not throughput
    t0 = time.perf_counter()
    n = 0
    for images, _ in it:
        n += images.shape[0]
    wall = time.perf_counter() - t0
    return {"workers": workers, "images": n, "seconds": wall, "images_per_s": n / wall}


def step_rate(data_root: Path, batch: int, steps: int) -> dict:
    """A student training step (forward, CE, backward, optimizer) at 512x512 as the trainer runs it."""
    from segdistill.paddle_env import paddle

    from segdistill.data.stream import KeyedStream
    from segdistill.paddleseg_yaml import build
    from segdistill.trainer import Trainer, TrainSpec

    trainer = Trainer(
        TrainSpec(
            config=str(STUDENT),
            save_dir=tempfile.mkdtemp(),
            data_root=str(data_root),
            batch_size=batch,
            pretrained_backbone=False,
            do_eval=False,
        ),
        log=lambda m: None,
    )
    stream = KeyedStream(build(_dic(data_root, batch), STUDENT).train_dataset, batch, seed=0)
    images, labels = (paddle.to_tensor(a) for a in stream.batch(1))
    trainer.student_side.train()
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        trainer._step(images, labels)
        if i:  # the first step includes one-off set-up
            times.append(time.perf_counter() - t0)
    med = sorted(times)[len(times) // 2]
    return {"steps": steps, "step_seconds": times, "median_s": med, "images_per_s": batch / med}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=40, help="timed loader iterations per worker count")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--images", type=int, default=60, help="synthetic 512x512 images to generate")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--step-steps", type=int, default=2, help="timed student steps (0: skip)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from segdistill.data import generate

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synthetic512"
        generate(data, num_images=args.images, size=512, seed=0)
        rows = [loader_rate(data, args.batch, args.iters, w) for w in args.workers]
        step = step_rate(data, args.batch, args.step_steps) if args.step_steps else None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"512x512, batch {args.batch}, optic-disc student transforms, {args.iters} timed iterations, "
        f"{cpus} CPUs ({platform.processor() or platform.machine()})"
    )
    print("| loader | images/s | s per batch |")
    print("| --- | ---: | ---: |")
    for r in rows:
        name = "in-process (0 workers)" if r["workers"] == 0 else f"{r['workers']} worker(s)"
        print(f"| {name} | {r['images_per_s']:.1f} | {args.batch / r['images_per_s']:.3f} |")
    if step:
        print(
            f"| student step consumes (ResNet18_vd DeepLabV3P, CPU, median of {step['steps']}) | "
            f"{step['images_per_s']:.2f} | {step['median_s']:.2f} |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"loader": rows, "step": step, "cpus": cpus}, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main())
