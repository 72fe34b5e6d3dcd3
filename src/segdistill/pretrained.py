"""Backbone weights named by URL in a config (`model.backbone.pretrained`): download once, cache, extract.

A backbone file is a pickle: loading an untrusted one runs its code. A URL can be pinned (the study's
`pretrained_sha256: {URL: digest}`); the download is then checked against it. An unpinned one is fetched, and
the job says once that it was not verified, with the digest seen so that it can be pinned. Either way the
digests are recorded beside the cached file (`source.json`) and, from there, in the report's provenance.

The download lands at a fixed place, `<cache>/<name>/download/<file name>`: offline, the error names that path,
and a file put there by hand is what the next run reads (checked against the pin when there is one).
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from pathlib import Path

from segdistill.errors import SegDistillError
from segdistill.paddleseg_yaml import pretrained_cache_path

SOURCE = "source.json"


def download_path(url: str, cache_dir: str) -> Path:
    """Where the file behind `url` is downloaded to (or put by hand when there is no network)."""
    return pretrained_cache_path(url, cache_dir).parent / "download" / url.split("?")[0].rstrip("/").rsplit("/", 1)[-1]


def _obtain(url: str, archive: Path, sha256: str | None, log) -> tuple[str, bool]:
    """(SHA-256 of the downloaded file, whether it was checked against a pin); a file already at `archive` (put
    there by hand) is used instead of the network."""
    from segdistill.data import download, sha256_of

    if archive.is_file():
        seen = sha256_of(archive)
        if sha256 and seen != sha256.lower():
            raise SegDistillError(
                f"{archive}: SHA-256 {seen}, but pretrained_sha256 pins {url} to {sha256}; "
                f"replace the file with the published one"
            )
        log(f"using {archive} (already there) for {url}")
    else:
        archive.parent.mkdir(parents=True, exist_ok=True)  # the path an offline error names exists
        seen = download(url, archive, sha256=sha256)
    if not sha256:
        log(
            f"note: {url} is not pinned, so its download was not verified (SHA-256 {seen}). Backbone files are "
            f"pickles; pin it in the study: pretrained_sha256: {{{url}: {seen}}}"
        )
    return seen, bool(sha256)


def _extract(url: str, archive: Path, target: Path) -> None:
    if archive.suffix == ".pdparams":
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(archive, tmp)
        tmp.replace(target)
        return
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")  # refuses members that leave the folder
        except (tarfile.TarError, OSError) as exc:
            raise SegDistillError(f"{archive} (from {url}): not a readable tar archive ({exc})") from None
        found = sorted(Path(tmp).rglob("*.pdparams"))
        if not found:
            raise SegDistillError(f"{archive} (from {url}): the archive holds no .pdparams file")
        shutil.move(found[0], target)


def fetch_backbone(url: str, cache_dir: str, sha256: str | None = None, log=print) -> str:
    """Download `url` (a .pdparams or a .tar.gz holding one) into the cache, checked against `sha256` when given;
    returns the local model.pdparams, with `source.json` beside it (URL, digests, whether it was verified)."""
    from segdistill.atomic import write_json
    from segdistill.data import sha256_of

    target = pretrained_cache_path(url, cache_dir)
    record = target.with_name(SOURCE)
    if target.is_file() and record.is_file():
        return str(target)
    archive = download_path(url, cache_dir)
    seen, verified = _obtain(url, archive, sha256, log)
    _extract(url, archive, target)
    write_json(
        record,
        {
            "url": url,
            "download": str(archive),
            "download_sha256": seen,
            "verified": verified,
            "model_sha256": sha256_of(target),
        },
    )
    return str(target)


def backbone_records(paths) -> dict:
    """{backbone file: its SHA-256, plus what `source.json` beside it says (URL, download digest, verified)}:
    the provenance of every backbone file the runs loaded."""
    from segdistill.data import sha256_of

    out = {}
    for path in map(Path, paths):
        source = path.with_name(SOURCE)
        extra = json.loads(source.read_text()) if source.is_file() else {}
        out[str(path)] = {**extra, "sha256": sha256_of(path)}
    return out
