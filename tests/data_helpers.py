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


def make_generic_dataset(
    root: Path, class_names=("sky", "road", "car"), counts=None, size: int = 32, seed: int = 0, list_names=None
) -> Path:
    """A small data set in PaddleSeg's generic layout, written here with numpy and cv2 (not by segdistill).

    Each image is noise with a few filled shapes; a shape's colour encodes its class (0 = background), so a
    model can learn it. `list_names` maps a split to its list file (default `<split>_list.txt`).
    """
    import cv2
    import numpy as np

    counts = counts or {"train": 16, "val": 4, "test": 4}
    rng = np.random.default_rng(seed)
    colours = [(40, 40, 40), (60, 200, 60), (200, 60, 200), (60, 200, 220), (220, 120, 40)]
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for split, n in counts.items():
        lines = []
        for i in range(n):
            img = np.full((size, size, 3), colours[0], np.uint8)
            label = np.zeros((size, size), np.uint8)
            for _ in range(3):
                k = int(rng.integers(1, len(class_names)))
                x, y = (int(v) for v in rng.integers(0, size - 8, 2))
                w, h = (int(v) for v in rng.integers(6, size // 2, 2))
                cv2.rectangle(img, (x, y), (x + w, y + h), colours[k], -1)
                cv2.rectangle(label, (x, y), (x + w, y + h), k, -1)
            img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
            name = f"{split}_{i:03d}"
            cv2.imwrite(str(root / "images" / f"{name}.jpg"), img)
            cv2.imwrite(str(root / "masks" / f"{name}.png"), label)
            lines.append(f"images/{name}.jpg masks/{name}.png\n")
        list_file = root / (list_names or {}).get(split, f"{split}_list.txt")
        list_file.parent.mkdir(parents=True, exist_ok=True)
        list_file.write_text("".join(lines))
    return root
