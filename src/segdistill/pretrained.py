"""Backbone weights named by URL in a config (`model.backbone.pretrained`): download once, cache, extract."""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path

from segdistill.config import pretrained_cache_path
from segdistill.errors import SegDistillError


def fetch_backbone(url: str, cache_dir: str) -> str:
    """Download `url` (a .pdparams or a .tar.gz holding one) into the cache; returns the local model.pdparams."""
    from segdistill.data import download

    target = pretrained_cache_path(url, cache_dir)
    if target.is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive = Path(tmp) / url.rsplit("/", 1)[-1]
        download(url, archive)
        if archive.suffix == ".pdparams":
            shutil.move(archive, target)
            return str(target)
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")  # refuses members that leave the folder
        except (tarfile.TarError, OSError) as exc:
            raise SegDistillError(f"{url}: not a readable tar archive ({exc})") from None
        found = sorted(Path(tmp).rglob("*.pdparams"))
        if not found:
            raise SegDistillError(f"{url}: the archive holds no .pdparams file")
        shutil.move(found[0], target)
    return str(target)
