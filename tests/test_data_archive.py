import zipfile

import pytest

from data_helpers import hidden_leftovers, tree_bytes, zip_dir
from segdistill.data import generate, safe_extract, validate_dataset
from segdistill.errors import SegDistillError


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("set") / "src"
    generate(root, num_images=4, size=32, seed=0, split=(0.5, 0.25, 0.25))
    return root


def _zip_with(path, members):
    """A zip whose members are (ZipInfo or name, bytes) pairs, written as given (no name clean-up)."""
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in members:
            zf.writestr(info, data)
    return path


def _assert_nothing_written(tmp_path, target):
    assert not target.exists()
    if target.parent.exists():
        assert hidden_leftovers(target.parent) == []


def test_extract_returns_single_top_folder(small_set, tmp_path):
    zp = zip_dir(small_set, tmp_path / "optic_disc_seg.zip")
    root = safe_extract(zp, tmp_path / "data")
    assert root == tmp_path / "data" / "optic_disc_seg"
    assert tree_bytes(root) == tree_bytes(small_set)
    assert validate_dataset(root, 2)["label_values"] == [0, 1]
    assert hidden_leftovers(tmp_path) == []


def test_extract_without_top_folder_returns_target(small_set, tmp_path):
    zp = zip_dir(small_set, tmp_path / "flat.zip", top=None)
    root = safe_extract(zp, tmp_path / "data")
    assert root == tmp_path / "data"
    assert tree_bytes(root) == tree_bytes(small_set)


def test_macos_metadata_folder_does_not_hide_the_top_folder(tmp_path):
    zp = _zip_with(tmp_path / "a.zip", [("top/a.txt", b"a"), ("__MACOSX/top/._a.txt", b"meta")])
    assert safe_extract(zp, tmp_path / "out") == tmp_path / "out" / "top"


@pytest.mark.parametrize(
    "member, why",
    [
        ("../evil.txt", "'..'"),
        ("ok/../../evil.txt", "'..'"),
        ("/tmp/evil_abs.txt", "absolute"),
        ("C:/evil.txt", "absolute"),
    ],
)
def test_escaping_member_is_refused_before_writing(tmp_path, member, why):
    zp = _zip_with(tmp_path / "bad.zip", [("good/first.txt", b"fine"), (zipfile.ZipInfo(member), b"evil")])
    target = tmp_path / "sub" / "data"
    with pytest.raises(SegDistillError) as err:
        safe_extract(zp, target)
    msg = str(err.value)
    assert str(zp) in msg and member in msg and why in msg
    _assert_nothing_written(tmp_path, target)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "sub" / "evil.txt").exists()


def test_symlink_member_is_refused(tmp_path):
    link = zipfile.ZipInfo("data/link")
    link.external_attr = 0o120777 << 16  # S_IFLNK: the data is the link target
    zp = _zip_with(tmp_path / "link.zip", [("data/a.txt", b"a"), (link, b"/etc/passwd")])
    target = tmp_path / "out"
    with pytest.raises(SegDistillError) as err:
        safe_extract(zp, target)
    assert str(zp) in str(err.value) and "data/link" in str(err.value) and "symbolic link" in str(err.value)
    _assert_nothing_written(tmp_path, target)


def test_truncated_zip_is_reported(small_set, tmp_path):
    zp = zip_dir(small_set, tmp_path / "optic_disc_seg.zip")
    data = zp.read_bytes()
    zp.write_bytes(data[: len(data) // 2])
    target = tmp_path / "data"
    with pytest.raises(SegDistillError) as err:
        safe_extract(zp, target)
    msg = str(err.value)
    assert str(zp) in msg and "truncated or corrupt" in msg and "delete it and rerun" in msg
    _assert_nothing_written(tmp_path, target)


def test_corrupt_member_data_is_reported_and_cleaned_up(tmp_path):
    payload = b"0123456789" * 100
    zp = tmp_path / "crc.zip"
    with zipfile.ZipFile(zp, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("top/a.txt", b"intact")
        zf.writestr("top/b.bin", payload)
    data = bytearray(zp.read_bytes())
    pos = data.find(payload)
    data[pos + 500] ^= 0xFF  # the central directory is intact, only b.bin's CRC no longer matches
    zp.write_bytes(bytes(data))
    target = tmp_path / "data"
    with pytest.raises(SegDistillError) as err:
        safe_extract(zp, target)
    assert str(zp) in str(err.value) and "truncated or corrupt" in str(err.value)
    _assert_nothing_written(tmp_path, target)


def test_existing_target_refused_unless_overwrite(small_set, tmp_path):
    zp = zip_dir(small_set, tmp_path / "optic_disc_seg.zip")
    target = tmp_path / "data"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(SegDistillError, match="not empty"):
        safe_extract(zp, target)
    assert (target / "keep.txt").read_text() == "mine"
    root = safe_extract(zp, target, overwrite=True)
    assert not (target / "keep.txt").exists() and (root / "train_list.txt").is_file()
    assert hidden_leftovers(tmp_path) == []


def test_empty_existing_target_is_fine_and_missing_zip_is_an_error(small_set, tmp_path):
    zp = zip_dir(small_set, tmp_path / "optic_disc_seg.zip")
    (tmp_path / "data").mkdir()
    assert safe_extract(zp, tmp_path / "data") == tmp_path / "data" / "optic_disc_seg"
    with pytest.raises(SegDistillError, match="does not exist"):
        safe_extract(tmp_path / "missing.zip", tmp_path / "other")
