"""The data sets PaddleSeg's zoo names by type (Cityscapes, ADE20K, PascalVOC, CocoStuff, PascalContext and the
generic Dataset), listed as PaddleSeg 2.8's classes list them, without their traps.

PaddleSeg's classes pair images and labels by position in two sorted globs (Cityscapes, CocoStuff: one missing
label mispairs every image after it), list ADE20K in `os.listdir` order (file-system dependent), and download
ADE20K and VOC when `dataset_root` does not exist. Here every image is paired with its label by name, an image
without one is an error naming it, lists are sorted by their relative path (code-point order) or kept in the
order of the data set's own list files, and a missing root stops at once: nothing is ever downloaded.

The pairs become the study's split lists (`image label` lines relative to the root, read by PaddleSeg's generic
`Dataset`); a type whose class maps its labels (ADE20K: stored value - 1, 0 becomes the ignore index) keeps that
mapping through the `ShiftLabels` transform the study puts first in its transforms (see `label_shift_transform`).
The workflow reads this module while it parses (types, roots, class names, the teacher's and student's data set),
so it imports neither paddle nor numpy nor cv2 at module level.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from segdistill import paddleseg_classes as names
from segdistill.errors import SegDistillError

_MAX_PROBLEMS = 20
# The study's split lists (`image label` lines relative to dataset_root), read by PaddleSeg's generic Dataset.
SPLIT_FILES = {s: f"results/data/splits/{s}.txt" for s in ("train", "val", "test")}


@dataclass(frozen=True)
class SetType:
    """What differs between PaddleSeg's data set types: modes, class names (None: the section's num_classes, named
    class_<i>), the label mapping of its class, and the tool that lays the set out."""

    modes: tuple[str, ...]
    class_names: tuple[str, ...] | None
    label_shift: int = 0
    ignore_index: int = 255
    layout: str = ""


TYPES = {
    "Cityscapes": SetType(
        ("train", "val", "test"),
        names.CITYSCAPES,
        layout="leftImg8bit/<mode>/<city>/*_leftImg8bit.png and gtFine/<mode>/<city>/*_gtFine_labelTrainIds.png "
        "(PaddleSeg's tools/data/convert_cityscapes.py writes the labelTrainIds files)",
    ),
    "ADE20K": SetType(
        ("train", "val"),
        names.ADE20K,
        label_shift=1,
        layout="images/{training,validation}/*.jpg and annotations/{training,validation}/*.png "
        "(ADEChallengeData2016 as published)",
    ),
    "PascalVOC": SetType(
        ("train", "val", "trainval", "trainaug"),
        names.PASCAL_VOC,
        layout="VOC2012/ImageSets/Segmentation/<mode>.txt, VOC2012/JPEGImages, VOC2012/SegmentationClass; trainaug "
        "also aug.txt and SegmentationClassAug (PaddleSeg's tools/data/voc_augment.py)",
    ),
    "CocoStuff": SetType(
        ("train", "val"),
        names.COCO_STUFF,
        layout="images/{train2017,val2017}/*.jpg and annotations/{train2017,val2017}/*.png "
        "(PaddleSeg's tools/data/convert_cocostuff.py)",
    ),
    "PascalContext": SetType(
        ("train", "val", "trainval"),
        names.PASCAL_CONTEXT,
        layout="ImageSets/Segmentation/<mode>_context.txt, JPEGImages, Context "
        "(PaddleSeg's tools/data/convert_voc2010.py)",
    ),
    "Dataset": SetType(
        ("train", "val", "test"),
        None,
        layout="list files (train_path, val_path, test_path) of 'image label' lines relative to dataset_root",
    ),
}


def set_type(section: dict, where: str) -> SetType:
    kind = section.get("type")
    if kind not in TYPES:
        raise SegDistillError(
            f"{where}: data.source paddleseg reads the data set types {', '.join(TYPES)}; got {kind!r} (use "
            f"data.source folder with list files for another layout)"
        )
    return TYPES[kind]


def section_classes(section: dict, where: str) -> list[str]:
    """The type's class names; the generic Dataset's `num_classes` gives class_<i>."""
    known = set_type(section, where).class_names
    if known is not None:
        return list(known)
    n = section.get("num_classes")
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise SegDistillError(f"{where}: a data set of type Dataset needs num_classes (an integer >= 2), got {n!r}")
    return [f"class_{i}" for i in range(n)]


def dataset_root(section: dict, where: str) -> Path:
    """The section's `dataset_root` (relative to the working directory, as in PaddleSeg); a missing one stops here,
    naming the path: PaddleSeg's ADE20K and VOC classes would download the data set instead."""
    root = section.get("dataset_root")
    if not isinstance(root, str) or not root:
        raise SegDistillError(f"{where}: dataset_root is not set")
    if not Path(root).is_dir():
        raise SegDistillError(
            f"{where}: dataset_root {root} does not exist (relative to the working directory {os.getcwd()}); "
            f"segdistill never downloads a data set: lay it out there as {set_type(section, where).layout}"
        )
    return Path(root)


