"""Tiny data sets in the folder layouts PaddleSeg's classes read (Cityscapes, ADE20K, Pascal VOC 2012, COCO-Stuff,
Pascal Context), written by the tests themselves: a few images a split, labels in each set's value range."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def _pair(image: Path, label: Path, rng, size, num_values: int, ignore: int | None, ext=".png") -> None:
    h, w = size
    image.parent.mkdir(parents=True, exist_ok=True)
    label.parent.mkdir(parents=True, exist_ok=True)
    # Blocks of 4x4 pixels, and an image that shows its label, so a few iterations learn something.
    lab = np.kron(rng.integers(0, num_values, size=(h // 4, w // 4)), np.ones((4, 4), dtype=np.int64))
    if ignore is not None:
        lab[0, :] = ignore
    img = np.stack([lab * 11 % 256, lab * 37 % 256, lab * 71 % 256], axis=-1)
    lab = lab.astype(np.uint8)
    img = np.clip(img.astype(int) + rng.integers(-20, 20, size=img.shape), 0, 255).astype(np.uint8)
    cv2.imwrite(str(image), img)
    Image.fromarray(lab).save(label)


def make_cityscapes(root: Path, counts=None, size=(16, 32), seed=0) -> Path:
    """leftImg8bit/<split>/<city>/<name>_leftImg8bit.png, gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png."""
    rng = np.random.default_rng(seed)
    for split, n in (counts or {"train": 8, "val": 3}).items():
        for i in range(n):
            city = ("aachen", "bochum")[i % 2]
            name = f"{city}_{i:06d}_000019"
            _pair(
                root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png",
                root / "gtFine" / split / city / f"{name}_gtFine_labelTrainIds.png",
                rng,
                size,
                19,
                255,
            )
    return root


def make_ade20k(root: Path, counts=None, size=(16, 16), seed=0) -> Path:
    """images/{training,validation}/*.jpg, annotations/{training,validation}/*.png; labels 0 ("other") .. 150."""
    rng = np.random.default_rng(seed)
    for split, n in (counts or {"training": 6, "validation": 3}).items():
        for i in range(n):
            name = f"ADE_{split[:5]}_{i:08d}"
            _pair(
                root / "images" / split / f"{name}.jpg", root / "annotations" / split / f"{name}.png", rng, size, 151, 0
            )
    return root


def make_voc(root: Path, counts=None, size=(16, 16), seed=0, aug: int = 0) -> Path:
    """VOC2012/JPEGImages, SegmentationClass, ImageSets/Segmentation/{train,val}.txt (and `aug` SBD ids in aug.txt
    with SegmentationClassAug, for trainaug)."""
    rng = np.random.default_rng(seed)
    voc = root / "VOC2012"
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    k = 0
    for split, n in {**(counts or {"train": 6, "val": 3}), **({"aug": aug} if aug else {})}.items():
        ids = []
        for _ in range(n):
            ids.append(f"2007_{k:06d}")
            folder = "SegmentationClassAug" if split == "aug" else "SegmentationClass"
            _pair(voc / "JPEGImages" / f"{ids[-1]}.jpg", voc / folder / f"{ids[-1]}.png", rng, size, 21, 255)
            k += 1
        (sets / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def make_cocostuff(root: Path, counts=None, size=(16, 16), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (counts or {"train2017": 4, "val2017": 2}).items():
        for i in range(n):
            _pair(
                root / "images" / split / f"{i:012d}.jpg",
                root / "annotations" / split / f"{i:012d}.png",
                rng,
                size,
                171,
                255,
            )
    return root


def make_context(root: Path, counts=None, size=(16, 16), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    k = 0
    for split, n in (counts or {"train": 4, "val": 2}).items():
        ids = [f"2008_{k + i:06d}" for i in range(n)]
        k += n
        for i in ids:
            _pair(root / "JPEGImages" / f"{i}.jpg", root / "Context" / f"{i}.png", rng, size, 60, 255)
        (sets / f"{split}_context.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def section(kind: str, root, mode: str, **extra) -> dict:
    return {"type": kind, "dataset_root": str(root), "mode": mode, "transforms": [{"type": "Normalize"}], **extra}
