"""A small synthetic fundus-like optic disc set in PaddleSeg's OpticDiscSeg layout.

Each image has an illumination gradient, a dark field-of-view border, vessel-like dark curves, up to three bright
distractor blobs and one bright elliptic disc (label 1) with a brighter centre, the cup; it is then blurred and
noised. The distractors and vessels keep a small student from saturating in a short run, so a teacher has
something to add (docs/study-design.md). Output is byte-for-byte deterministic for a given seed and parameters.

Two label sets (`class_names`): the optic disc alone (background, optic_disc: the set since version 1, unchanged
byte for byte), or disc and cup as in optic disc and cup segmentation (background, optic_disc, optic_cup): the
cup, where the disc's bright centre is above 1/e of its peak, is labelled 2 and the rest of the disc 1.
`disc_radius` bounds the disc's radius as fractions of the side (default 5-11%, the set since version 1).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from segdistill.data.archive import check_target_free, make_temp_sibling, publish_dir
from segdistill.errors import SegDistillError

CLASS_NAMES = ("background", "optic_disc")
CUP_CLASS_NAMES = ("background", "optic_disc", "optic_cup")
SPLIT_NAMES = ("train", "val", "test")
GENERATOR_VERSION = 1
_JPEG_QUALITY = 92
LABEL_SETS = (CLASS_NAMES, CUP_CLASS_NAMES)
# Disc radius as a fraction of the image side.
DISC_RADIUS = (0.05, 0.11)


def _split_counts(n: int, split: tuple[float, float, float]) -> dict[str, int]:
    try:
        fracs = [float(f) for f in split]
    except (TypeError, ValueError):
        raise SegDistillError(f"split must be three fractions (train, val, test), got {split!r}") from None
    if len(fracs) != 3 or any(not math.isfinite(f) or f < 0 for f in fracs) or abs(sum(fracs) - 1.0) > 1e-6:
        raise SegDistillError(f"split must be three non-negative fractions summing to 1, got {split!r}")
    n_val = round(n * fracs[1])
    n_test = round(n * fracs[2])
    # A non-zero fraction always gets at least one image so a tiny set still has every split it asked for.
    if fracs[1] > 0:
        n_val = max(n_val, 1)
    if fracs[2] > 0:
        n_test = max(n_test, 1)
    counts = {"train": n - n_val - n_test, "val": n_val, "test": n_test}
    if counts["train"] < 1 or counts["val"] < 1:
        raise SegDistillError(
            f"num_images={n} with split={tuple(split)} leaves the train or val split empty; use more images"
        )
    return counts


def _field_of_view(size: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    c = size / 2.0
    radius = size * rng.uniform(0.50, 0.58)
    dist = np.hypot(xx - c, yy - c)
    # A soft rim, like the vignetted edge of a fundus photograph.
    fov = np.clip((radius - dist) / (0.04 * size) + 0.5, 0.0, 1.0)
    return fov.astype(np.float32), radius


def _ellipse_field(size: int, cx: float, cy: float, rx: float, ry: float, angle: float) -> np.ndarray:
    """Normalised elliptic distance: < 1 inside the ellipse, evaluated at pixel centres."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    ca, sa = math.cos(angle), math.sin(angle)
    dx, dy = xx - cx, yy - cy
    u = (dx * ca + dy * sa) / rx
    v = (-dx * sa + dy * ca) / ry
    return np.sqrt(u * u + v * v)


def _vessels(size: int, rng: np.random.Generator, cx: float, cy: float) -> np.ndarray:
    """4-8 dark curved vessels; most start near the disc, as in a real fundus, the rest cross the field."""
    canvas = np.zeros((size, size), np.uint8)
    shift = 4  # sub-pixel precision for the polyline vertices
    for k in range(int(rng.integers(4, 9))):
        if k < 3 or rng.random() < 0.5:
            start = np.array([cx, cy]) + rng.normal(0.0, 0.03 * size, 2)
        else:
            start = rng.uniform(0.15 * size, 0.85 * size, 2)
        heading = rng.uniform(0.0, 2.0 * math.pi)
        length = size * rng.uniform(0.35, 0.8)
        steps = 24
        pts = [start]
        turn = rng.normal(0.0, 0.12)
        for _ in range(steps):
            heading += turn + rng.normal(0.0, 0.15)
            pts.append(pts[-1] + (length / steps) * np.array([math.cos(heading), math.sin(heading)]))
        poly = np.round(np.array(pts) * (1 << shift)).astype(np.int32)
        thickness = max(1, int(round(size * rng.uniform(0.012, 0.03))))
        value = int(rng.integers(150, 256))
        cv2.polylines(canvas, [poly], False, value, thickness, cv2.LINE_AA, shift)
    return canvas.astype(np.float32) / 255.0


