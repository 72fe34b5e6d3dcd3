import json

import cv2
import numpy as np
import pytest

import segdistill.data.synthetic as synthetic
from data_helpers import hidden_leftovers, tree_bytes
from segdistill.data import generate, validate_dataset
from segdistill.errors import SegDistillError


def _pairs(root, split):
    lines = (root / f"{split}_list.txt").read_text().splitlines()
    return [tuple(line.split()) for line in lines]


def test_same_seed_gives_identical_bytes_other_seed_differs(tmp_path):
    generate(tmp_path / "a", num_images=12, size=48, seed=5)
    generate(tmp_path / "b", num_images=12, size=48, seed=5)
    generate(tmp_path / "c", num_images=12, size=48, seed=6)
    a, b, c = (tree_bytes(tmp_path / n) for n in "abc")
    assert len(a) == 12 * 2 + 3 + 1  # images, labels, three lists, dataset_info.json
    assert a == b
    assert set(a) == set(c)  # same file names ...
    differing = [k for k in a if k.startswith("JPEGImages/") and a[k] != c[k]]
    assert len(differing) == 12  # ... but every image is different


def test_layout_and_summary_pass_validation(tmp_path):
    summary = generate(tmp_path / "ds", num_images=20, size=64, seed=0)
    assert summary["splits"] == {"train": 14, "val": 3, "test": 3}
    assert summary["class_names"] == ["background", "optic_disc"]
    report = validate_dataset(tmp_path / "ds", num_classes=2, required_splits=("train", "val", "test"))
    assert report["splits"] == summary["splits"]
    assert report["label_values"] == [0, 1]
    assert report["image_sizes"] == [[64, 64]]

    # Every image is in exactly one split.
    listed = [p for s in ("train", "val", "test") for p in _pairs(tmp_path / "ds", s)]
    assert len(listed) == len(set(listed)) == 20

    info = json.loads((tmp_path / "ds" / "dataset_info.json").read_text())
    assert info["params"] == {"num_images": 20, "size": 64, "seed": 0, "split": [0.7, 0.15, 0.15]}
    assert info["counts"] == summary["splits"]
    assert info["class_names"] == ["background", "optic_disc"]
    assert info["num_classes"] == 2


def test_class_balance_is_plausible(tmp_path):
    root = tmp_path / "ds"
    generate(root, num_images=40, size=64, seed=1)
    fractions = []
    for lab_path in sorted((root / "Annotations").glob("*.png")):
        lab = cv2.imread(str(lab_path), cv2.IMREAD_UNCHANGED)
        assert lab.ndim == 2 and lab.dtype == np.uint8
        assert set(np.unique(lab).tolist()) == {0, 1}, lab_path  # a disc in every label
        fractions.append(float((lab == 1).mean()))
    fractions = np.array(fractions)
    # Radii of 5-11% of the side give ellipse areas of about 0.8%-3.8% of the image.
    assert fractions.min() > 0.004
    assert fractions.max() < 0.05
    assert 0.01 < fractions.mean() < 0.035
    info = json.loads((root / "dataset_info.json").read_text())
    assert info["disc_fraction"]["mean"] == pytest.approx(fractions.mean(), abs=1e-5)


def test_disc_is_bright_but_not_trivially_separable(tmp_path):
    root = tmp_path / "ds"
    generate(root, num_images=40, size=64, seed=2)
    ious, contrast = [], []
    for lab_path in sorted((root / "Annotations").glob("*.png")):
        disc = cv2.imread(str(lab_path), cv2.IMREAD_UNCHANGED) == 1
        gray = cv2.imread(str(root / "JPEGImages" / (lab_path.stem + ".jpg"))).astype(np.float32).mean(axis=2)
        contrast.append(gray[disc].mean() - gray[~disc].mean())
        # Even knowing the disc's area, picking the brightest pixels must not recover it: distractors,
        # vessels, blur and the illumination ramp are in the way.
        k = int(disc.sum())
        pred = gray >= np.sort(gray.ravel())[-k]
        ious.append((pred & disc).sum() / (pred | disc).sum())
    assert min(contrast) > 0  # the disc is brighter than the rest in every image
    assert 0.2 < float(np.mean(ious)) < 0.85


def test_split_fractions_and_small_sets(tmp_path):
    s = generate(tmp_path / "two", num_images=2, size=32, seed=0, split=(0.5, 0.5, 0.0))
    assert s["splits"] == {"train": 1, "val": 1, "test": 0}
    assert (tmp_path / "two" / "test_list.txt").read_text() == ""
    assert validate_dataset(tmp_path / "two", 2)["splits"] == {"train": 1, "val": 1, "test": 0}
    with pytest.raises(SegDistillError, match="split"):
        generate(tmp_path / "bad", num_images=10, size=32, split=(0.5, 0.2, 0.2))
    with pytest.raises(SegDistillError, match="empty"):
        generate(tmp_path / "bad", num_images=2, size=32, split=(0.7, 0.15, 0.15))
    with pytest.raises(SegDistillError, match="size"):
        generate(tmp_path / "bad", num_images=10, size=8)
    assert not (tmp_path / "bad").exists()