def list_pairs(section: dict, where: str) -> list[tuple[str, str]]:
    """(image, label) paths relative to the root, for the section's type and mode; every problem found (an image
    without its label, a missing list file) is raised at once, each naming its file."""
    kind = set_type(section, where)
    root = dataset_root(section, where)
    mode = str(section.get("mode", "train")).lower()
    if mode not in kind.modes:
        raise SegDistillError(f"{where}: mode {mode!r} is not one of {', '.join(kind.modes)} for {section['type']}")
    pairs, problems = _LISTERS[section["type"]](root, mode, section, where)
    raise_problems(problems, where)
    if not pairs:
        raise SegDistillError(f"{where}: {section['type']} {mode} under {root} has no images ({kind.layout})")
    for pair in pairs:
        if any(ch.isspace() for ch in "".join(pair)):
            raise SegDistillError(f"{where}: {root / pair[0]}: a path with white space cannot enter a list file")
    return pairs


def raise_problems(problems: list[str], where: str) -> None:
    if problems:
        more = f"\n  ... and {len(problems) - _MAX_PROBLEMS} more" if len(problems) > _MAX_PROBLEMS else ""
        raise SegDistillError(
            f"{where}: {len(problems)} problem(s):\n  " + "\n  ".join(problems[:_MAX_PROBLEMS]) + more
        )


def _need_dir(path: Path, problems: list[str]) -> bool:
    if path.is_dir():
        return True
    problems.append(f"folder {path} does not exist")
    return False


def _by_suffix(folder: Path, root: Path, pattern: str, suffix: str) -> dict[str, str]:
    """{name without `suffix`, relative to `folder`: path relative to `root`} of the files matching `pattern`."""
    out = {}
    for path in folder.glob(pattern):
        rel = path.relative_to(folder).as_posix()
        out[rel[: -len(suffix)]] = path.relative_to(root).as_posix()
    return out


def _pair_by_name(root: Path, images: dict, labels: dict, expected) -> tuple[list, list]:
    """Pairs of the names both sides have, sorted by name; an image or label without the other is a problem."""
    problems = [
        f"image {root / images[k]} has no label (expected {root / expected(k)})" for k in images if k not in labels
    ]
    problems += [f"label {root / labels[k]} has no image" for k in labels if k not in images]
    pairs = [(images[k], labels[k]) for k in sorted(images) if k in labels]
    return pairs, sorted(problems)


def _cityscapes(root: Path, mode: str, section: dict, where: str):
    img_dir, lab_dir = root / "leftImg8bit" / mode, root / "gtFine" / mode
    problems: list[str] = []
    if not (_need_dir(img_dir, problems) & _need_dir(lab_dir, problems)):
        return [], problems
    lab_suffix = "_gtFine_labelTrainIds.png"
    images = _by_suffix(img_dir, root, "*/*_leftImg8bit.png", "_leftImg8bit.png")
    labels = _by_suffix(lab_dir, root, f"*/*{lab_suffix}", lab_suffix)
    pairs, more = _pair_by_name(root, images, labels, lambda k: f"gtFine/{mode}/{k}{lab_suffix}")
    return pairs, problems + more


