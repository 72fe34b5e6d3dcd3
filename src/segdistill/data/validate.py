"""Check a dataset in PaddleSeg's list-file layout before any training starts.

A broken set otherwise fails deep inside a data loader, minutes into a run, with a message that names neither the
list file nor the sample. Images are read the way PaddleSeg reads them (cv2, colour) and labels the same way too
(Pillow, so a palette PNG gives its indices, not its colours).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from segdistill.errors import SegDistillError

_MAX_VALUES_SHOWN = 10


def _fmt_values(values) -> str:
    values = [int(v) for v in values]
    shown = ", ".join(str(v) for v in values[:_MAX_VALUES_SHOWN])
    return shown + (f", ... ({len(values)} values)" if len(values) > _MAX_VALUES_SHOWN else "")


def _leaves_root(field: str) -> str | None:
    """Why a list-file path is outside the data set's root (absolute, or a `..` that leaves it), else None.

    Lexical, as PaddleSeg joins the path to the root: a downloaded archive's list must not make training read any
    file on the machine it can name, and a folder's must not mix in files its data digest does not cover."""
    if os.path.isabs(field):
        return "is absolute"
    norm = os.path.normpath(field)
    if norm == os.pardir or norm.startswith(os.pardir + os.sep):
        return "leaves the data set's root"
    return None


def _read_list(list_path: Path, root: Path, allow_outside: bool = False) -> list[tuple[Path, Path, str]]:
    """(image, label, 'file:line') for every non-blank line; missing files and paths outside `root` (unless
    `allow_outside`) are reported with their line."""
    try:
        text = list_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SegDistillError(f"{list_path} is not UTF-8 text ({exc})") from None
    entries = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{list_path}:{lineno}"
        fields = line.split()
        if len(fields) != 2:
            raise SegDistillError(
                f"{where}: expected two fields 'image label' separated by a space, got {len(fields)}: {line.strip()!r}"
            )
        for kind, field in zip(("image", "label"), fields):
            why = None if allow_outside else _leaves_root(field)
            if why:
                raise SegDistillError(
                    f"{where}: {kind} path {field!r} {why} ({root}); list files must name files inside the data set "
                    f"(a `folder` data set may allow outside paths with data.folder.allow_outside_paths: true)"
                )
        img, lab = root / fields[0], root / fields[1]
        for kind, path in (("image", img), ("label", lab)):
            if not path.is_file():
                raise SegDistillError(f"{where}: {kind} {path} listed in {list_path} does not exist")
        entries.append((img, lab, where))
    return entries


def shift_values(values, shift: int, ignore_index: int | None):
    """Label values as a data set type maps them: ADE20K stores class k as k + 1 and 0 for "other", which becomes
    the ignore index (PaddleSeg's ADE20K class subtracts 1 from its uint8 labels, so 0 wraps to 255)."""
    values = np.asarray(values)
    if not shift:
        return values
    out = values.astype(np.int64) - shift
    out[values < shift] = 255 if ignore_index is None else ignore_index
    return out.astype(values.dtype)


