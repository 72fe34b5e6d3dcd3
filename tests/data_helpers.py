"""Helpers shared by the data tests: building zips and serving files over a real local HTTP server."""

from __future__ import annotations

import contextlib
import http.server
import threading
import zipfile
from functools import partial
from pathlib import Path


def zip_dir(src: Path, zip_path: Path, top: str | None = "optic_disc_seg") -> Path:
    """Zip every file under `src`, under the folder `top` (or at the archive root when top is None)."""
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                rel = path.relative_to(src).as_posix()
                zf.write(path, f"{top}/{rel}" if top else rel)
    return zip_path


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Relative path -> content for every file under root."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def hidden_leftovers(folder: Path) -> list[str]:
    """Names of temporary dot-files/folders (our temp siblings) left in `folder`."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature fixed by the base class
        pass


@contextlib.contextmanager
def serve(directory: Path, handler_class=_QuietHandler):
    """Serve `directory` on 127.0.0.1 at an ephemeral port in a thread; yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler_class, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
