"""Safe extraction of a dataset archive (zip, or tar / tar.gz).

Every member is checked before anything is written, and the extraction goes to a temporary sibling folder that is
renamed into place only when it is complete, so a failed or refused archive never leaves a dataset folder behind.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

from segdistill.errors import SegDistillError

# Folders some zip tools add next to the real content; they do not count as a second top folder.
_IGNORED_TOP = {"__MACOSX"}


def make_temp_sibling(target: Path) -> Path:
    """Create an empty hidden folder beside `target`, on the same file system so that a rename is atomic."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    # mkdtemp makes the folder private (0700); the published folder should get the usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


def publish_dir(tmp: Path, target: Path, overwrite: bool = False) -> None:
    """Rename the finished folder `tmp` to `target`.

    An existing empty `target` is replaced. A non-empty one is replaced only with `overwrite`; it is moved aside
    first and deleted after the swap, so `target` always holds either the old or the new complete content.
    """
    if target.is_symlink() or target.exists():
        if not target.is_dir() or target.is_symlink():
            raise SegDistillError(f"{target} exists and is not a folder; remove it or choose another destination")
        if any(target.iterdir()):
            if not overwrite:
                raise SegDistillError(f"{target} already exists and is not empty; remove it or choose another folder")
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / "content")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
            return
        target.rmdir()
    os.replace(tmp, target)


def check_target_free(target: Path, overwrite: bool) -> None:
    """Fail early (before doing any work) when `publish_dir` would refuse `target`."""
    if target.is_symlink() or target.exists():
        if not target.is_dir() or target.is_symlink():
            raise SegDistillError(f"{target} exists and is not a folder; remove it or choose another destination")
        if not overwrite and any(target.iterdir()):
            raise SegDistillError(f"{target} already exists and is not empty; remove it or choose another folder")


def _member_is_unsafe(info: zipfile.ZipInfo, target: Path) -> str | None:
    """Return why the member must not be extracted, or None when it is safe."""
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    return _name_is_unsafe(info.filename, target)


def _tar_member_is_unsafe(info: tarfile.TarInfo, target: Path) -> str | None:
    if info.issym() or info.islnk():
        return "is a link"
    if not (info.isfile() or info.isdir()):
        return "is not a regular file or folder"
    return _name_is_unsafe(info.name, target)


def _name_is_unsafe(name: str, target: Path) -> str | None:
    if "\x00" in name:
        return "has a NUL byte in its name"
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive or PurePosixPath(name).is_absolute():
        return "has an absolute path"
    # Split on both separators: a name made on Windows may use backslashes.
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return "contains '..'"
    root = target.resolve()
    dest = (root / name).resolve()
    if dest != root and root not in dest.parents:
        return "would be written outside the target folder"
    return None


def _top_folder(names: list[str]) -> str | None:
    """The single top-level folder shared by all members, or None."""
    tops = set()
    is_dir = False
    for name in names:
        parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
        if not parts or parts[0] in _IGNORED_TOP:
            continue
        tops.add(parts[0])
        if len(parts) > 1 or name.endswith("/"):
            is_dir = True
    if len(tops) == 1 and is_dir:
        return tops.pop()
    return None


def _corrupt(zip_path: Path, detail: object) -> SegDistillError:
    return SegDistillError(f"{zip_path} is truncated or corrupt ({detail}); delete it and rerun to download it again")


def _is_tar(path: Path) -> bool:
    # By content, not by name: a download URL need not end in .tar.gz. gzip magic, or a plain tar's "ustar".
    with open(path, "rb") as fh:
        head = fh.read(512)
    return head[:2] == b"\x1f\x8b" or head[257:262] == b"ustar"


def safe_extract(zip_path: str | os.PathLike, target_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Extract the zip or tar(.gz) archive `zip_path` into `target_dir` and return the dataset root inside it.

    Members with absolute paths, '..' components, paths resolving outside `target_dir`, or links (and, in a tar,
    devices) are refused before anything is written. A truncated or corrupt archive is reported as such. The root
    returned is the archive's single top folder when it has one, otherwise `target_dir`.
    """
    zip_path = Path(zip_path)
    target = Path(target_dir)
    if not zip_path.is_file():
        raise SegDistillError(f"archive {zip_path} does not exist")
    check_target_free(target, overwrite)
    if _is_tar(zip_path):
        return _safe_extract_tar(zip_path, target, overwrite)

    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise _corrupt(zip_path, exc) from None

    with zf:
        infos = zf.infolist()
        for info in infos:
            why = _member_is_unsafe(info, target)
            if why:
                raise SegDistillError(f"archive {zip_path}: refusing member {info.filename!r}: it {why}")
        if not infos:
            raise SegDistillError(f"archive {zip_path} is empty")

        tmp = make_temp_sibling(target)
        try:
            try:
                zf.extractall(tmp)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                # A bad CRC or a cut-off member shows up only while reading its data.
                raise _corrupt(zip_path, exc) from None
            top = _top_folder([i.filename for i in infos])
            publish_dir(tmp, target, overwrite=overwrite)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    return target / top if top else target


def _safe_extract_tar(tar_path: Path, target: Path, overwrite: bool) -> Path:
    try:
        tf = tarfile.open(tar_path)
        with tf:
            infos = tf.getmembers()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise _corrupt(tar_path, exc) from None
    for info in infos:
        why = _tar_member_is_unsafe(info, target)
        if why:
            raise SegDistillError(f"archive {tar_path}: refusing member {info.name!r}: it {why}")
    if not infos:
        raise SegDistillError(f"archive {tar_path} is empty")
    tmp = make_temp_sibling(target)
    try:
        try:
            with tarfile.open(tar_path) as tf:
                # The "data" filter repeats the checks above inside tarfile and drops owners and modes.
                tf.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise _corrupt(tar_path, exc) from None
        top = _top_folder([i.name + ("/" if i.isdir() else "") for i in infos])
        publish_dir(tmp, target, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target / top if top else target


def extract_to(zip_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Extract a data set archive so that `out` itself is the data set root, whether or not the archive wraps
    its content in a top folder (`safe_extract` returns that root)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        root = safe_extract(zip_path, Path(tmp) / "x")
        os.replace(root, out)
    print(f"extracted {zip_path} -> {out}", file=sys.stderr)
    return out
