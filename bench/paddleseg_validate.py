"""How long a Cityscapes-size data set takes to list, validate and digest (data.source paddleseg), once per study.

Generates `--images` pairs of `--width`x`--height` PNGs (colour image, 19-class label with ignore pixels, smooth
regions and mild noise, so the files compress about as photos do) in the Cityscapes layout in a temporary folder,
then times the study's data stage in one process: `segdistill.data.splits.write_splits` (pairs by name, draws the
selection, decodes and checks every pair, writes the split lists and the validation record) and the training
set's digest (`segdistill.data.digest.data_digest`, what a run's key and a cache record). Wall and CPU
seconds are printed: on a shared machine the CPU seconds say what the check costs (divided by the cores it
can use, they bound its wall time on an idle machine). The folder is deleted at the end.

    python bench/paddleseg_validate.py --images 3000 --val 500 --selection 500 --out paddleseg_validate.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np


def _write_pair(root: Path, split: str, i: int, width: int, height: int) -> int:
    rng = np.random.default_rng(i)
    city = f"city{i % 18:02d}"
    name = f"{city}_{i:06d}_000019"
    coarse = rng.integers(0, 19, size=(height // 32, width // 32))
    label = cv2.resize(coarse.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    label[: height // 16] = 255  # the ego vehicle's hood, as Cityscapes ignores it
    colours = rng.integers(0, 256, size=(256, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(colours[label], (9, 9), 0)
    image = cv2.add(image, rng.integers(0, 8, size=image.shape, dtype=np.uint8))
    img_path = root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png"
    lab_path = root / "gtFine" / split / city / f"{name}_gtFine_labelTrainIds.png"
    img_path.parent.mkdir(parents=True, exist_ok=True)
    lab_path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(img_path), image)
    cv2.imwrite(str(lab_path), label)
    return img_path.stat().st_size + lab_path.stat().st_size


def generate(root: Path, train: int, val: int, width: int, height: int) -> int:
    jobs = [("train", i) for i in range(train)] + [("val", train + i) for i in range(val)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return sum(pool.map(lambda job: _write_pair(root, job[0], job[1], width, height), jobs))


def _student_yaml(folder: Path, root: Path) -> Path:
    import yaml

    sections = {
        key: {"type": "Cityscapes", "dataset_root": str(root), "mode": mode, "transforms": [{"type": "Normalize"}]}
        for key, mode in (("train_dataset", "train"), ("val_dataset", "val"))
    }
    path = folder / "student.yml"
    path.write_text(yaml.safe_dump(sections))
    return path


def measure(folder: Path, args) -> dict:
    from segdistill.data.digest import data_digest
    from segdistill.data.splits import write_splits

    root = folder / "cityscapes"
    t0 = time.perf_counter()
    nbytes = generate(root, args.images - args.val, args.val, args.width, args.height)
    generated = time.perf_counter() - t0
    out = {s: folder / "splits" / f"{s}.txt" for s in ("train", "val", "test")}
    t0, c0 = time.perf_counter(), time.process_time()
    info = write_splits(_student_yaml(folder, root), args.selection, 0, out, folder / "validation.json")
    # CPU seconds of every thread of this process: what the check costs whatever else runs on the machine.
    validated, validated_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    train = [[str(root / p) for p in line.split()] for line in out["train"].read_text().splitlines()]
    section = {"type": "Dataset", "dataset_root": str(root), "mode": "train", "transforms": [{"type": "Normalize"}]}
    listed = type("Listed", (), {"file_list": train, "dataset_root": str(root)})
    digest = data_digest(section, listed, folder / "validation.json")
    digested = time.perf_counter() - t0
    return {
        "images": args.images,
        "size": [args.width, args.height],
        "bytes_on_disk": nbytes,
        "generate_s": round(generated, 2),
        "validate_and_split_s": round(validated, 2),
        "validate_and_split_cpu_s": round(validated_cpu, 2),
        "digest_s": round(digested, 4),
        "total_s": round(validated + digested, 2),
        "splits": info["splits"],
        "digest": digest,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--val", type=int, default=500, help="of --images, in the val_dataset (the study's test)")
    ap.add_argument("--selection", type=int, default=500)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="paddleseg_validate."))
    try:
        result = measure(folder, args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result["machine"] = {"cpus": os.cpu_count(), "loadavg": os.getloadavg(), "python": platform.python_version()}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
