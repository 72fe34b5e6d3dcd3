"""Datasets in PaddleSeg's OpticDiscSeg layout: a synthetic generator, download, safe unzip and validation."""

from segdistill.data.archive import extract_to, safe_extract
from segdistill.data.fetch import download, sha256_of
from segdistill.data.synthetic import CLASS_NAMES, generate
from segdistill.data.validate import validate_dataset, write_validation

__all__ = [
    "CLASS_NAMES",
    "download",
    "extract_to",
    "generate",
    "safe_extract",
    "sha256_of",
    "validate_dataset",
    "write_validation",
]
