"""Every subcommand that runs a workflow step reaches the engine function its workflow script calls, with the same
arguments: the script is run as Snakemake runs it (a `snakemake` object of the rule's input, output, params) with
the engine function recording its call instead of running, and the subcommand is given the same values as flags.
"""

import dataclasses
import inspect
import runpy

import pytest
from snakemake.iocontainers import Namedlist

from conftest import ROOT
from segdistill import cli, jobs, specs

SCRIPTS = ROOT / "workflow" / "scripts"


class Recorder:
    """Stands in for an engine function: keeps its arguments, bound to the function's signature."""

    def __init__(self, function):
        self.signature, self.calls = inspect.signature(function), []

    def __call__(self, *args, **kwargs):
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        self.calls.append(dict(bound.arguments))


def record(monkeypatch, module, name):
    recorder = Recorder(getattr(module, name))
    monkeypatch.setattr(module, name, recorder)
    return recorder


def run_script(name, input=None, output=None, params=None, wildcards=None, threads=1, gpu=0):
    def named(d):
        return Namedlist(fromdict=d or {})

    smk = type("Snakemake", (), {})()
    smk.input, smk.output, smk.params, smk.wildcards = named(input), named(output), named(params), named(wildcards)
    smk.log, smk.threads, smk.resources = ["job.log"], threads, named({"gpu": gpu})
    runpy.run_path(str(SCRIPTS / name), init_globals={"snakemake": smk})


def run_cli(argv):
    args = cli.parser().parse_args(argv)
    args.func(args)


@pytest.mark.parametrize(
    "kind, script, flags, snakemake",
    [
        (
            "stats",
            "stats.py",
            ["a.json", "b.json", "--out_json", "s.json", "--split", "val", "--min_effect", "1.5"],
            dict(
                input={"evals": ["a.json", "b.json"]},
                output={"0": "s.json"},
                params={"split": "val", "min_effect": 1.5},
            ),
        ),
        (
            "patch-teacher",
            "patch_teacher.py",
            ["--config_path", "t.yml", "--weights", "w.pdparams", "--out", "p.yml"],
            dict(input={"config": "t.yml", "weights": "w.pdparams"}, output={"0": "p.yml"}),
        ),
        (
            "fetch-backbone",
            "fetch_backbone.py",
            ["http://x/b.pdparams", "--cache_dir", "cache", "--sha256", "ab"],
            dict(output={"model": "cache/b/model.pdparams"}, params={"url": "http://x/b.pdparams", "sha256": "ab"}),
        ),
    ],
)
def test_a_step_subcommand_calls_its_scripts_function_with_its_arguments(
    monkeypatch, tmp_path, kind, script, flags, snakemake
):
    import importlib

    monkeypatch.chdir(tmp_path)
    module, name = specs.STEPS[kind].engine.split(":")
    recorder = record(monkeypatch, importlib.import_module(module), name)
    run_script(script, **snakemake)
    run_cli([kind, *flags])
    assert len(recorder.calls) == 2 and recorder.calls[0] == recorder.calls[1], recorder.calls


def leased_spec(monkeypatch, script, **snakemake):
    """The spec a leasing script hands to run_on_devices, and the subcommand its job runs."""
    seen = []
    monkeypatch.setattr(jobs, "run_on_devices", lambda job, *a, **k: seen.append(job))
    run_script(script, **snakemake)
    (job,) = seen
    return job


def parsed(argv):
    args = cli.parser().parse_args(argv)
    return args.func, cli._spec(args, many=args.func is cli.cmd_teacher_outputs)


