import hashlib
import socket
import time

import pytest

from data_helpers import _QuietHandler, hidden_leftovers, serve, zip_dir
from segdistill.data import download, generate, safe_extract, sha256_of, validate_dataset
from segdistill.errors import SegDistillError


@pytest.fixture(scope="module")
def served_zip(tmp_path_factory):
    """A zip of a small generated set, served by a real HTTP server on 127.0.0.1."""
    base = tmp_path_factory.mktemp("served")
    summary = generate(base / "src", num_images=6, size=32, seed=0, split=(0.5, 0.25, 0.25))
    www = base / "www"
    www.mkdir()
    zip_path = zip_dir(base / "src", www / "optic_disc_seg.zip")
    data = zip_path.read_bytes()
    with serve(www) as url:
        yield {
            "url": f"{url}/optic_disc_seg.zip",
            "base": url,
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": data,
            "splits": summary["splits"],
        }


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_with_good_checksum(served_zip, tmp_path):
    dest = tmp_path / "dl" / "optic_disc_seg.zip"
    seen = download(served_zip["url"], dest, sha256=served_zip["sha256"].upper())
    assert seen == served_zip["sha256"]
    assert dest.read_bytes() == served_zip["bytes"]
    assert sha256_of(dest) == served_zip["sha256"]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["optic_disc_seg.zip"]


def test_download_without_checksum_returns_digest_and_chains_into_extract(served_zip, tmp_path):
    dest = tmp_path / "optic_disc_seg.zip"
    assert download(served_zip["url"], dest) == served_zip["sha256"]
    root = safe_extract(dest, tmp_path / "data")
    assert root == tmp_path / "data" / "optic_disc_seg"
    assert validate_dataset(root, num_classes=2)["splits"] == served_zip["splits"]


def test_download_bad_checksum_leaves_nothing(served_zip, tmp_path):
    dest = tmp_path / "optic_disc_seg.zip"
    wrong = "0" * 64
    with pytest.raises(SegDistillError) as err:
        download(served_zip["url"], dest, sha256=wrong)
    msg = str(err.value)
    assert served_zip["url"] in msg and wrong in msg and served_zip["sha256"] in msg
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_download_bad_checksum_keeps_an_existing_file(served_zip, tmp_path):
    dest = tmp_path / "optic_disc_seg.zip"
    dest.write_bytes(b"previous")
    with pytest.raises(SegDistillError, match="checksum mismatch"):
        download(served_zip["url"], dest, sha256="1" * 64)
    assert dest.read_bytes() == b"previous"
    assert hidden_leftovers(tmp_path) == []


def test_unreachable_url_names_the_destination(tmp_path):
    dest = tmp_path / "downloads" / "optic_disc_seg.zip"
    url = f"http://127.0.0.1:{_closed_port()}/optic_disc_seg.zip"
    start = time.monotonic()
    with pytest.raises(SegDistillError) as err:
        download(url, dest, sha256="a" * 64)
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert url in msg and "could not reach" in msg
    assert str(dest) in msg and "continues" in msg
    assert "a" * 64 in msg  # so a hand-placed file can be checked
    assert not dest.exists()
    assert hidden_leftovers(dest.parent) == []


def test_http_error_is_reported_with_status(served_zip, tmp_path):
    dest = tmp_path / "x.zip"
    with pytest.raises(SegDistillError) as err:
        download(served_zip["base"] + "/no_such.zip", dest)
    assert "HTTP 404" in str(err.value) and str(dest) in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_timeout_is_reported_quickly(tmp_path):
    # A socket that accepts connections (backlog) but never answers.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/f.zip"
        dest = tmp_path / "f.zip"
        start = time.monotonic()
        with pytest.raises(SegDistillError) as err:
            download(url, dest, timeout=0.5)
        assert time.monotonic() - start < 10
    assert "timed out" in str(err.value) and str(dest) in str(err.value)
    assert list(tmp_path.iterdir()) == []


class _CutOffHandler(_QuietHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"x" * 1000)
        self.wfile.flush()
        self.close_connection = True


def test_cut_off_transfer_is_a_network_error(tmp_path):
    with serve(tmp_path, handler_class=_CutOffHandler) as url:
        dest = tmp_path / "out" / "f.zip"
        with pytest.raises(SegDistillError) as err:
            download(url + "/f.zip", dest)
    assert str(dest) in str(err.value)
    assert not dest.exists() and hidden_leftovers(dest.parent) == []


def test_bad_arguments(tmp_path):
    with pytest.raises(SegDistillError, match="64 hex"):
        download("http://127.0.0.1:1/x", tmp_path / "x", sha256="abc")
    with pytest.raises(SegDistillError, match="not a valid URL"):
        download("no-scheme-here", tmp_path / "x")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SegDistillError, match="no such file"):
        sha256_of(tmp_path / "missing.zip")


def test_sha256_of_matches_hashlib(tmp_path):
    p = tmp_path / "blob"
    data = bytes(range(256)) * 9000  # larger than one read chunk
    p.write_bytes(data)
    assert sha256_of(p) == hashlib.sha256(data).hexdigest()
