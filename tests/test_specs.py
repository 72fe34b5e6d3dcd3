"""Job specs: the schema's sections are spec fields, the command line is made from the specs, a spec file reads
back as it was written, and a bad one is named."""

import dataclasses

import pytest
import yaml

from conftest import ROOT
from segdistill import cli, study
from segdistill.errors import SegDistillError
from segdistill.specs import (
    EvaluateOptions,
    EvaluateSpec,
    PredictSpec,
    TeacherOutputsSpec,
    TrainSpec,
    read_spec,
    write_spec,
)


def schema_section(name):
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    return schema["properties"][name]["properties"]


@pytest.mark.parametrize(
    "section, cls",
    [("train", TrainSpec), ("cache", TeacherOutputsSpec), ("evaluate", EvaluateOptions), ("predict", PredictSpec)],
)
def test_every_key_of_a_schema_section_is_a_spec_field(section, cls):
    """The scripts pass these sections to the spec as they are (`TrainSpec(**params.train, ...)`,
    `evaluate=params.evaluate`, `EvaluateSpec(**params.evaluate, ...)`)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    assert set(schema_section(section)) <= fields, set(schema_section(section)) - fields


def test_the_evaluate_options_are_the_schema_section_in_both_jobs():
    """One name each: the training job's `evaluate` block and the evaluate job take the section's keys."""
    assert {f.name for f in dataclasses.fields(EvaluateOptions)} == set(schema_section("evaluate"))
    section = {"splits": ["val", "test"], "batch_size": 4}
    train = TrainSpec(config="c", save_dir="d", evaluate=section)
    assert train.evaluate == EvaluateOptions(**section)
    assert dataclasses.asdict(EvaluateSpec(config="c", model="m", **section)).items() >= section.items()
    with pytest.raises(SegDistillError, match="evaluate: 'split' is not a field"):
        TrainSpec(config="c", save_dir="d", evaluate={"split": ["val"]})


def test_the_evaluate_block_has_flags_and_reads_back_from_a_spec_file(tmp_path):
    spec = parse("train", "--config", "a", "--save_dir", "b", "--evaluate_batch_size", "4")
    assert spec.evaluate == EvaluateOptions(splits=["val"], batch_size=4)
    spec = parse("train", "--config", "a", "--save_dir", "b", "--evaluate_splits", "val", "test")
    assert spec.evaluate == EvaluateOptions(splits=["val", "test"], batch_size=1)
    assert read_spec(write_spec(spec, tmp_path / "spec.json")) == spec
    assert parse("evaluate", "--config", "a", "--model", "m", "--splits", "test", "--batch_size", "2") == (
        EvaluateSpec(config="a", model="m", splits=["test"], batch_size=2, out="-")
    )


def parse(*argv):
    args = cli.parser().parse_args(list(argv))
    return cli._spec(args)


def test_train_flags_come_from_the_spec():
    spec = parse(
        "train",
        "--config",
        "a.yml",
        "--save-dir",
        "run",
        "--keep_checkpoint_max",
        "3",
        "--iters",
        "7",
        "--learning_rate",
        "0.5",
        "--class_names",
        "bg",
        "disc",
        "--no_pretrained_backbone",
        "--use_vdl",
    )
    assert spec == TrainSpec(
        config="a.yml",
        save_dir="run",
        keep_checkpoint_max=3,
        iters=7,
        learning_rate=0.5,
        class_names=["bg", "disc"],
        pretrained_backbone=False,
        use_vdl=True,
        do_eval=False,
    )
    assert parse("train", "--config", "a", "--save_dir", "b", "--do_eval").do_eval is True
    flags = {a.dest for a in cli.parser()._subparsers._group_actions[0].choices["train"]._actions}
    cli_fields = {f.name for f in dataclasses.fields(TrainSpec) if f.metadata.get("cli") is not False} - {"evaluate"}
    cli_fields |= {f"evaluate.{f.name}" for f in dataclasses.fields(EvaluateOptions)}
    assert cli_fields <= flags


def test_required_fields_and_bad_combinations_are_named(capsys):
    with pytest.raises(SystemExit) as exc:
        parse("train", "--config", "a.yml")
    assert exc.value.code == 2 and "required: --save_dir" in capsys.readouterr().err
    with pytest.raises(SegDistillError, match="--teacher_outputs needs --teacher_config"):
        parse("train", "--config", "a", "--save_dir", "b", "--teacher_outputs", "cache")


def test_a_spec_file_reads_back_as_written_and_takes_no_other_flags(tmp_path, capsys):
    spec = TeacherOutputsSpec(
        config="s.yml",
        teacher_config="t.yml",
        out="cache",
        distill=["kl.yml"],
        seed=1,
        ranks=2,
        dtype="float32",
        max_gb=0.5,
    )
    path = write_spec(spec, tmp_path / "spec.json")
    assert read_spec(path) == spec
    assert parse("teacher-outputs", "--spec", str(path)) == spec
    with pytest.raises(SystemExit):
        parse("teacher-outputs", "--spec", str(path), "--seed", "2")
    assert "--spec takes no other flags (got --seed)" in capsys.readouterr().err
    with pytest.raises(SegDistillError, match="a spec of another job, not of `train`"):
        parse("train", "--spec", str(path))


def test_a_bad_spec_file_is_named_with_the_closest_field(tmp_path):
    path = write_spec(EvaluateSpec(config="c.yml", model="m.pdparams"), tmp_path / "spec.json")
    path.write_text(path.read_text().replace('"splits"', '"split"'))
    with pytest.raises(
        SegDistillError,
        match=r"spec.json: 'split' is not a field of the evaluate spec "
        r"\(closest: splits\)",
    ):
        read_spec(path)
    path.write_text("{}")
    with pytest.raises(SegDistillError, match="spec.json: not a job spec"):
        read_spec(path)


def test_run_ids_and_sweep_names_have_one_grammar():
    name = study.method_name("kl_cwd", {"weight": 2.0, "cwd.temperature": 4})
    assert name == "kl_cwd~weight=2~cwd.temperature=4"
    assert study.parse_method(name) == ("kl_cwd", {"weight": 2.0, "cwd.temperature": 4.0})
    assert study.parse_run(f"distilled/{name}/seed3") == {"arm": "distilled", "method": name, "seed": 3}
    assert study.parse_run("teacher/seed0") == {"arm": "teacher", "method": "none", "seed": 0}
    with pytest.raises(SegDistillError, match="not a run id"):
        study.parse_run("distilled/a b/seed0")


def test_the_jobs_command_line_exits_with_the_error_and_its_message(tmp_path):
    """`python -m segdistill.cli` (the workflow's jobs) ends without the interpreter's teardown: a refused job
    still exits 2 with its one-line message."""
    import subprocess
    import sys

    bad = tmp_path / "spec.json"
    bad.write_text("{}")
    proc = subprocess.run(
        [sys.executable, "-m", "segdistill.cli", "train", "--spec", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith(
        f"{bad}: not a job spec (expected kind: one of train, teacher-outputs, evaluate, cost, and spec)"
    )
