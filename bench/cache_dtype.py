#!/usr/bin/env python
"""What the cache's dtype does to a distilled run: online teacher vs cached float32 / float16 / bfloat16.

Trains the test-sized teacher (tests/configs/teacher_tiny.yml, 32x32) for --teacher_iters on a generated set,
then distils the test-sized student with KL on logits + CWD on head.aspp for --iters, once per teacher source,
same seed; prints best mIoU (val), the largest relative difference of every train-log column from the online
run, and whether weights are bit-identical to online.

    python bench/cache_dtype.py --teacher_iters 60 --iters 60 --out cache_dtype.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TERMS = [
    {"name": "kl", "loss": "kl", "weight": 3.0},
    {
        "name": "cwd_aspp",
        "student": "head.aspp",
        "teacher": "head.aspp",
        "loss": "cwd",
        "weight": 3.0,
        "temperature": 4.0,
    },
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher_iters", type=int, default=60)
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num_images", type=int, default=60)
    ap.add_argument("--out", default="-")
    args = ap.parse_args(argv)

    from segdistill.paddle_env import paddle

    import numpy as np
    import pandas as pd

    from segdistill.data import generate
    from segdistill.distill.cache import write_teacher_outputs
    from segdistill.paddleseg_yaml import patch_teacher
    from segdistill.specs import TeacherOutputsSpec
    from segdistill.trainer import Trainer, TrainSpec

    student, teacher = ROOT / "tests/configs/student_tiny.yml", ROOT / "tests/configs/teacher_tiny.yml"
    quiet = {"log": lambda m: None}
    with tempfile.TemporaryDirectory(prefix="cache_dtype_") as tmp:
        tmp = Path(tmp)
        generate(tmp / "data", num_images=args.num_images, size=32, seed=0)
        t_summary = Trainer(
            TrainSpec(
                config=str(teacher),
                save_dir=str(tmp / "teacher"),
                data_root=str(tmp / "data"),
                iters=args.teacher_iters,
                save_interval=args.teacher_iters,
            ),
            **quiet,
        ).run()
        patch_teacher(teacher, tmp / "teacher/best_model/model.pdparams", tmp / "teacher.yml")
        (tmp / "terms.yml").write_text(json.dumps({"terms": TERMS}))
        runs = {}
        for source in ("online", "float32", "float16", "bfloat16"):
            kw = {}
            if source != "online":
                write_teacher_outputs(
                    TeacherOutputsSpec(
                        config=str(student),
                        teacher_config=str(tmp / "teacher.yml"),
                        distill=[str(tmp / "terms.yml")],
                        out=str(tmp / f"cache_{source}"),
                        data_seed=args.seed,
                        data_root=str(tmp / "data"),
                        iters=args.iters,
                        dtype=source,
                    ),
                    log=lambda m: None,
                )
                kw["teacher_outputs"] = str(tmp / f"cache_{source}")
            save = tmp / f"run_{source}"
            summary = Trainer(
                TrainSpec(
                    config=str(student),
                    save_dir=str(save),
                    data_root=str(tmp / "data"),
                    seed=args.seed,
                    iters=args.iters,
                    save_interval=max(1, args.iters // 4),
                    log_iters=1,
                    teacher_config=str(tmp / "teacher.yml"),
                    distill_terms=TERMS,
                    **kw,
                ),
                **quiet,
            ).run()
            runs[source] = {
                "best_miou": summary["best_miou"],
                "log": pd.read_csv(save / "train_log.csv"),
                "weights": {k: v.numpy() for k, v in paddle.load(str(save / "best_model/model.pdparams")).items()},
            }
        ref = runs["online"]
        report = {"settings": vars(args), "teacher_best_miou": round(t_summary["best_miou"], 5), "runs": {}}
        for source, r in runs.items():
            cols = [c for c in r["log"].columns if c not in ("iter", "lr")]
            report["runs"][source] = {
                "best_miou": round(r["best_miou"], 5),
                "miou_minus_online_points": round(100 * (r["best_miou"] - ref["best_miou"]), 3),
                "max_rel_diff_vs_online": {
                    c: float(np.max(np.abs(r["log"][c] - ref["log"][c]) / np.maximum(np.abs(ref["log"][c]), 1e-12)))
                    for c in cols
                },
                "weights_bit_identical_to_online": all(
                    r["weights"][k].tobytes() == ref["weights"][k].tobytes() for k in ref["weights"]
                ),
            }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out != "-":
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
