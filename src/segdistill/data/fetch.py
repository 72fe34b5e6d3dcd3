"""Download a file with a checksum, or say exactly where to put it by hand.

The download goes to a temporary file beside the destination and is renamed into place only after the whole body
arrived and its SHA-256 matched, so `dest` never holds a partial or wrong file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from segdistill.errors import SegDistillError

_CHUNK = 1 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks so large archives do not fill memory."""
    path = Path(path)
    if not path.is_file():
        raise SegDistillError(f"cannot checksum {path}: no such file")
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _unreachable(url: str, dest: Path, reason: object, sha256: str | None) -> SegDistillError:
    msg = (
        f"could not reach {url} ({reason}). Download the file by other means and put it at {dest} "
        f"(exactly that path); the workflow then continues from it."
    )
    if sha256:
        msg += f" Its SHA-256 must be {sha256}."
    return SegDistillError(msg)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
        if isinstance(exc, str):
            return exc
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    return str(exc) or type(exc).__name__


def download(url: str, dest: str | os.PathLike, sha256: str | None = None, timeout: float = 30.0) -> str:
    """Download `url` to `dest` and return the SHA-256 of what arrived.

    With `sha256`, a different digest is an error and nothing is written at `dest`. Any network failure (name
    lookup, refused connection, timeout, HTTP error, cut-off body) is an error that names `dest` as the place
    to put the file by hand.
    """
    dest = Path(dest)
    expected = None
    if sha256 is not None:
        expected = str(sha256).strip().lower()
        if not _HEX64.match(expected):
            raise SegDistillError(f"expected SHA-256 for {url} is not 64 hex digits: {sha256!r}")

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        received = 0
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)
            except ValueError as exc:
                raise SegDistillError(f"{url!r} is not a valid URL ({exc})") from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                if isinstance(exc, urllib.error.HTTPError):
                    exc.close()
                raise _unreachable(url, dest, _describe(exc), expected) from None
            with response:
                length = response.headers.get("Content-Length")
                while True:
                    # Only reading is a network failure; a failed write (e.g. a full disk) keeps its own error.
                    try:
                        chunk = response.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        raise _unreachable(url, dest, f"transfer failed: {_describe(exc)}", expected) from None
                    if not chunk:
                        break
                    digest.update(chunk)
                    received += len(chunk)
                    out.write(chunk)
            if length is not None and length.isdigit() and int(length) != received:
                raise _unreachable(url, dest, f"transfer cut off after {received} of {length} bytes", expected)
            out.flush()
            os.fsync(out.fileno())
            # mkstemp makes the file private (0600); the published file should get the usual permissions.
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(out.fileno(), 0o666 & ~umask)
        seen = digest.hexdigest()
        if expected is not None and seen != expected:
            raise SegDistillError(
                f"checksum mismatch for {url}: expected SHA-256 {expected}, got {seen}; nothing was written to {dest}"
            )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return seen
