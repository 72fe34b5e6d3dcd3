"""The teacher on every distinct training input, once per study: which transforms are enumerable, a seed's cache
gathered from the table holds the teacher's own outputs on its stream, the table does not depend on the seeds,
and one made elsewhere is refused."""

import json
import shutil

import numpy as np
import pytest
import yaml

from conftest import STUDENT
from segdistill.distill import cache
from segdistill.distill.distinct_inputs import flip_variants
from segdistill.errors import SegDistillError
from segdistill.specs import TeacherOutputsSpec

TERMS = [{"loss": "kl", "weight": 3}, {"name": "cwd", "student": "head.aspp", "teacher": "head.aspp", "loss": "cwd"}]
ITERS = 4


def spec(tmp_path, patched_teacher, data, out, config=STUDENT, **kw):
    terms = tmp_path / "terms.yml"
    terms.write_text(yaml.safe_dump({"terms": TERMS}))
    return TeacherOutputsSpec(
        config=str(config),
        teacher_config=patched_teacher,
        distill=[str(terms)],
        out=str(tmp_path / out),
        data_root=str(data),
        iters=ITERS,
        **kw,
    )


def write(s) -> list[str]:
    lines = []
    cache.write_teacher_outputs(s, log=lines.append)
    return lines


def tensors(folder) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    return {n: np.load(folder / t["file"]) for n, t in manifest["tensors"].items()}


def test_flips_are_enumerated_and_other_draws_refused():
    resize, norm = {"type": "Resize", "target_size": [32, 32]}, {"type": "Normalize"}
    variants, why = flip_variants([resize, {"type": "RandomHorizontalFlip"}, norm])
    assert why is None and [v[1]["prob"] for v in variants] == [0.0, 1.0]
    assert all(v[0] == resize and v[2] == norm for v in variants)
    variants, why = flip_variants([resize, {"type": "RandomHorizontalFlip"}, {"type": "RandomVerticalFlip"}])
    assert why is None and sorted((v[1]["prob"], v[2]["prob"]) for v in variants) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert flip_variants([{"type": "RandomHorizontalFlip", "prob": 0}])[0] == [
        [{"type": "RandomHorizontalFlip", "prob": 0}]
    ]
    assert flip_variants([resize, norm]) == ([[resize, norm]], None)
    assert "RandomPaddingCrop" in flip_variants([{"type": "RandomPaddingCrop", "crop_size": [8, 8]}])[1]
    assert "interp: RANDOM" in flip_variants([{"type": "Resize", "interp": "RANDOM"}])[1]


def test_a_seed_gathered_from_the_table_holds_the_teachers_outputs_on_its_stream(tmp_path, patched_teacher, tiny_data):
    write(spec(tmp_path, patched_teacher, tiny_data, "table", distinct=True))
    table = tmp_path / "table"
    digests = json.loads((table / "inputs.json").read_text())["digests"]
    assert len(digests) == len(set(digests)) == 2 * 28  # the tiny set's 28 training images, unflipped and flipped
    for seed in (0, 5):
        live = spec(tmp_path, patched_teacher, tiny_data, f"live{seed}", seed=seed, dtype="float32")
        write(live)
        log = write(
            spec(tmp_path, patched_teacher, tiny_data, f"gathered{seed}", seed=seed, dtype="float32", shared=str(table))
        )
        assert f"teacher outputs: {ITERS * 4} of {ITERS * 4} samples gathered from {table}" in log
        got, want = tensors(tmp_path / f"gathered{seed}"), tensors(tmp_path / f"live{seed}")
        assert got.keys() == want.keys() == {"logits", "head.aspp"}
        for n in got:  # the same forwards in other batches: equal up to the kernels' batch-dependent rounding
            np.testing.assert_allclose(got[n], want[n], rtol=1e-5, atol=1e-6, err_msg=n)


def test_the_table_is_the_same_whatever_seed_its_job_names(tmp_path, patched_teacher, tiny_data):
    for seed in (0, 7):
        write(spec(tmp_path, patched_teacher, tiny_data, f"table{seed}", seed=seed, distinct=True))
    for name in ("inputs.json", "manifest.json", "logits.npy", "head.aspp.npy"):
        assert (tmp_path / "table0" / name).read_bytes() == (tmp_path / "table7" / name).read_bytes(), name


def test_transforms_that_draw_more_than_flips_leave_the_table_empty(tmp_path, patched_teacher, tiny_data):
    dic = yaml.safe_load(open(STUDENT))
    dic["train_dataset"]["transforms"].insert(1, {"type": "RandomDistort", "brightness_range": 0.4})
    config = tmp_path / "distort.yml"
    config.write_text(yaml.safe_dump(dic))
    log = write(spec(tmp_path, patched_teacher, tiny_data, "table", config=config, distinct=True))
    assert any("none: train transform RandomDistort draws more than flips" in line for line in log), log
    log = write(spec(tmp_path, patched_teacher, tiny_data, "seed", config=config, shared=str(tmp_path / "table")))
    assert any("0 of 16 samples gathered" in line and "RandomDistort" in line for line in log), log
    write(spec(tmp_path, patched_teacher, tiny_data, "live", config=config))
    for name in ("manifest.json", "logits.npy", "head.aspp.npy"):
        assert (tmp_path / "seed" / name).read_bytes() == (tmp_path / "live" / name).read_bytes(), name


def test_a_table_of_other_data_is_refused_by_name(tmp_path, patched_teacher, tiny_data):
    other = tmp_path / "other_data"
    shutil.copytree(tiny_data, other)
    (other / "train_list.txt").write_text("\n".join((tiny_data / "train_list.txt").read_text().splitlines()[:-1]))
    write(spec(tmp_path, patched_teacher, other, "table", distinct=True))
    with pytest.raises(SegDistillError, match=r"table: made from other data or train transforms"):
        write(spec(tmp_path, patched_teacher, tiny_data, "seed", shared=str(tmp_path / "table")))
    assert not (tmp_path / "seed").exists()


class Drawing:
    """A data set whose "deterministic" transform draws after all: each read gives another image."""

    def __init__(self):
        self.reads = 0

    def __len__(self):
        return 3

    def __getitem__(self, i):
        self.reads += 1
        return {"img": np.full((3, 4, 4), self.reads, np.float32)}


def test_a_data_set_that_reads_otherwise_the_second_time_is_refused():
    from segdistill.distill.distinct_inputs import batches, inputs

    drawing = Drawing()
    digests = [d for d, _ in inputs([drawing])]
    assert len(digests) == 3
    with pytest.raises(SegDistillError, match="other inputs on a second pass"):
        list(batches([drawing], digests, 2))
    fixed = [{"img": np.full((3, 4, 4), i, np.float32)} for i in (0, 1, 1, 2)]  # one repeated image: 3 inputs
    digests = [d for d, _ in inputs([fixed])]
    assert [b.shape[0] for b in batches([fixed], digests, 2)] == [2, 1]
