"""Images per second of `segdistill predict` against a bare paddle.inference loop over the same images.

For each size, the default study's student YAML with its val Resize set to that size is exported (random weights:
speed does not depend on their values) and a synthetic set of that size is generated. Then, in one process:

- `predict`: segdistill.predict.predict_all on the exported folder (every image decoded once as a check, then
  read, PaddleSeg's val transforms, the forward through paddle.inference, evaluation's resize and argmax, the
  palette PNG and the overlay written whole);
- `bare`: the loop a deployment script would write: cv2.imread, resize, normalise, the same predictor
  configuration (oneDNN as predict found it, no memory optimisation, the same threads), numpy argmax, PIL
  palette PNG saved;
- `predict_weights` (--weights): predict_all from the YAML and .pdparams (the dygraph model).

Start-up (building the model or predictor, and a first warm-up pass) is apart; the timed passes are interleaved
(A B B A ...) so that the other programs' load hits every configuration alike, and the ratio to `bare` is taken
per round before its median. Prints a Markdown table and writes every time to --out.

    python bench/predict.py --sizes 64 512 --images 32 8 --rounds 5 --out bench_predict.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ROOT / "config/paddleseg/cpu/deeplabv3p_resnet18_os16_synthetic_64x64_student.yml"


def sized_config(config: Path, size: int, work: Path) -> Path:
    """A copy of `config` whose val (and train) Resize is `size` x `size`."""
    from segdistill.paddleseg_yaml import read_yaml, write_yaml

    dic = read_yaml(config)
    for key in ("train_dataset", "val_dataset"):
        for t in (dic.get(key) or {}).get("transforms") or []:
            if t.get("type") == "Resize":
                t["target_size"] = [size, size]
    out = work / f"student_{size}.yml"
    write_yaml(dic, out)
    return out


def setup(config: Path, size: int, num_images: int, work: Path) -> dict:
    """Export a random-weight student at `size` and generate `num_images` images of that size."""
    import yaml

    from segdistill import checkpoint
    from segdistill.data import generate
    from segdistill.export import deploy_yaml, save_inference_model
    from segdistill.models import load_trained

    cfg = sized_config(config, size, work)
    model, dic = load_trained(cfg)
    weights = work / f"student_{size}.pdparams"
    checkpoint.save_weights(model, weights)
    export = work / f"export_{size}"
    files = save_inference_model(model, (size, size), export / "model")
    (export / "deploy.yaml").write_text(yaml.safe_dump(deploy_yaml(dic, files, (size, size)), sort_keys=False))
    data = work / f"data_{size}"
    generate(data, num_images=max(num_images, 10), size=size, seed=0)  # the generator needs 10 for its splits
    images = sorted((data / "JPEGImages").iterdir())[:num_images]
    return {"config": cfg, "weights": weights, "export": export, "images": images}


def bare_loop(directory: Path, threads: int, onednn: bool):
    """The predictor as predict makes it on CPU, and a plain loop over images writing palette PNGs."""
    import cv2
    import numpy as np
    from paddle import inference
    from PIL import Image

    from segdistill.predict import PALETTE

    cfg = inference.Config(str(directory / "model.json"), str(directory / "model.pdiparams"))
    cfg.disable_gpu()
    cfg.disable_glog_info()
    (cfg.enable_onednn if onednn else cfg.disable_onednn)()
    cfg.set_cpu_math_library_num_threads(threads)
    pred = inference.create_predictor(cfg)
    x_in = pred.get_input_handle(pred.get_input_names()[0])
    y_out = pred.get_output_handle(pred.get_output_names()[0])
    palette = PALETTE.reshape(-1).tolist()

    def run(images, out: Path, size: int):
        out.mkdir(parents=True, exist_ok=True)
        for path in images:
            bgr = cv2.imread(str(path))
            rgb = cv2.cvtColor(cv2.resize(bgr, (size, size)), cv2.COLOR_BGR2RGB).astype("float32")
            x = ((rgb / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None]
            x_in.reshape(list(x.shape))
            x_in.copy_from_cpu(np.ascontiguousarray(x, dtype="float32"))
            pred.run()
            ids = y_out.copy_to_cpu()[0].argmax(0).astype("uint8")
            img = Image.fromarray(ids)
            img.putpalette(palette)
            img.save(out / f"{path.stem}.png")

    return run


def bench_size(args, size: int, num_images: int, work: Path) -> dict:
    from segdistill.predict import ExportedModel, TrainedModel, output_names, predict_all

    s = setup(Path(args.config), size, num_images, work)
    names = output_names(s["images"], s["images"][0].parent)
    startup = {}
    t0 = time.perf_counter()
    exported = ExportedModel(s["export"], threads=args.threads)
    startup["predict"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    bare = bare_loop(s["export"], args.threads, exported.onednn)
    startup["bare"] = time.perf_counter() - t0
    runs = {
        "predict": lambda out: predict_all(exported, s["images"], names, out, args.batch_size),
        "bare": lambda out: bare(s["images"], out, size),
    }
    if args.weights:
        t0 = time.perf_counter()
        trained = TrainedModel(s["config"], s["weights"])
        startup["predict_weights"] = time.perf_counter() - t0
        runs["predict_weights"] = lambda out: predict_all(trained, s["images"], names, out, args.batch_size)
    order = list(runs)
    for name in order:  # warm-up pass, not timed
        runs[name](work / f"warm_{name}_{size}")
    per_image = {name: [] for name in order}
    for r in range(args.rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            out = work / f"out_{name}_{size}_{r}"
            t0 = time.perf_counter()
            runs[name](out)
            per_image[name].append((time.perf_counter() - t0) / len(s["images"]))
    ratios = {
        name: statistics.median(a / b for a, b in zip(per_image[name], per_image["bare"]))
        for name in order
        if name != "bare"
    }
    return {
        "size": size,
        "images": len(s["images"]),
        "onednn": exported.onednn,
        "startup_s": startup,
        "per_image_s": per_image,
        "median_per_image_s": {n: statistics.median(v) for n, v in per_image.items()},
        "images_per_s": {n: 1 / statistics.median(v) for n, v in per_image.items()},
        "ratio_to_bare": ratios,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(STUDENT), help="student YAML (its Resize is set to each size)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 512])
    ap.add_argument("--images", type=int, nargs="+", default=[32, 8], help="images per size (one per size)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch_size", type=int, default=1)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--weights", action="store_true", help="also predict from the YAML and weights")
    ap.add_argument("--out", default=None, help="JSON file for every time")
    args = ap.parse_args(argv)
    if len(args.images) != len(args.sizes):
        ap.error("--images takes one count per --sizes")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before paddle: the dygraph path's threads
    sys.path.insert(0, str(ROOT / "src"))
    from segdistill.paddle_env import paddle

    paddle.set_device("cpu")
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        results = [bench_size(args, s, n, Path(tmp)) for s, n in zip(args.sizes, args.images)]
    print("| size | images | predict img/s | bare img/s | predict / bare (per image) | start-up predict / bare (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        ips, st = r["images_per_s"], r["startup_s"]
        print(
            f"| {r['size']}x{r['size']} | {r['images']} | {ips['predict']:.1f} | {ips['bare']:.1f} | "
            f"{r['ratio_to_bare']['predict']:.3f} | {st['predict']:.2f} / {st['bare']:.2f} |"
        )
        if "predict_weights" in ips:
            print(f"|  (weights) | | {ips['predict_weights']:.1f} | | {r['ratio_to_bare']['predict_weights']:.3f} | |")
    record = {
        "results": results,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "config": args.config,
        "paddle": paddle.__version__,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg()},
    }
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