def _folders_of_stems(img_dir: Path, lab_dir: Path, root: Path, img_ext: str):
    problems: list[str] = []
    if not (_need_dir(img_dir, problems) & _need_dir(lab_dir, problems)):
        return [], problems
    images = _by_suffix(img_dir, root, f"*{img_ext}", img_ext)
    labels = _by_suffix(lab_dir, root, "*.png", ".png")
    lab_rel = lab_dir.relative_to(root).as_posix()
    return _pair_by_name(root, images, labels, lambda k: f"{lab_rel}/{k}.png")


def _ade20k(root: Path, mode: str, section: dict, where: str):
    sub = {"train": "training", "val": "validation"}[mode]
    return _folders_of_stems(root / "images" / sub, root / "annotations" / sub, root, ".jpg")


def _cocostuff(root: Path, mode: str, section: dict, where: str):
    return _folders_of_stems(root / "images" / f"{mode}2017", root / "annotations" / f"{mode}2017", root, ".jpg")


def _ids_in(list_file: Path, root: Path, img_dir: str, lab_dir: str, problems: list[str]) -> list[tuple[str, str]]:
    """Pairs for the ids of a VOC-style list file (one id a line), in its order; missing files are problems."""
    if not list_file.is_file():
        problems.append(f"list file {list_file} does not exist")
        return []
    pairs = []
    for lineno, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            pairs.append(_checked_pair(root, f"{img_dir}/{line.strip()}.jpg", f"{lab_dir}/{line.strip()}.png",
                                       f"{list_file}:{lineno}", problems))  # fmt: skip
    return [p for p in pairs if p]


def _checked_pair(root: Path, image: str, label: str, where: str, problems: list[str]):
    if not (root / image).is_file():
        problems.append(f"{where}: image {root / image} does not exist")
        return None
    if not (root / label).is_file():
        problems.append(f"{where}: image {root / image} has no label ({root / label} does not exist)")
        return None
    return image, label


def _voc(root: Path, mode: str, section: dict, where: str):
    sets = root / "VOC2012" / "ImageSets" / "Segmentation"
    problems: list[str] = []
    base = "train" if mode == "trainaug" else mode
    pairs = _ids_in(sets / f"{base}.txt", root, "VOC2012/JPEGImages", "VOC2012/SegmentationClass", problems)
    if mode == "trainaug":
        if not (sets / "aug.txt").is_file() or not (root / "VOC2012" / "SegmentationClassAug").is_dir():
            problems.append(
                f"mode trainaug needs {sets / 'aug.txt'} and {root / 'VOC2012' / 'SegmentationClassAug'} (made by "
                f"PaddleSeg's tools/data/voc_augment.py from the SBD annotations)"
            )
        else:
            pairs += _ids_in(sets / "aug.txt", root, "VOC2012/JPEGImages", "VOC2012/SegmentationClassAug", problems)
    return _unique(pairs), problems


def _context(root: Path, mode: str, section: dict, where: str):
    problems: list[str] = []
    list_file = root / "ImageSets" / "Segmentation" / f"{mode}_context.txt"
    return _unique(_ids_in(list_file, root, "JPEGImages", "Context", problems)), problems


def _generic(root: Path, mode: str, section: dict, where: str):
    from segdistill.data.validate import _leaves_root

    problems: list[str] = []
    list_path = section.get(f"{mode}_path")
    if not list_path:
        return [], [f"mode {mode} needs {mode}_path (a list file of 'image label' lines)"]
    list_file = Path(list_path)
    if not list_file.is_file():
        return [], [f"list file {list_file} ({mode}_path) does not exist"]
    sep = section.get("separator", " ")
    pairs = []
    for lineno, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), start=1):
        fields, at = line.strip().split(sep), f"{list_file}:{lineno}"
        if not line.strip():
            continue
        if len(fields) != 2:
            problems.append(f"{at}: expected 'image{sep}label', got {line.strip()!r}")
        elif any(_leaves_root(f) for f in fields):
            problems.append(f"{at}: {line.strip()!r} names a file outside dataset_root {root}")
        else:
            pairs.append(_checked_pair(root, fields[0], fields[1], at, problems))
    return _unique([p for p in pairs if p]), problems


