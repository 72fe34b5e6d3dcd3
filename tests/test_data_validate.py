import re
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from segdistill.data import generate, validate_dataset
from segdistill.errors import SegDistillError


@pytest.fixture
def ds(tmp_path):
    """A fresh valid set: 10 images of 32x32, 6 train / 2 val / 2 test."""
    root = tmp_path / "ds"
    generate(root, num_images=10, size=32, seed=0, split=(0.6, 0.2, 0.2))
    return root


def _lines(root, split):
    return (root / f"{split}_list.txt").read_text().splitlines()


def _first_pair(root, split="train"):
    img, lab = _lines(root, split)[0].split()
    return root / img, root / lab


def _errmsg(root, **kw):
    with pytest.raises(SegDistillError) as err:
        validate_dataset(root, num_classes=2, **kw)
    return str(err.value)


def test_valid_set_summary(ds):
    r = validate_dataset(ds, num_classes=2)
    assert r["splits"] == {"train": 6, "val": 2, "test": 2}
    assert r["label_values"] == [0, 1]
    assert sum(r["pixel_counts"].values()) == 10 * 32 * 32
    assert 0 < r["pixel_counts"][1] < r["pixel_counts"][0]
    assert r["num_samples"] == 10
    assert r["image_sizes"] == [[32, 32]]


def test_missing_root(tmp_path):
    msg = _errmsg(tmp_path / "nope")
    assert str(tmp_path / "nope") in msg and "does not exist" in msg


def test_missing_required_list_and_optional_list(ds):
    (ds / "test_list.txt").unlink()
    assert "test" not in validate_dataset(ds, 2)["splits"]
    (ds / "val_list.txt").unlink()
    msg = _errmsg(ds)
    assert str(ds / "val_list.txt") in msg and "does not exist" in msg


def test_line_with_wrong_field_count(ds):
    lines = _lines(ds, "train")
    lines[2] = lines[2].split()[0]  # label missing on line 3
    (ds / "train_list.txt").write_text("\n".join(lines) + "\n")
    msg = _errmsg(ds)
    assert f"{ds / 'train_list.txt'}:3" in msg and "two fields" in msg


def test_blank_lines_are_ignored(ds):
    lines = _lines(ds, "val")
    (ds / "val_list.txt").write_text("\n" + lines[0] + "\n\n" + lines[1] + "\n\n")
    assert validate_dataset(ds, 2)["splits"]["val"] == 2


@pytest.mark.parametrize("which", ["image", "label"])
def test_missing_listed_file(ds, which):
    lines = _lines(ds, "val")
    img, lab = _first_pair(ds, "val")
    victim = img if which == "image" else lab
    victim.unlink()
    msg = _errmsg(ds)
    assert str(ds / "val_list.txt") in msg and ":1" in msg
    assert str(victim) in msg and which in msg and "does not exist" in msg
    assert lines  # the list itself is untouched


def test_undecodable_image(ds):
    img, _ = _first_pair(ds)
    img.write_bytes(b"this is not a jpeg")
    msg = _errmsg(ds)
    assert str(img) in msg and "cannot be decoded" in msg


def test_undecodable_label(ds):
    _, lab = _first_pair(ds)
    lab.write_bytes(b"\x89PNG broken")
    msg = _errmsg(ds)
    assert str(lab) in msg and "cannot be decoded" in msg


def test_size_mismatch_names_both_files_and_sizes(ds):
    img, lab = _first_pair(ds)
    cv2.imwrite(str(lab), np.zeros((20, 32), np.uint8))  # height 20, width 32
    msg = _errmsg(ds)
    assert str(img) in msg and str(lab) in msg
    assert "32x32" in msg and "32x20" in msg


def test_label_values_out_of_range(ds):
    _, lab = _first_pair(ds, "val")
    arr = cv2.imread(str(lab), cv2.IMREAD_UNCHANGED)
    arr[0, :3] = [2, 7, 7]
    cv2.imwrite(str(lab), arr)
    msg = _errmsg(ds)
    assert str(lab) in msg and "2, 7" in msg and "0..1" in msg
    # With three classes only 7 is wrong.
    with pytest.raises(SegDistillError, match=re.escape("values 7 outside 0..2")):
        validate_dataset(ds, num_classes=3)