def _check_pair(
    img_path: Path, lab_path: Path, where: str, num_classes: int, ignore_index: int | None, label_shift: int = 0
):
    """Decode one sample; return ((height, width), {label value: pixel count}), values after `label_shift`
    (see shift_values); values out of range are reported as stored in the file."""
    # np.fromfile + imdecode instead of imread: imread returns None silently for both missing and bad files.
    img = cv2.imdecode(np.fromfile(img_path, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise SegDistillError(f"{where}: image {img_path} cannot be decoded (not an image, or a damaged file)")
    try:
        with Image.open(lab_path) as im:
            mode = im.mode
            label = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SegDistillError(f"{where}: label {lab_path} cannot be decoded ({exc})") from None
    if label.ndim != 2:
        raise SegDistillError(
            f"{where}: label {lab_path} has {label.shape[2] if label.ndim == 3 else label.ndim} channels "
            f"(mode {mode}); labels must be single-channel images of class indices (mode L or P)"
        )
    if img.shape[:2] != label.shape:
        ih, iw = img.shape[:2]
        lh, lw = label.shape
        raise SegDistillError(
            f"{where}: image {img_path} is {iw}x{ih} but label {lab_path} is {lw}x{lh} (width x height); "
            f"they must be the same size"
        )
    if label.dtype == np.uint8:
        # bincount over the 256 possible values is much faster than np.unique's sort.
        hist = np.bincount(label.ravel(), minlength=256)
        values = np.flatnonzero(hist)
        counts = hist[values]
    else:
        values, counts = np.unique(label, return_counts=True)
    mapped = shift_values(values, label_shift, ignore_index).tolist()
    bad = [v for v, m in zip(values.tolist(), mapped) if not (0 <= m < num_classes or m == ignore_index)]
    if bad:
        allowed = f"0..{num_classes - 1}" + (f" or {ignore_index} (ignore)" if ignore_index is not None else "")
        shifted = f" after subtracting {label_shift} (the data set type's mapping)" if label_shift else ""
        raise SegDistillError(
            f"{where}: label {lab_path} has values {_fmt_values(bad)} outside {allowed}{shifted} for "
            f"num_classes={num_classes}"
        )
    pixels: dict[int, int] = {}
    for m, c in zip(mapped, counts.tolist()):
        pixels[m] = pixels.get(m, 0) + c
    return (int(img.shape[0]), int(img.shape[1])), pixels


def _read_lists(root: Path, required_splits, optional_splits, list_names, allow_outside) -> tuple[dict, dict]:
    """({split: entries}, {split: list file}) of the splits present; a required one must exist and be non-empty."""
    required = list(dict.fromkeys(required_splits))
    optional = [s for s in dict.fromkeys(optional_splits) if s not in required]
    splits: dict[str, list] = {}
    list_files: dict[str, str] = {}
    for split in required + optional:
        list_path = root / (list_names or {}).get(split, f"{split}_list.txt")
        if not list_path.is_file():
            if split in required:
                raise SegDistillError(f"list file {list_path} for the required '{split}' split does not exist")
            continue
        entries = _read_list(list_path, root, allow_outside)
        if split in required and not entries:
            raise SegDistillError(f"list file {list_path} is empty; the '{split}' split needs at least one sample")
        splits[split] = entries
        list_files[split] = str(list_path)
    return splits, list_files


def _check_pairs(unique: dict, num_classes: int, ignore_index) -> tuple[set, dict]:
    """Decode and check every (image, label) pair: (distinct sizes, {label value: pixels})."""
    pixel_counts: dict[int, int] = {}
    sizes: set[tuple[int, int]] = set()
    # cv2 and Pillow release the GIL while decoding, so threads give a real speed-up.
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(_check_pair, img, lab, where, num_classes, ignore_index) for (img, lab), where in unique.items()
        ]
        try:
            # In list order, so the error reported is the first one in the files, whatever finished first.
            for fut in futures:
                size, counts = fut.result()
                sizes.add(size)
                for v, c in counts.items():
                    pixel_counts[v] = pixel_counts.get(v, 0) + c
        finally:
            for fut in futures:
                fut.cancel()
    return sizes, pixel_counts


def validate_dataset(
    root: str | os.PathLike,
    num_classes: int,
    ignore_index: int | None = 255,
    required_splits=("train", "val"),
    optional_splits=("test",),
    list_names: dict[str, str] | None = None,
    allow_outside: bool = False,
) -> dict:
    """Check a dataset rooted at `root` and return a summary.

    Every list file of `required_splits` (`<split>_list.txt` unless `list_names` maps the split to another
    name, relative to `root`) must exist and list at least one sample; those of
    `optional_splits` are checked when present. Every listed image and label must exist and decode, have the same
    height and width, and labels may hold only 0..num_classes-1 or `ignore_index`. The first problem found is
    raised as a SegDistillError naming the list file, its line and the file at fault. A listed path must stay
    inside `root` (no absolute path, no `..` leaving it) unless `allow_outside`; the files outside it are then
    recorded with their SHA-256 (`outside_files`), so what depends on this record covers their contents.

    Returns {"root", "num_classes", "ignore_index", "splits": {split: count}, "list_files": {split: path},
    "num_samples", "label_values": sorted values seen, "pixel_counts": {value: pixels}, "image_sizes":
    sorted distinct [height, width]}.
    """
    root = Path(root)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise SegDistillError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not root.exists():
        raise SegDistillError(f"dataset root {root} does not exist")
    if not root.is_dir():
        raise SegDistillError(f"dataset root {root} is not a folder")

    splits, list_files = _read_lists(root, required_splits, optional_splits, list_names, allow_outside)
    # A sample listed in several splits is decoded once.
    unique: dict[tuple[Path, Path], str] = {}
    for entries in splits.values():
        for img, lab, where in entries:
            unique.setdefault((img, lab), where)
    sizes, pixel_counts = _check_pairs(unique, int(num_classes), ignore_index)

    info = {
        "root": str(root),
        "num_classes": int(num_classes),
        "ignore_index": ignore_index,
        "splits": {s: len(e) for s, e in splits.items()},
        "list_files": list_files,
        "num_samples": len(unique),
        "label_values": sorted(pixel_counts),
        "pixel_counts": dict(sorted(pixel_counts.items())),
        "image_sizes": [list(s) for s in sorted(sizes)],
    }
    if allow_outside:
        info["outside_files"] = _outside_digests(root, unique)
    return info


def _outside_digests(root: Path, samples) -> dict[str, str]:
    """{path as listed, relative to root: SHA-256} of the listed files outside `root`."""
    from segdistill.data.fetch import sha256_of

    paths = {p for pair in samples for p in pair}
    rel = {os.path.relpath(p, root): p for p in paths}
    return {r: sha256_of(rel[r]) for r in sorted(rel) if _leaves_root(r)}


def write_validation(
    root: str | os.PathLike,
    num_classes: int,
    out=None,
    archive=None,
    ignore_index: int | None = 255,
    required_splits=("train", "val"),
    list_names: dict[str, str] | None = None,
    allow_outside: bool = False,
) -> dict:
    """`validate_dataset` as the record every training and evaluation job depends on, written to `out`.

    With `archive`, the SHA-256 of the archive the data set came from is recorded too, so the report can say
    which download the results rest on.
    """
    info = validate_dataset(
        root,
        num_classes=num_classes,
        ignore_index=ignore_index,
        required_splits=tuple(required_splits),
        list_names=list_names,
        allow_outside=allow_outside,
    )
    if archive:
        from segdistill.data.fetch import sha256_of

        info["archive"] = {"path": str(archive), "sha256": sha256_of(archive)}
    if out is not None:
        from segdistill.atomic import write_json

        write_json(out, info)
    return info
