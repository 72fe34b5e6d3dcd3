"""A run's identity comes from its spec's identity marks (segdistill.specs.identity): the keys of runs made
before the marks are unchanged, and a new marked option changes a key only when it differs from its default."""

import dataclasses

import pytest

from conftest import ROOT
from segdistill.specs import ALWAYS, RESOLVED, EvaluateOptions, TrainSpec, identity, opt
from segdistill.trainer import Trainer, run_key

EXPERIMENT = {
    "iters": 3,
    "batch_size": 2,
    "model": {"type": "UNet", "num_classes": 2},
    "train_dataset": {"type": "Dataset", "dataset_root": "/data/a", "num_classes": 2},
}
VAL = [["val/1.png", "val/1_label.png"], ["val/2.png", "val/2_label.png"]]
DISTILL = {"terms": [{"loss": "kl", "weight": 3.0}], "teacher_sha256": "ab" * 32}

# (spec fields, val files, world, distiller identity) -> the run key computed by the code at commit 71d2b7c
# (Trainer._run_key, the hand-written list), before the identity marks.
PINNED = {
    "defaults": ({}, None, 1, None, "557f0a13029e7adcfe6ea418736489459bafa773412431c486ccadb7aff3b2ad"),
    "seeded": (
        dict(seed=7, data_seed=2, save_interval=50, precision="bf16", amp_level="O2", do_eval=False),
        None,
        2,
        None,
        "07e935a1215a1fb21d69b85ba20775ce529d10db70f189f6f45994473a949854",
    ),
    "deterministic": (
        dict(deterministic=True),
        VAL,
        1,
        None,
        "28f889a4294013a6508ef58afc50367ed51164ab28b594a4310b6f03ef43ec44",
    ),
    "eval_batch": (
        dict(evaluate={"batch_size": 4}),
        VAL,
        1,
        DISTILL,
        "bdf127552b3b5959ef9c5ea205de7d87470949b01d9a1cb2ec6ded71a9cc2a9a",
    ),
    "distilled": (
        dict(seed=3, teacher_config="t.yml", deterministic=True, evaluate={"batch_size": 2}),
        VAL,
        4,
        DISTILL,
        "ac6ca7c22e4284ecfb065ec8cda1ce92cb0d6eab30553c88ffa5438cc81c835a",
    ),
}


def key(spec, val=None, world=1, distill=None):
    return run_key(spec, experiment=EXPERIMENT, train_data="cd" * 32, val_files=val, world=world, distill=distill)


@pytest.mark.parametrize("name", PINNED)
def test_run_keys_of_earlier_runs_are_unchanged(name):
    fields, val, world, distill, expected = PINNED[name]
    assert key(TrainSpec(config="s.yml", save_dir="run", **fields), val, world, distill) == expected


# Keys of the tiny student built by the trainer (no val: its file list holds the data's absolute paths), computed
# by the code at commit 71d2b7c.
TRAINER_PINNED = [
    ({}, "3793e74f33f4070759e403ff177b5dcbc03da67135df3a207c62a8eff48182c2"),
    ({"evaluate": {"batch_size": 4}}, "b8013649c0bbd37cbf114da1e454055394855934a64b4b96cc1014b10f802426"),
    (
        {"seed": 5, "data_seed": 2, "precision": "fp32", "save_interval": 3},
        "1189c5f12b649e85a3bbdd9e155cdd331f44886c2e0ed940a3a2e79fbf18004e",
    ),
]


def test_the_trainer_keys_a_run_as_before(tiny_data, tmp_path):
    for i, (fields, expected) in enumerate(TRAINER_PINNED):
        spec = TrainSpec(
            config=str(ROOT / "tests/configs/student_tiny.yml"),
            save_dir=str(tmp_path / f"run{i}"),
            data_root=str(tiny_data),
            iters=3,
            do_eval=False,
            **fields,
        )
        assert Trainer(spec, log=lambda m: None).run_key == expected, fields


def test_a_new_identity_field_changes_the_key_only_away_from_its_default():
    fake = dataclasses.make_dataclass(
        "FakeSpec", [("label_smoothing", float, opt(0.0, identity=True))], bases=(TrainSpec,)
    )
    old = key(TrainSpec(config="s.yml", save_dir="run", seed=2), VAL)
    assert key(fake(config="s.yml", save_dir="run", seed=2), VAL) == old
    assert key(fake(config="s.yml", save_dir="run", seed=2, label_smoothing=0.0), VAL) == old
    changed = fake(config="s.yml", save_dir="run", seed=2, label_smoothing=0.1)
    assert key(changed, VAL) != old
    assert identity(changed)["label_smoothing"] == 0.1
    # A field marked as not changing a result never moves the key.
    assert key(TrainSpec(config="s.yml", save_dir="elsewhere", seed=2, log_iters=1, num_workers=2), VAL) == old


def test_every_training_field_says_whether_it_changes_a_result():
    """A new training option must choose its identity mark: left out of the key by accident, a changed study
    would silently resume an old run's checkpoints."""
    for cls in (TrainSpec, EvaluateOptions):
        unmarked = [f.name for f in dataclasses.fields(cls) if f.metadata.get("identity") is None]
        assert not unmarked, f"{cls.__name__}: no identity mark on {unmarked}"


def test_the_summary_records_every_identity_field():
    spec = TrainSpec(config="s.yml", save_dir="run", seed=4, evaluate={"splits": ["test"]})
    record = identity(spec, every=True)
    assert record == {
        "seed": 4,
        "save_interval": 1000,
        "do_eval": True,
        "precision": "fp32",
        "amp_level": "O1",
        "deterministic": False,
        "data_seed": 4,
        "eval_batch_size": 1,
        "test_config": "yaml",
    }
    always = [f.name for f in dataclasses.fields(TrainSpec) if f.metadata["identity"] == ALWAYS]
    assert set(always) <= set(identity(spec))
    resolved = {f.name for f in dataclasses.fields(TrainSpec) if f.metadata["identity"] == RESOLVED}
    assert not resolved & set(record)
