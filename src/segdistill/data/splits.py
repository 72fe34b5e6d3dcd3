"""The study's splits of a data set PaddleSeg names by type (data.source paddleseg), written as list files.

Roles: `test` is the YAML's val_dataset (the official val the zoo and the papers report); `val`, which chooses
checkpoints, is `selection_images` images drawn out of train_dataset and removed from training (the official val
must not choose what it then reports); `train` is the rest. Every pair is decoded and checked before anything
trains, and every problem found is reported at once, each naming its file.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from segdistill import paddleseg_sets as sets
from segdistill.errors import SegDistillError
from segdistill.paddleseg_sets import SPLIT_FILES, sections


def _check_all(root: Path, pairs: list, num_classes: int, kind) -> tuple[set, dict]:
    """Decode every pair in threads (cv2 and Pillow release the GIL); all problems at once, in list order."""
    from segdistill.data.validate import _check_pair

    sizes, pixels, problems = set(), {}, []
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(
                _check_pair, root / img, root / lab, str(root / img), num_classes, kind.ignore_index, kind.label_shift
            )
            for img, lab in pairs
        ]
        for fut in futures:
            try:
                size, counts = fut.result()
            except SegDistillError as exc:
                problems.append(str(exc))
                continue
            sizes.add(size)
            for v, c in counts.items():
                pixels[v] = pixels.get(v, 0) + c
    sets.raise_problems(problems, f"{root}: validation")
    return sizes, pixels


def plan_splits(dic: dict, source, selection_images: int, selection_seed: int) -> dict:
    """{"train", "val", "test"}: pairs relative to the root, with the type, root and class names."""
    secs = sections(dic, source)
    train_sec, test_sec = secs["train_dataset"], secs["val_dataset"]
    kind = sets.set_type(train_sec, f"{source}: train_dataset")
    pool = sets.list_pairs(train_sec, f"{source}: train_dataset")
    test = sets.list_pairs(test_sec, f"{source}: val_dataset")
    shared = sorted({p[0] for p in pool} & {p[0] for p in test})
    if shared:
        raise SegDistillError(
            f"{source}: {len(shared)} image(s) of val_dataset are also in train_dataset, e.g. "
            f"{Path(train_sec['dataset_root']) / shared[0]}; the test split must take no part in training"
        )
    train, val = sets.select(pool, int(selection_images), int(selection_seed), f"{source}: train_dataset")
    return {
        "type": train_sec["type"],
        "kind": kind,
        "root": Path(train_sec["dataset_root"]),
        "class_names": sets.section_classes(train_sec, f"{source}: train_dataset"),
        "splits": {"train": train, "val": val, "test": test},
    }


def write_splits(
    student_config, selection_images: int, selection_seed: int = 0, out: dict | None = None, record=None
) -> dict:
    """List, pair, draw, validate; then write the split lists (`image label` relative to the root) and the
    validation record, which names each list's SHA-256 (so the data digest covers the splits)."""
    from segdistill.atomic import write_json, write_text
    from segdistill.paddleseg_yaml import read_yaml

    out = dict(out or SPLIT_FILES)
    plan = plan_splits(read_yaml(student_config), student_config, selection_images, selection_seed)
    root, kind, names = plan["root"], plan["kind"], plan["class_names"]
    unique = list(dict.fromkeys(p for split in plan["splits"].values() for p in split))
    sizes, pixels = _check_all(root, unique, len(names), kind)
    info = {
        "source": "paddleseg",
        "type": plan["type"],
        "root": str(root),
        "num_classes": len(names),
        "ignore_index": kind.ignore_index,
        "label_shift": kind.label_shift,
        "selection": {"images": int(selection_images), "seed": int(selection_seed)},
        "splits": {s: len(p) for s, p in plan["splits"].items()},
        "list_files": {},
        "num_samples": len(unique),
        "label_values": sorted(pixels),
        "pixel_counts": dict(sorted(pixels.items())),
        "image_sizes": [list(s) for s in sorted(sizes)],
    }
    for split, pairs in plan["splits"].items():
        text = "".join(f"{img} {lab}\n" for img, lab in pairs)
        write_text(out[split], text)
        info["list_files"][split] = {"path": str(out[split]), "sha256": hashlib.sha256(text.encode()).hexdigest()}
        print(f"{split}: {len(pairs)} images -> {out[split]}")
    if record is not None:
        write_json(record, info)
    return info
