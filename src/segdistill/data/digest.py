"""What identifies a training set: the digest a cache records and a run's key includes."""

from __future__ import annotations

import hashlib
import json
import os

from segdistill.data.fetch import sha256_of
from segdistill.paddleseg_yaml import DATA_PATH_KEYS


def data_digest(train_dataset: dict, dataset, validation=None) -> str:
    """SHA-256 of what decides the training images: the student config's train data set section (type, mode,
    transforms; not where it lies), its file list (relative to the data root) and the data validation record."""
    section = {k: v for k, v in train_dataset.items() if k not in DATA_PATH_KEYS}
    root = str(getattr(dataset, "dataset_root", None) or train_dataset.get("dataset_root") or "")
    files = [
        [os.path.relpath(str(p), root) if root else str(p) for p in entry]
        for entry in (getattr(dataset, "file_list", None) or [])
    ]
    record = {
        "train_dataset": section,
        "files": files,
        "validation_sha256": sha256_of(validation) if validation else None,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()