def test_ignore_index_is_allowed_only_when_set(ds):
    _, lab = _first_pair(ds)
    arr = cv2.imread(str(lab), cv2.IMREAD_UNCHANGED)
    arr[:2, :] = 255
    cv2.imwrite(str(lab), arr)
    assert validate_dataset(ds, 2)["label_values"] == [0, 1, 255]
    with pytest.raises(SegDistillError, match="255"):
        validate_dataset(ds, 2, ignore_index=None)


def test_empty_required_split_and_empty_optional_split(ds):
    (ds / "test_list.txt").write_text("")
    assert validate_dataset(ds, 2)["splits"]["test"] == 0
    (ds / "train_list.txt").write_text("\n")
    msg = _errmsg(ds)
    assert str(ds / "train_list.txt") in msg and "empty" in msg


def test_palette_label_is_read_as_indices(ds):
    # PaddleSeg reads labels with Pillow, so a colour-mapped PNG counts by its indices.
    _, lab = _first_pair(ds)
    arr = cv2.imread(str(lab), cv2.IMREAD_UNCHANGED)
    im = Image.fromarray(arr, mode="L").convert("P")
    im.putpalette([0, 0, 0, 128, 0, 0] + [0] * (254 * 3))
    im.save(lab)
    assert Image.open(lab).mode == "P"
    assert validate_dataset(ds, 2)["label_values"] == [0, 1]


def test_colour_label_is_rejected(ds):
    _, lab = _first_pair(ds)
    cv2.imwrite(str(lab), np.zeros((32, 32, 3), np.uint8))
    msg = _errmsg(ds)
    assert str(lab) in msg and "single-channel" in msg


def test_hundreds_of_samples_are_checked_quickly(tmp_path):
    root = tmp_path / "big"
    generate(root, num_images=400, size=64, seed=3)
    start = time.monotonic()
    r = validate_dataset(root, 2)
    elapsed = time.monotonic() - start
    assert r["num_samples"] == 400
    assert elapsed < 5.0, f"validating 400 samples took {elapsed:.1f} s"


@pytest.mark.parametrize("kind", ["dotdot", "absolute"])
def test_list_paths_outside_the_root_are_refused_unless_allowed(ds, tmp_path, kind):
    """A list line may not reach outside the data set (an archive naming any image on the machine; a folder mixing
    in files the data digest does not cover); allowed, the outside files' digests join the record."""
    import shutil

    from segdistill.data.fetch import sha256_of

    img, lab = _first_pair(ds)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(img, outside / "x.jpg")
    field = "../outside/x.jpg" if kind == "dotdot" else str(outside / "x.jpg")
    lines = _lines(ds, "train")
    lines[1] = f"{field} {lines[1].split()[1]}"
    (ds / "train_list.txt").write_text("\n".join(lines) + "\n")
    msg = _errmsg(ds)
    why = "leaves the data set's root" if kind == "dotdot" else "is absolute"
    assert f"train_list.txt:2: image path '{field}' {why}" in msg and "allow_outside_paths" in msg
    allowed = validate_dataset(ds, 2, allow_outside=True)["outside_files"]
    assert allowed == {"../outside/x.jpg": sha256_of(outside / "x.jpg")}
    cv2.imwrite(str(outside / "x.jpg"), np.zeros((32, 32, 3), np.uint8))  # another image, same path
    assert validate_dataset(ds, 2, allow_outside=True)["outside_files"] != allowed


def test_inner_dotdot_that_stays_inside_is_fine(ds):
    lines = _lines(ds, "train")
    img, lab = lines[0].split()
    lines[0] = f"{img.split('/')[0]}/../{img} {lab}"
    (ds / "train_list.txt").write_text("\n".join(lines) + "\n")
    assert "outside_files" not in validate_dataset(ds, 2)
