"""Backbone downloads: pinned URLs are checked, an unpinned one says once that it was not verified, offline the
error names a path that exists and that the next run reads, and the digests reach provenance.json."""

import hashlib
import io
import json
import re
import socket
import tarfile
from pathlib import Path

import pytest

from data_helpers import serve
from segdistill.errors import SegDistillError
from segdistill.pretrained import backbone_records, download_path, fetch_backbone
from segdistill.report.provenance import collect

WEIGHTS = b"backbone weights (a pickle in real life)"


def backbone_tar(path):
    """A .tar.gz holding one folder with a model.pdparams, as PaddleSeg publishes backbones."""
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("resnet_x/model.pdparams")
        info.size = len(WEIGHTS)
        tar.addfile(info, io.BytesIO(WEIGHTS))
    return path


@pytest.fixture
def served(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    data = backbone_tar(www / "resnet_x.tar.gz").read_bytes()
    with serve(www) as url:
        yield f"{url}/resnet_x.tar.gz", hashlib.sha256(data).hexdigest()


def test_offline_names_a_path_that_exists_and_the_rerun_reads_it(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/resnet_x.tar.gz"
    cache = str(tmp_path / "pretrained")
    with pytest.raises(SegDistillError) as err:
        fetch_backbone(url, cache, log=lambda m: None)
    where = re.search(r"put it at (\S+) \(exactly that path\)", str(err.value)).group(1)
    assert where == str(download_path(url, cache)) and where.endswith("/resnet_x/download/resnet_x.tar.gz")
    assert Path(where).parent.is_dir()  # the folder to put the file in is there
    backbone_tar(Path(where))  # the user puts the file there by hand
    messages = []
    target = fetch_backbone(url, cache, log=messages.append)
    assert Path(target).read_bytes() == WEIGHTS
    assert sum("is not pinned, so its download was not verified" in m for m in messages) == 1
    source = json.loads(Path(target).with_name("source.json").read_text())
    assert source["verified"] is False
    assert source["download_sha256"] == hashlib.sha256(Path(where).read_bytes()).hexdigest()


def test_a_pinned_download_is_verified_and_a_wrong_pin_refused(served, tmp_path):
    url, digest = served
    with pytest.raises(SegDistillError, match=f"expected SHA-256 {'0' * 64}, got {digest}"):
        fetch_backbone(url, str(tmp_path / "bad"), sha256="0" * 64, log=lambda m: None)
    assert not list((tmp_path / "bad").rglob("*.pdparams")) and not list((tmp_path / "bad").rglob("*.tar.gz"))
    messages = []
    target = fetch_backbone(url, str(tmp_path / "good"), sha256=digest, log=messages.append)
    assert not any("not pinned" in m for m in messages)
    records = backbone_records([target])
    assert records[target]["verified"] is True and records[target]["download_sha256"] == digest
    assert records[target]["sha256"] == hashlib.sha256(WEIGHTS).hexdigest() and records[target]["url"] == url
    assert collect({"seeds": [0]}, backbones=[target])["backbones"] == records
