"""The teacher's outputs on every distinct training input, computed once per study; the seeds' caches gather
their rows from it.

Why: the seeds' streams (segdistill.data.stream) draw the same training images again and again, and when the
train transforms are deterministic but for flips, every input a stream can produce is one of the training images
under one combination of flips. The default study's Resize, RandomHorizontalFlip, Normalize give 300 images x 2 =
600 distinct inputs, while its 10 seeds feed the teacher 2,400 (60 iterations x 4 per seed). One pass over the
600, in a fixed order and fixed batches, then serves every seed, and a seed added later reads the same table: the
table depends on the teacher, the data and the transforms, never on the seeds (docs/benchmark.md).

Each input is identified by the SHA-256 of its float32 bytes, as the stream makes it; a seed's cache job looks
every sample up and runs the teacher only on those not found (none, when the enumeration below is complete; the
job logs how many). A row is a function of the study alone (its input, the teacher, the fixed batches), so caches
are the same whichever job ran first. On a CPU whose teacher forward does not depend on the other images of the
batch (checked here: the default teacher in batches of 1, 4, 8 and 16) the rows are also the bits a forward in the
training batch gives, so a cache is the same file with or without the table.

Enumerable transforms: those below that draw nothing, plus PaddleSeg's RandomHorizontalFlip and
RandomVerticalFlip, whose outcomes are enumerated by setting `prob` to 0 and to 1 (PaddleSeg flips when
`random.random() < prob`). Any other transform, or a Resize with `interp: RANDOM`, makes the inputs
unenumerable: the table is then empty and says why, and each seed's job runs the teacher as before.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from pathlib import Path

import numpy as np

from segdistill.errors import SegDistillError

TABLE = "inputs.json"  # the rows' input digests, in row order, and why a table is empty
DRAW_NOTHING = {"Resize", "ResizeByLong", "ResizeByShort", "Normalize", "Padding", "ResizeToIntMult"}
FLIPS = {"RandomHorizontalFlip", "RandomVerticalFlip"}
BATCH = 16  # the table's forwards: fixed, so that a row does not depend on which seeds exist


def input_digest(image: np.ndarray) -> str:
    """What identifies one training input: the SHA-256 of its float32 bytes (C x H x W, C order)."""
    return hashlib.sha256(np.ascontiguousarray(image, dtype=np.float32).tobytes()).hexdigest()


def flip_variants(transforms: list) -> tuple[list[list[dict]], str | None]:
    """(every flip combination of `transforms` with each flip's `prob` set to 0 or 1, why not enumerable or None).

    A flip whose prob is already 0 or 1 is kept as it is (one outcome)."""
    flips = []
    for i, t in enumerate(transforms):
        kind = t.get("type") if isinstance(t, dict) else None
        if kind in FLIPS:
            prob = float(t.get("prob", 0.5 if kind == "RandomHorizontalFlip" else 0.1))
            flips.append((i, [prob] if prob in (0.0, 1.0) else [0.0, 1.0]))
        elif kind == "Resize" and str(t.get("interp", "LINEAR")).upper() == "RANDOM":
            return [], "train transform Resize draws its interpolation (interp: RANDOM)"
        elif kind not in DRAW_NOTHING:
            return [], f"train transform {kind} draws more than flips"
    variants = []
    for probs in itertools.product(*(choices for _, choices in flips)):
        variant = copy.deepcopy(transforms)
        for (i, _), prob in zip(flips, probs):
            variant[i]["prob"] = prob
        variants.append(variant)
    return variants, None


def distinct_datasets(dic: dict, source) -> tuple[list, str | None]:
    """(one train data set per flip combination of the experiment `dic`, why not enumerable or None)."""
    from segdistill.paddleseg_yaml import build, open_dataset

    variants, why = flip_variants(list(dic["train_dataset"].get("transforms") or []))
    datasets = []
    for transforms in variants:
        variant = copy.deepcopy(dic)
        variant["train_dataset"]["transforms"] = transforms
        datasets.append(open_dataset(build(variant, source), source))
    return datasets, why


def inputs(datasets):
    """(digest, image) of every distinct input, first seen first: data set by data set, sample by sample. A
    generator: images are made as they are used, so a large data set is never held in memory.

    The flip combinations are set, not drawn; the generators are put back after each sample all the same."""
    import random

    seen = set()
    for ds in datasets:
        for i in range(len(ds)):
            saved_py, saved_np = random.getstate(), np.random.get_state()
            try:
                img = np.ascontiguousarray(ds[i]["img"], dtype=np.float32)
            finally:
                random.setstate(saved_py)
                np.random.set_state(saved_np)
            d = input_digest(img)
            if d not in seen:
                seen.add(d)
                yield d, img


def batches(datasets, digests: list[str], size: int):
    """The distinct inputs again, `size` at a time, each checked against the digest the first pass gave it (a
    transform that is not deterministic after all is refused, not stored under another input's key)."""
    batch = []
    for (d, img), want in itertools.zip_longest(inputs(datasets), digests):
        if d != want:
            raise SegDistillError(
                "the train transforms gave other inputs on a second pass over the data set: they draw more than "
                "flips; set teacher.outputs: online or report the transform list"
            )
        batch.append(img)
        if len(batch) == size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


class DistinctTable:
    """A written table, opened for gathering: rows by input digest, checked against the cache job's plan."""

    def __init__(self, folder, manifest: dict):
        self.folder = Path(folder)
        table = json.loads((self.folder / TABLE).read_text())
        self.why_empty = table.get("why_empty")
        self.row = {d: i for i, d in enumerate(table["digests"])}
        self.manifest = manifest
        self.arrays = {}
        if self.row:
            for n, spec in manifest["tensors"].items():
                self.arrays[n] = np.load(self.folder / spec["file"], mmap_mode="r")

    def check(self, expected: dict, names) -> None:
        """The table was made by this cache job's teacher, data, and tensors (Snakemake keeps them in step; a
        table from elsewhere is refused by name)."""
        m, source = self.manifest, self.folder
        if m["teacher"]["weights_sha256"] != expected["teacher"]["weights_sha256"]:
            raise SegDistillError(f"{source}: made with another teacher's weights; rerun its job")
        if m["data"]["sha256"] != expected["data"]["sha256"]:
            raise SegDistillError(f"{source}: made from other data or train transforms; rerun its job")
        for n in names:
            if n not in m["tensors"] or m["tensors"][n]["upsample"] != expected["tensors"][n]["upsample"]:
                raise SegDistillError(f"{source}: has no teacher tensor '{n}' as this cache stores it; rerun its job")

    def gather(self, images: np.ndarray, names) -> dict | None:
        """{name: rows} of a batch when every image is in the table, else None."""
        if not self.row:  # an empty table: no digest to compute
            return None
        rows = [self.row.get(input_digest(img)) for img in images]
        if any(r is None for r in rows):
            return None
        return {n: np.asarray(self.arrays[n][rows]) for n in names}