def _render(
    size: int, rng: np.random.Generator, classes: tuple = CLASS_NAMES, radius: tuple = DISC_RADIUS
) -> tuple[np.ndarray, np.ndarray]:
    """One (BGR uint8 image, uint8 label) pair; `classes` says whether the cup is labelled (module docstring)."""
    fov, fov_radius = _field_of_view(size, rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5

    # Reddish-orange retina; channels are B, G, R as cv2 writes them.
    base = np.array([rng.uniform(0.08, 0.18), rng.uniform(0.22, 0.38), rng.uniform(0.55, 0.78)], np.float32)
    img = np.broadcast_to(base, (size, size, 3)).copy()

    # Disc: inside the field of view, anywhere, but not cut by the rim.
    rx = size * rng.uniform(*radius)
    ry = float(np.clip(rx * rng.uniform(0.8, 1.25), size * radius[0], size * radius[1]))
    angle = rng.uniform(0.0, math.pi)
    reach = max(fov_radius - max(rx, ry) - 0.06 * size, 0.0) * 0.85
    r, t = reach * math.sqrt(rng.random()), rng.uniform(0.0, 2.0 * math.pi)
    cx, cy = size / 2.0 + r * math.cos(t), size / 2.0 + r * math.sin(t)
    d = _ellipse_field(size, cx, cy, rx, ry, angle)
    label = (d < 1.0).astype(np.uint8)
    if not label.any():
        # A disc always covers its own centre pixel; guard against rounding at very small sizes.
        label[min(int(cy), size - 1), min(int(cx), size - 1)] = 1

    # Distractor blobs: bright, soft, smaller or dimmer than the disc, away from it.
    contrast = rng.uniform(0.30, 0.55)
    blobs = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(0, 4))):
        br = size * rng.uniform(0.025, 0.07)
        for _try in range(20):
            bx, by = rng.uniform(0.15 * size, 0.85 * size, 2)
            if math.hypot(bx - cx, by - cy) > max(rx, ry) + br + 0.04 * size:
                break
        else:
            continue
        strength = contrast * rng.uniform(0.35, 0.9)
        blobs += strength * np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2.0 * (br * 0.7) ** 2))

    # Disc profile: a bright plateau with a soft edge and a brighter cup, tinted yellow-white.
    edge = 1.0 / (1.0 + np.exp(np.minimum((d - 1.0) * rng.uniform(5.0, 9.0), 50.0)))
    cup_radius = rng.uniform(0.35, 0.6)  # in disc radii: where the cup's brightness falls to 1/e of its peak
    cup = np.exp(-((d / cup_radius) ** 2)) * rng.uniform(0.1, 0.3)
    if classes == CUP_CLASS_NAMES:
        label[(d < cup_radius) & (label == 1)] = 2
    disc = contrast * edge + cup
    tint = np.array([0.55, 0.9, 1.0], np.float32)
    img += (disc + blobs)[..., None] * tint

    img *= 1.0 - _vessels(size, rng, cx, cy)[..., None] * rng.uniform(0.3, 0.55)

    # Uneven illumination: a linear ramp in a random direction times a mild radial fall-off.
    g = rng.uniform(0.2, 0.5)
    phi = rng.uniform(0.0, 2.0 * math.pi)
    ramp = 1.0 + g * (((xx / size) - 0.5) * math.cos(phi) + ((yy / size) - 0.5) * math.sin(phi)) * 2.0
    radial = 1.0 - rng.uniform(0.1, 0.3) * (((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (size / 2) ** 2)
    img *= (ramp * radial)[..., None]
    img *= fov[..., None]

    sigma = rng.uniform(0.5, 1.2) * size / 64.0
    img = cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma)
    img += rng.normal(0.0, rng.uniform(0.02, 0.05), img.shape).astype(np.float32)
    img = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    return img, label


def _write(path: Path, array: np.ndarray, params: list[int]) -> None:
    if not cv2.imwrite(str(path), array, params):
        raise OSError(f"could not write {path}")


def _checked_radius(disc_radius) -> tuple[float, float]:
    try:
        lo, hi = (float(r) for r in disc_radius)
    except (TypeError, ValueError):
        raise SegDistillError(f"data.synthetic.disc_radius: two fractions [min, max], not {disc_radius!r}") from None
    if not 0.01 <= lo <= hi <= 0.25:
        raise SegDistillError(f"data.synthetic.disc_radius: need 0.01 <= min <= max <= 0.25, not {disc_radius!r}")
    return (lo, hi)


def checked_classes(class_names) -> tuple:
    """The label set `class_names` asks of the generator (one of the two it draws), else an error naming the key."""
    classes = tuple(class_names or ())
    if classes not in LABEL_SETS:
        sets = " or ".join(f"[{', '.join(c)}]" for c in LABEL_SETS)
        raise SegDistillError(f"data.class_names: the synthetic set labels {sets}, not [{', '.join(classes)}]")
    return classes


def _checked_params(num_images, size, seed) -> tuple[int, int, int]:
    if isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)) or num_images < 2:
        raise SegDistillError(f"num_images must be an integer >= 2, got {num_images!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 16 <= size <= 4096:
        raise SegDistillError(f"size must be an integer between 16 and 4096, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SegDistillError(f"seed must be a non-negative integer, got {seed!r}")
    return int(num_images), int(size), int(seed)


def _write_images(folder: Path, num_images: int, size: int, seed: int, counts: dict, look: tuple) -> list[float]:
    """Images, labels and list files into `folder`; returns each image's disc fraction. `look`: (label set, disc
    radius bounds)."""
    width = max(4, len(str(num_images - 1)))
    names = [f"synth_{i:0{width}d}" for i in range(num_images)]
    # Separate streams for the split and for each image, so an image does not depend on how many come before it.
    order = np.random.default_rng([seed, 1, num_images]).permutation(num_images)
    bounds = np.cumsum([counts[s] for s in SPLIT_NAMES])[:-1]
    split_of = {}
    for name, idx in zip(SPLIT_NAMES, np.split(order, bounds)):
        for i in idx:
            split_of[int(i)] = name

    (folder / "JPEGImages").mkdir()
    (folder / "Annotations").mkdir()
    lines: dict[str, list[str]] = {s: [] for s in SPLIT_NAMES}
    fractions = []
    for i, name in enumerate(names):
        img, label = _render(size, np.random.default_rng([seed, 0, i]), *look)
        _write(folder / "JPEGImages" / f"{name}.jpg", img, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
        _write(folder / "Annotations" / f"{name}.png", label, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        lines[split_of[i]].append(f"JPEGImages/{name}.jpg Annotations/{name}.png")
        fractions.append(float((label > 0).mean()))
    for s in SPLIT_NAMES:
        text = "".join(line + "\n" for line in lines[s])
        (folder / f"{s}_list.txt").write_text(text, encoding="utf-8")
    return fractions


def _info(num_images: int, size: int, seed: int, split, counts: dict, fr: np.ndarray, look: tuple) -> dict:
    """dataset_info.json: how the set was made and what it holds (the disc radius only when not the default, so a
    set made before the option has the same bytes)."""
    classes, radius = look
    return {
        "generator": "segdistill.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "params": {
            "num_images": num_images,
            "size": size,
            "seed": seed,
            "split": [float(f) for f in split],
            **({"disc_radius": [float(r) for r in radius]} if radius != DISC_RADIUS else {}),
        },
        "counts": counts,
        "num_classes": len(classes),
        "class_names": list(classes),
        "ignore_index": 255,
        "disc_fraction": {
            "mean": round(float(fr.mean()), 6),
            "min": round(float(fr.min()), 6),
            "max": round(float(fr.max()), 6),
        },
    }


def generate(
    out_dir: str | os.PathLike,
    num_images: int = 200,
    size: int = 64,
    seed: int = 0,
    split: tuple[float, float, float] = (0.7, 0.15, 0.15),
    overwrite: bool = False,
    class_names=CLASS_NAMES,
    disc_radius=DISC_RADIUS,
) -> dict:
    """Write a synthetic optic disc set to `out_dir` and return a summary.

    The folder holds JPEGImages/, Annotations/ (labels 0 = background, 1 = optic disc, 2 = optic cup when
    `class_names` names it: see the module docstring), train/val/test list files and dataset_info.json. It is
    built in a temporary sibling and renamed into place when complete. An existing non-empty `out_dir` is an error
    unless `overwrite` is set.
    """
    num_images, size, seed = _checked_params(num_images, size, seed)
    classes, radius = checked_classes(class_names), _checked_radius(disc_radius)
    counts = _split_counts(num_images, split)

    out = Path(out_dir)
    check_target_free(out, overwrite)

    tmp = make_temp_sibling(out)
    try:
        fractions = _write_images(tmp, num_images, size, seed, counts, (classes, radius))
        info = _info(num_images, size, seed, split, counts, np.array(fractions), (classes, radius))
        (tmp / "dataset_info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        publish_dir(tmp, out, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    return {
        "root": str(out),
        "num_images": num_images,
        "size": size,
        "seed": seed,
        "splits": dict(counts),
        "num_classes": len(classes),
        "class_names": list(classes),
        "disc_fraction": info["disc_fraction"],
    }