def _unique(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Pairs in order, a repeated pair once (VOC's aug.txt may repeat ids of train.txt)."""
    return list(dict.fromkeys(pairs))


_LISTERS = {
    "Cityscapes": _cityscapes,
    "ADE20K": _ade20k,
    "PascalVOC": _voc,
    "CocoStuff": _cocostuff,
    "PascalContext": _context,
    "Dataset": _generic,
}


def select(pairs: list, count: int, seed: int, where: str) -> tuple[list, list]:
    """(rest, selection): `count` pairs drawn with `seed`, both in the list's order.

    The draw ranks each image by SHA-256 of seed and path, not by a random generator's stream: the same image is
    drawn on every machine and library version, whatever the list's order, and adding images to a set leaves
    the drawn ones drawn unless a new one ranks before them."""
    if count >= len(pairs):
        raise SegDistillError(
            f"{where}: data.paddleseg.selection_images is {count} but the training set has {len(pairs)} images; "
            f"leave at least one to train on"
        )
    ranked = sorted(pairs, key=lambda p: hashlib.sha256(f"{seed}\0{p[0]}".encode()).hexdigest())
    chosen = set(ranked[:count])
    return [p for p in pairs if p not in chosen], [p for p in pairs if p in chosen]


def shift_labels(label, shift: int, ignore_index: int):
    """A label array with the type's mapping applied (see validate.shift_values)."""
    from segdistill.data.validate import shift_values

    return shift_values(label, shift, ignore_index)


class ShiftLabels:
    """PaddleSeg transform: the label with ADE20K's mapping, applied where PaddleSeg's ADE20K class applies it
    (after reading, before any geometric transform), so a generic Dataset over the split lists gives its labels."""

    def __init__(self, shift: int = 1, ignore_index: int = 255):
        self.shift, self.ignore_index = int(shift), int(ignore_index)

    def __call__(self, data: dict) -> dict:
        if data.get("label") is not None:
            data["label"] = shift_labels(data["label"], self.shift, self.ignore_index)
        return data


def label_shift_transform(kind: SetType) -> list[dict]:
    """The transforms the study puts first in a section of this type (none for a type without a mapping)."""
    return [{"type": "ShiftLabels", "shift": kind.label_shift, "ignore_index": kind.ignore_index}] * bool(
        kind.label_shift
    )


def register_transforms() -> None:
    """Make `ShiftLabels` a PaddleSeg transform type (config.build calls this before PaddleSeg reads a YAML)."""
    from paddleseg.cvlibs import manager

    if "ShiftLabels" not in manager.TRANSFORMS.components_dict:
        manager.TRANSFORMS.add_component(ShiftLabels)


def sections(dic: dict, source) -> dict[str, dict]:
    """train_dataset and val_dataset of a PaddleSeg YAML (`_base_` followed), of one type and one root."""
    out = {}
    for key in ("train_dataset", "val_dataset"):
        if not isinstance(dic.get(key), dict):
            raise SegDistillError(f"{source}: missing required key '{key}' (a mapping)")
        out[key] = dic[key]
    train, val = out["train_dataset"], out["val_dataset"]
    for field in ("type", "dataset_root"):
        if _norm(train.get(field)) != _norm(val.get(field)):
            raise SegDistillError(
                f"{source}: train_dataset.{field} is {train.get(field)!r} but val_dataset.{field} is "
                f"{val.get(field)!r}; data.source paddleseg reads one data set"
            )
    return out


def identity(dic: dict, source) -> tuple[str, str]:
    """(type, normalised root) of a YAML's data set: what teacher and student must share."""
    train = sections(dic, source)["train_dataset"]
    return str(train.get("type")), _norm(train.get("dataset_root"))


def _norm(value):
    return os.path.normpath(value) if isinstance(value, str) and value else value
