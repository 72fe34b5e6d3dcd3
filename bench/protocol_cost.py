"""What each PaddleSeg evaluation protocol (test_config) costs, relative to plain evaluation.

Times `segdistill.protocol.batch_logits` (what every evaluation runs) on the default study's student
(config/paddleseg/cpu/deeplabv3p_resnet18_os16_synthetic_64x64_student.yml, freshly initialised: the time
does not depend on the weights) over `--images` images of its input size, `--batch` forwards at once, under:

| name | test_config |
| --- | --- |
| plain | {} |
| slide | is_slide, crop 3/4 of the side, stride 1/2 (4 windows an image, SegFormer's proportions) |
| scale_0.5 | aug_eval, scales 0.5 (PP-LiteSeg's Cityscapes recipes) |
| scales_flip | aug_eval, scales [0.75, 1.0, 1.25], flip_horizontal |
| flips_slide | aug_eval, flip_horizontal, flip_vertical, and slide's windows |

and `windows`: the model's forwards over slide's windows alone (the same crops in the same batches, nothing
summed), the floor of the sliding window's cost. The protocols take turns within every round (loaded
machine: a burst of load slows them all alike); wall and process CPU times, their medians over rounds and the
medians of the per-round ratios are printed as Markdown and written to `--out` (JSON) with every time.

    PYTHONPATH=src .venv/bin/python bench/protocol_cost.py --images 32 --batch 16 --rounds 15 --out protocol_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

from segdistill.paddle_env import paddle

from segdistill.models import input_size, load_trained
from segdistill.protocol import Protocol, batch_logits, windows

CONFIG = "config/paddleseg/cpu/deeplabv3p_resnet18_os16_synthetic_64x64_student.yml"


def protocols(h: int, w: int) -> dict[str, Protocol]:
    slide = {"is_slide": True, "crop_size": [w * 3 // 4, h * 3 // 4], "stride": [w // 2, h // 2]}
    configs = {
        "plain": {},
        "slide": slide,
        "scale_0.5": {"aug_eval": True, "scales": 0.5},
        "scales_flip": {"aug_eval": True, "scales": [0.75, 1.0, 1.25], "flip_horizontal": True},
        "flips_slide": {"aug_eval": True, "flip_horizontal": True, "flip_vertical": True, **slide},
    }
    return {name: Protocol.parse(c, name) for name, c in configs.items()}


def windows_forward(model, images, protocol: Protocol, batch: int):
    """The model's forwards over the protocol's windows only, batched as batch_logits batches them."""
    n, _, h, w = images.shape
    wins = windows(h, w, protocol.crop_size, protocol.stride)
    jobs = [(j, k) for j in range(len(wins)) for k in range(n)]
    for start in range(0, len(jobs), batch):
        crops = [
            images[k : k + 1, :, wins[j][0] : wins[j][1], wins[j][2] : wins[j][3]]
            for j, k in jobs[start : start + batch]
        ]
        model(paddle.concat(crops))


# Wall time, and the process's CPU time (all its threads): on a machine other processes load, the CPU time of
# the same work moves much less than its wall time.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _stats(times: dict, name: str) -> dict:
    """Median time, and the median over rounds of the ratio to plain within the round (seconds apart: the
    load's drift between rounds cancels)."""
    return {
        "median": statistics.median(times[name]),
        "x_plain": statistics.median(a / b for a, b in zip(times[name], times["plain"])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=CONFIG)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16, help="evaluate.batch_size (the default study's)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    paddle.seed(0)
    model, dic = load_trained(args.config)
    h, w = input_size(dic, args.config)
    images = paddle.rand([args.images, 3, h, w])
    protos = protocols(h, w)
    runs = {name: (lambda p=p: batch_logits(model, images, p, batch_size=args.batch)) for name, p in protos.items()}
    runs["windows"] = lambda: windows_forward(model, images, protos["slide"], args.batch)
    times = {clock: {name: [] for name in runs} for clock in CLOCKS}
    with paddle.no_grad():
        for r in range(args.warmup + args.rounds):
            for name, run in runs.items():
                t0 = {clock: f() for clock, f in CLOCKS.items()}
                run()
                if r >= args.warmup:
                    for clock, f in CLOCKS.items():
                        times[clock][name].append(f() - t0[clock])
    print(f"{args.images} images of {h}x{w}, batch {args.batch}, {args.rounds} rounds (median s per round)\n")
    print("| protocol | label | forwards per image | wall s | x plain (wall) | CPU s | x plain (CPU) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    per = {
        n: len(p.views()) * (len(windows(h, w, p.crop_size, p.stride)) if p.is_slide else 1) for n, p in protos.items()
    }
    labels = {**{n: p.label() for n, p in protos.items()}, "windows": "slide's forwards only"}
    per["windows"] = per["slide"]
    summary = {}
    for name in runs:
        summary[name] = {clock: _stats(times[clock], name) for clock in CLOCKS}
        wall, cpu = summary[name]["wall"], summary[name]["cpu"]
        cells = [name, labels[name], per[name], f"{wall['median']:.3f}", f"{wall['x_plain']:.2f}"]
        cells += [f"{cpu['median']:.3f}", f"{cpu['x_plain']:.2f}"]
        print("| " + " | ".join(map(str, cells)) + " |")
    over = {clock: statistics.median(a / b for a, b in zip(t["slide"], t["windows"])) for clock, t in times.items()}
    print(f"\nslide / its windows' forwards: wall {over['wall']:.3f}, CPU {over['cpu']:.3f} (target <= 1.1)")
    if args.out:
        record = {
            "args": vars(args),
            "input": [h, w],
            "summary": summary,
            "slide_over_windows": over,
            "times_s": times,
            "load": os.getloadavg(),
            "cpus": os.cpu_count(),
            "paddle": paddle.__version__,
            "machine": platform.platform(),
        }
        with open(args.out, "w") as fh:
            json.dump(record, fh, indent=1)


if __name__ == "__main__":
    main()
