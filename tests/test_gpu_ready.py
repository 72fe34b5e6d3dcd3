"""GPU readiness checked on CPU: device truth, doctor, the GPU install command, precision, strict resume."""

import json
import os
import re
import subprocess
import sys
from importlib import metadata

import pytest

from conftest import ROOT, STUDENT, tiny_spec
from segdistill.doctor import check_devices, check_pins, read_pins
from segdistill.errors import SegDistillError
from segdistill.trainer import Trainer, TrainSpec

CLI = [sys.executable, "-m", "segdistill.cli"]


def _train_args(data, save_dir, *extra):
    return [
        "train",
        "--config",
        STUDENT,
        "--data_root",
        str(data),
        "--save_dir",
        str(save_dir),
        "--iters",
        "2",
        "--save_interval",
        "2",
        "--log_iters",
        "1",
        *extra,
    ]


def test_job_that_leased_a_gpu_fails_without_cuda_paddle(tiny_data, tmp_path):
    """The workflow's path: the lease wrapper gives the job GPU 0; a CPU build of Paddle must stop it at once."""
    env = dict(os.environ, SEGDISTILL_GPU_IDS="0", SEGDISTILL_LEASE_DIR=str(tmp_path / "leases"))
    cmd = [
        sys.executable,
        "-m",
        "segdistill.devices",
        "run",
        "--gpus",
        "1",
        "--",
        *CLI,
        *_train_args(tiny_data, tmp_path / "run"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert re.search(
        r"leased GPU\(s\) 0 but the installed Paddle \(3\.\d+\.\d+\) is a CPU build.*"
        r"make install GPU=cu126",
        proc.stderr,
    ), proc.stderr[-2000:]
    assert not (tmp_path / "run" / "train_summary.json").exists()


def _leasing_commands() -> list[str]:
    """The subcommands the workflow runs under a device lease (segdistill.jobs.run_on_devices): an argv's first
    word, or the kind of the job spec the script builds."""
    from segdistill.specs import KINDS

    kinds = {cls.__name__: kind for kind, cls in KINDS.items()}
    found = []
    for script in sorted((ROOT / "workflow/scripts").glob("*.py")):
        text = script.read_text()
        if "run_on_devices(" in text:
            found += re.findall(r'argv = \[\s*"([\w-]+)"', text)
            found += [kinds[name] for name in re.findall(r"\b(\w+Spec)\(", text) if name in kinds]
    return found


def test_every_job_that_leases_a_device_checks_it(tmp_path, monkeypatch, capsys):
    """A leased GPU with a CPU build of Paddle stops every leasing job before it reads anything (the arguments
    here name files that do not exist, so only the device check can be the error)."""
    import argparse
    import dataclasses

    import segdistill.cli

    commands = _leasing_commands()
    assert {"train", "teacher-outputs", "cost"} <= set(commands)
    monkeypatch.setenv("SEGDISTILL_LEASED_GPUS", "0")
    sub = next(a for a in segdistill.cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in commands:
        argv = [command]
        spec_class = sub.choices[command]._defaults.get("spec_class")  # flags made from a job spec
        required = (
            {
                f.name
                for f in dataclasses.fields(spec_class)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            }
            if spec_class
            else set()
        )
        for action in sub.choices[command]._actions:
            if action.required or action.dest in required:
                argv += [action.option_strings[0], str(tmp_path / "missing" / action.dest)]
        assert segdistill.cli.main(argv) == 2, command
        err = capsys.readouterr().err
        assert "leased GPU(s) 0 but the installed Paddle" in err and "is a CPU build" in err, (command, err)
    assert not (tmp_path / "missing").exists()


def test_job_log_names_device_and_versions(monkeypatch):
    monkeypatch.delenv("SEGDISTILL_LEASED_GPUS", raising=False)
    line = check_devices()
    assert line.startswith("device: cpu")
    assert f"paddle {metadata.version('paddlepaddle')}" in line and "CUDA none" in line and "cuDNN none" in line


def test_doctor_reports_build_devices_and_pins(tmp_path):
    proc = subprocess.run([*CLI, "doctor"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for needle in (
        "paddle: 3.",
        "CPU build",
        "CUDA: none",
        "cuDNN: none",
        "NCCL: none",
        "GPUs Paddle sees: 0",
        "precisions: fp32",
        "pins (",
    ):
        assert needle in out, out
    # A pin the venv does not satisfy is named, and --strict turns it into a failure.
    (tmp_path / "stack.txt").write_text(f"paddlepaddle=={metadata.version('paddlepaddle')}\nnumpy==0.0.1\n")
    proc = subprocess.run(
        [*CLI, "doctor", "--requirements", str(tmp_path), "--strict"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert f"MISMATCH numpy: pinned 0.0.1, installed {metadata.version('numpy')}" in proc.stdout
    assert "pins (" in proc.stdout and "1/2 match" in proc.stdout


def test_pins_accept_the_gpu_build_of_paddle():
    rows = {r["name"]: r for r in check_pins(read_pins(ROOT / "requirements"))}
    assert rows["paddlepaddle"]["pinned"] == metadata.version("paddlepaddle")
    assert rows["paddleseg"]["pinned"] == "2.8.0"  # paddle-nodeps.txt is read too


def test_make_install_gpu_command_line(tmp_path):
    venv = tmp_path / "venv"
    proc = subprocess.run(
        ["make", "-n", "install", "GPU=cu126", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    pinned = read_pins(ROOT / "requirements")["paddlepaddle"]
    want = (
        f"{venv}/bin/pip install paddlepaddle-gpu=={pinned} "
        f"--index-url https://www.paddlepaddle.org.cn/packages/stable/cu126/"
    )
    assert want in lines
    assert lines.index(f"{venv}/bin/pip uninstall --yes paddlepaddle paddlepaddle-gpu") < lines.index(want)
    assert f"{venv}/bin/segdistill doctor" in lines[lines.index(want) :]
    bad = subprocess.run(
        ["make", "-n", "install", "GPU=12.6", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True
    )
    assert bad.returncode != 0 and "expected a CUDA tag" in bad.stderr
    cpu = subprocess.run(["make", "-n", "install", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True)
    assert "paddlepaddle-gpu" not in cpu.stdout


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_on_cpu_is_refused_with_what_is_supported(tiny_data, tmp_path, precision):
    """Paddle's auto_cast is a silent no-op off GPU/XPU (paddle 3.3.1), so a CPU run in bf16 would be fp32."""
    spec = tiny_spec(tiny_data, tmp_path / "run", iters=1, precision=precision)
    with pytest.raises(
        SegDistillError,
        match=rf"--precision {precision} is not available on this device \(cpu\): "
        r"it supports fp32\.",
    ):
        Trainer(spec)


def test_help_says_batch_size_is_per_device_and_keeps_five():
    out = subprocess.run([*CLI, "train", "--help"], capture_output=True, text=True).stdout
    flat = " ".join(out.split())
    assert "images per device (rank), as PaddleSeg: the global batch is batch_size x ranks" in flat
    assert "checkpoints kept, newest first (PaddleSeg: 5)" in flat
    assert TrainSpec(config="x", save_dir="y").keep_checkpoint_max == 5


def test_resume_refuses_a_checkpoint_of_another_model(tiny_data, tmp_path):
    """set_state_dict skips missing keys and wrong shapes silently; resume must name them instead. (Without
    --resume_model a checkpoint of another config is not resumed at all: tests/test_trainer.py.)"""
    first = subprocess.run([*CLI, *_train_args(tiny_data, tmp_path / "run")], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    wider = tmp_path / "wider.yml"
    wider.write_text(
        (ROOT / "tests/configs/student_tiny.yml")
        .read_text()
        .replace("aspp_out_channels: 256", "aspp_out_channels: 128")
    )
    args = _train_args(tiny_data, tmp_path / "run", "--iters", "4", "--resume_model", str(tmp_path / "run/iter_2"))
    args[args.index(STUDENT)] = str(wider)
    again = subprocess.run([*CLI, *args], capture_output=True, text=True)
    assert again.returncode == 2
    assert re.search(
        r"checkpoint .*iter_2 does not match this run's model/optimizer.*model: shape mismatch: "
        r"0\.head\.aspp\.\S+ \(checkpoint \[256, ",
        again.stderr,
    ), again.stderr[-2000:]
    assert "optimizer: shape mismatch" in again.stderr


def test_unsupported_cross_entropy_option_is_named(tiny_data, tmp_path):
    cfg = tmp_path / "student.yml"
    cfg.write_text(
        (ROOT / "tests/configs/student_tiny.yml")
        .read_text()
        .replace("    - type: CrossEntropyLoss", "    - type: CrossEntropyLoss\n      data_format: NHWC")
    )
    with pytest.raises(SegDistillError, match=r"CrossEntropyLoss option\(s\) \['data_format'\] are not supported"):
        Trainer(TrainSpec(config=str(cfg), save_dir=str(tmp_path / "run"), data_root=str(tiny_data), iters=1))


def test_summary_records_batch_semantics_and_precision(tiny_data, tmp_path):
    proc = subprocess.run(
        [*CLI, *_train_args(tiny_data, tmp_path / "run", "--batch_size", "2")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"^device: cpu", proc.stderr, re.M)
    summary = json.loads((tmp_path / "run/train_summary.json").read_text())
    assert (summary["batch_size"], summary["global_batch_size"], summary["precision"]) == (2, 2, "fp32")