def test_a_leased_job_runs_the_subcommand_of_its_spec_and_the_flags_reach_the_same_spec(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    train = dict(save_interval=50, log_iters=5, keep_checkpoint_max=2, use_vdl=False, precision="fp32")
    spec = leased_spec(
        monkeypatch,
        "train.py",
        input={"config": "s.yml", "data": "data"},
        output={"evaluation": "e.json"},
        params={
            "save_dir": "run",
            "do_eval": True,
            "train": train,
            "class_names": ["bg", "disc"],
            "pretrained_backbones": True,
            "evaluate": {"splits": ["val", "test"], "batch_size": 2},
            "run": "student/seed3",
        },
        wildcards={"seed": "3"},
    )
    path = specs.write_spec(spec, tmp_path / "spec.json")
    assert parsed(["train", "--spec", str(path)]) == (cli.cmd_train, spec)
    flags = ["--config", "s.yml", "--save_dir", "run", "--data_root", "data", "--seed", "3", "--do_eval"]
    flags += ["--class_names", "bg", "disc", "--evaluate_out", "e.json", "--evaluate_splits", "val", "test"]
    flags += ["--evaluate_batch_size", "2", "--run_id", "student/seed3", "--no_final_checkpoint"]
    flags += ["--save_interval", "50", "--log_iters", "5", "--keep_checkpoint_max", "2", "--precision", "fp32"]
    assert parsed(["train", *flags]) == (cli.cmd_train, spec)

    spec = leased_spec(
        monkeypatch,
        "cost.py",
        input={"teacher_config": "t.yml", "teacher_model": "t.pd", "student_config": "s.yml", "student_model": "s.pd"},
        output={"0": "cost.csv"},
        params={"runs": 7, "evaluate": {"splits": ["test"], "batch_size": 1, "test_config": {"aug_eval": True}}},
    )
    path = specs.write_spec(spec, tmp_path / "cost.json")
    assert parsed(["cost", "--spec", str(path)]) == (cli.cmd_step, spec)
    flags = ["--teacher_config", "t.yml", "--teacher_model", "t.pd", "--student_config", "s.yml"]
    flags += ["--student_model", "s.pd", "--runs", "7", "--out", "cost.csv", "--test_config", "{aug_eval: true}"]
    assert parsed(["cost", *flags]) == (cli.cmd_step, spec)
    assert spec.engine == "segdistill.cost:cost_job"


def test_evaluate_and_figure_reach_their_scripts_calls(monkeypatch, tmp_path):
    import segdistill.evaluate
    from segdistill.report.figure_table import Figure

    monkeypatch.chdir(tmp_path)
    recorder = record(monkeypatch, segdistill.evaluate, "evaluate_run")
    run_script(
        "evaluate.py",
        input={"config": "s.yml", "model": "m.pdparams", "data": "data"},
        output={"0": "e.json"},
        params={"evaluate": {"splits": ["test"], "batch_size": 3}, "class_names": ["bg", "disc"]},
        wildcards={"run": "student/seed1"},
    )
    flags = ["--config", "s.yml", "--model", "m.pdparams", "--data_root", "data", "--splits", "test"]
    run_cli(
        [
            "evaluate",
            *flags,
            "--batch_size",
            "3",
            "--class_names",
            "bg",
            "disc",
            "--run",
            "student/seed1",
            "--out",
            "e.json",
        ]
    )
    assert len(recorder.calls) == 2 and recorder.calls[0] == recorder.calls[1]

    drawn = []
    monkeypatch.setattr(Figure, "draw", lambda self, out, **kw: drawn.append((self.name, str(out), kw)))
    arguments = {"summary_csv": "summary.csv", "split": "val", "stats_json": "stats.json"}
    run_script("figure.py", output={"0": "paired.png"}, params={"arguments": arguments}, wildcards={"figure": "paired"})
    flags = ["--summary_csv", "summary.csv", "--split", "val", "--stats_json", "stats.json", "--out", "paired.png"]
    run_cli(["figure", "paired", *flags])
    assert drawn == [("paired", "paired.png", arguments)] * 2


def test_every_subcommand_is_a_step_or_one_a_person_runs():
    """A subcommand that only repeated a workflow step nobody runs by hand is gone; each step's spec is a kind."""
    sub = next(a for a in cli.parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    steps = {*specs.KINDS, *specs.STEPS, "figure"}
    by_hand = {"distill-train", "layers", "doctor"}
    assert set(sub.choices) == steps | by_hand
    for kind, cls in {**specs.KINDS, **specs.STEPS}.items():
        assert sub.choices[kind]._defaults["spec_class"] is cls
        fields = {f.name for f in dataclasses.fields(cls)}
        if cls in specs.STEPS.values():  # called by field name: the fields are the function's parameters
            module, name = cls.engine.split(":")
            params = inspect.signature(getattr(__import__(module, fromlist=[name]), name)).parameters
            assert fields <= set(params), cls