def test_existing_folder_is_refused_unless_overwrite(tmp_path):
    root = tmp_path / "ds"
    generate(root, num_images=4, size=32, seed=0, split=(0.5, 0.25, 0.25))
    before = tree_bytes(root)
    with pytest.raises(SegDistillError, match=str(root)):
        generate(root, num_images=4, size=32, seed=1, split=(0.5, 0.25, 0.25))
    assert tree_bytes(root) == before
    generate(root, num_images=4, size=32, seed=1, split=(0.5, 0.25, 0.25), overwrite=True)
    after = tree_bytes(root)
    assert after != before and set(after) == set(before)
    assert hidden_leftovers(tmp_path) == []


def test_failure_midway_leaves_no_partial_set(tmp_path, monkeypatch):
    # Simulates a crash after a few images (e.g. a full disk) to check the temp-then-rename publishing.
    real_render = synthetic._render
    calls = {"n": 0}

    def failing_render(size, rng, *look):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("No space left on device")
        return real_render(size, rng, *look)

    monkeypatch.setattr(synthetic, "_render", failing_render)
    with pytest.raises(OSError):
        generate(tmp_path / "ds", num_images=6, size=32)
    assert not (tmp_path / "ds").exists()
    assert hidden_leftovers(tmp_path) == []


def test_disc_and_cup_label_the_same_images(tmp_path):
    """With `optic_cup` named, the same seed and disc radius draw the same images; the cup (2) is the disc's bright
    centre, inside the disc the two-class set labels, and every image has all three classes."""
    cup_names = ["background", "optic_disc", "optic_cup"]
    radius = (0.07, 0.13)
    two = generate(tmp_path / "two", num_images=16, size=64, seed=3, disc_radius=radius)
    three = generate(tmp_path / "three", num_images=16, size=64, seed=3, disc_radius=radius, class_names=cup_names)
    assert two["class_names"] == ["background", "optic_disc"] and three["class_names"] == cup_names
    a, b = tree_bytes(tmp_path / "two"), tree_bytes(tmp_path / "three")
    assert all(a[k] == b[k] for k in a if k.startswith("JPEGImages/"))
    cup_share = []
    for name in sorted(k for k in a if k.startswith("Annotations/")):
        lab2 = cv2.imread(str(tmp_path / "two" / name), cv2.IMREAD_UNCHANGED)
        lab3 = cv2.imread(str(tmp_path / "three" / name), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(lab3 > 0, lab2 == 1), name
        assert set(np.unique(lab3).tolist()) == {0, 1, 2}, name
        cup_share.append((lab3 == 2).sum() / (lab3 > 0).sum())
    # Cup radii of 0.35-0.6 disc radii: 12-36% of the disc's area, give or take the pixel grid.
    assert 0.05 < min(cup_share) and max(cup_share) < 0.5
    info = json.loads((tmp_path / "three" / "dataset_info.json").read_text())
    assert info["class_names"] == cup_names and info["num_classes"] == 3
    assert info["params"]["disc_radius"] == [0.07, 0.13]
    report = validate_dataset(tmp_path / "three", num_classes=3, required_splits=("train", "val", "test"))
    assert report["label_values"] == [0, 1, 2]


def test_disc_radius_bounds_the_disc(tmp_path):
    generate(tmp_path / "small", num_images=24, size=64, seed=4)
    generate(tmp_path / "large", num_images=24, size=64, seed=4, disc_radius=(0.12, 0.16))
    small, large = (json.loads((tmp_path / n / "dataset_info.json").read_text()) for n in ("small", "large"))
    assert "disc_radius" not in small["params"]  # the default leaves a set's info as it was before the option
    # Ellipse areas: pi * 0.12^2 (4.5%) at least, pi * 0.16^2 (8.0%) at most.
    assert 0.04 < large["disc_fraction"]["min"] and large["disc_fraction"]["max"] < 0.085
    assert large["disc_fraction"]["min"] > small["disc_fraction"]["max"] * 0.9


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"class_names": ["background", "cup"]}, "data.class_names"),
        ({"class_names": ["background", "optic_cup", "optic_disc"]}, "data.class_names"),
        ({"disc_radius": (0.2, 0.1)}, "data.synthetic.disc_radius"),
        ({"disc_radius": (0.05,)}, "data.synthetic.disc_radius"),
    ],
)
def test_label_set_and_radius_are_checked(tmp_path, kwargs, named):
    with pytest.raises(SegDistillError, match=named):
        generate(tmp_path / "ds", num_images=10, **kwargs)
    assert not (tmp_path / "ds").exists()
