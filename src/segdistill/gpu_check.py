"""`segdistill doctor --train` (`make gpu-check`): tiny trainings that show in minutes what works on this box.

Why: the mixed-precision and multi-GPU paths can only be exercised where Paddle has a GPU. One tiny training
per precision and level (fp32, fp16 O1/O2, bf16 O1/O2), each with an evaluation (at every checkpoint) and a
resume (from its first checkpoint, trained on to the end), and one distillation over two leased GPUs when two
are visible, then a table of what worked. A case this device cannot run is reported as skipped with the
reason, never as passed; the command fails when a case that ran failed.
"""

from __future__ import annotations

import functools
import math
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from segdistill.errors import SegDistillError

CASES = [("fp32", "O1"), ("fp16", "O1"), ("fp16", "O2"), ("bf16", "O1"), ("bf16", "O2")]
ITERS = 2
CONFIG = "config/paddleseg/cpu/deeplabv3p_resnet18_os16_synthetic_64x64_student.yml"


@dataclass
class Row:
    case: str
    status: str  # ok | FAILED | skipped
    detail: str
    seconds: float = 0.0


def default_config() -> Path:
    path = Path(__file__).resolve().parents[2] / CONFIG
    if not path.is_file():
        raise SegDistillError(
            f"{CONFIG} not found (not a source checkout?); pass --config with a PaddleSeg YAML "
            f"that trains on the synthetic set"
        )
    return path


def _spec(config, data, save_dir, precision="fp32", level="O1", **kw):
    from segdistill.trainer import TrainSpec

    return TrainSpec(
        config=str(config),
        save_dir=str(save_dir),
        data_root=str(data),
        iters=ITERS,
        batch_size=2,
        save_interval=1,
        log_iters=1,
        do_eval=True,
        pretrained_backbone=False,
        precision=precision,
        amp_level=level,
        **kw,
    )


def train_eval_resume(config, data, work: Path, precision: str, level: str, log) -> str:
    """Train ITERS iterations (an evaluation and a checkpoint at each), then resume a copy of the run as it was
    after its first checkpoint and train on to the end. Returns what happened in one line; raises on any failure."""
    from segdistill.paddle_env import paddle

    from segdistill.trainer import Trainer

    run = work / f"{precision}_{level}"
    # Fresh parameter names for each model, as in the separate process a real resume is (the optimizer's
    # state is keyed by them).
    with paddle.utils.unique_name.guard():
        first = Trainer(_spec(config, data, run, precision, level), log=log).run()
    if not math.isfinite(first["best_miou"]):
        raise SegDistillError(f"evaluation gave mIoU {first['best_miou']}")
    # A job killed after its first checkpoint: that checkpoint and the best-model copy, nothing else.
    killed = work / f"{precision}_{level}_resumed"
    shutil.copytree(run / "iter_1", killed / "iter_1")
    shutil.copytree(run / "checkpoints_best", killed / "checkpoints_best")
    with paddle.utils.unique_name.guard():
        again = Trainer(_spec(config, data, killed, precision, level), log=log)
        if again.resumed[0] != 1:
            raise SegDistillError(f"resumed at iteration {again.resumed[0]}, expected 1")
        second = again.run()
    from segdistill.data.fetch import sha256_of

    final = f"iter_{ITERS}/model.pdparams"
    same = sha256_of(run / final) == sha256_of(killed / final)
    return (
        f"train {ITERS} it., eval mIoU {first['best_miou']:.3f}, resumed at 1 -> mIoU {second['best_miou']:.3f}; "
        f"resumed weights {'bitwise equal to' if same else 'differ from'} the uninterrupted run's"
    )


def _two_gpu_distill(config, data, work: Path, teacher_weights: Path, log) -> str:
    """The fp32 run's weights as a teacher of the same model, distilled over two leased GPUs."""
    from segdistill import devices
    from segdistill.paddleseg_yaml import patch_teacher

    teacher = work / "teacher.yml"
    patch_teacher(config, teacher_weights, teacher)
    cmd = [
        sys.executable,
        "-m",
        "segdistill.cli",
        "train",
        "--config",
        str(config),
        "--teacher_config",
        str(teacher),
        "--data_root",
        str(data),
        "--save_dir",
        str(work / "distill_2gpu"),
        "--iters",
        str(ITERS),
        "--batch_size",
        "2",
        "--save_interval",
        "1",
        "--do_eval",
        "--no_pretrained_backbone",
    ]
    code = devices.run(2, cmd, log_dir=work / "distill_2gpu_launch")  # the shared pool: other jobs' leases hold
    if code:
        raise SegDistillError(f"exit {code}; see {work / 'distill_2gpu_launch'}/workerlog.*")
    return "2 ranks, KL on logits, eval and rank agreement at each checkpoint"


def _attempt(case: str, fn, log) -> Row:
    t0 = time.time()
    try:
        detail = fn()
    except Exception as exc:  # noqa: BLE001 -- every failure is a row of the table, not the end of the check
        log(traceback.format_exc())
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return Row(case, "FAILED", f"{type(exc).__name__}: {first[:160]}", time.time() - t0)
    return Row(case, "ok", detail, time.time() - t0)


def gpu_check(config=None, work=None, cases=CASES, log=None) -> list[Row]:
    """Run every case; returns the table's rows. `work` (default: a temp folder, removed after) holds the runs."""
    from segdistill.data import generate
    from segdistill.doctor import devices_info
    from segdistill.precision import supported_precisions

    log = log or (lambda msg: None)
    config = Path(config) if config else default_config()
    keep = work is not None
    work = Path(work) if keep else Path(tempfile.mkdtemp(prefix="segdistill-gpu-check-"))
    try:
        data = work / "data"
        if not data.exists():
            generate(data, num_images=16, size=64, seed=0)
        ok = supported_precisions()
        rows = []
        for precision, level in cases:
            case = f"{precision} {level}" if precision != "fp32" else "fp32"
            if precision not in ok:
                rows.append(Row(case, "skipped", f"this device ({_device()}) runs {', '.join(ok)} only"))
                continue
            run = functools.partial(train_eval_resume, config, data, work, precision, level, log)
            rows.append(_attempt(case, run, log))
        n_gpus = len(devices_info())
        fp32 = work / "fp32_O1" / "best_model" / "model.pdparams"
        if n_gpus < 2:
            rows.append(Row("distill, 2 GPUs", "skipped", f"{n_gpus} GPU(s) visible, 2 needed"))
        elif not fp32.is_file():
            rows.append(Row("distill, 2 GPUs", "skipped", "the fp32 case did not produce a teacher"))
        else:
            rows.append(_attempt("distill, 2 GPUs", lambda: _two_gpu_distill(config, data, work, fp32, log), log))
        return rows
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _device() -> str:
    from segdistill.paddle_env import paddle

    return paddle.get_device()


def table(rows: list[Row]) -> str:
    width = max(len(r.case) for r in rows)
    lines = [f"{'case'.ljust(width)}  result   time   what", f"{'-' * width}  -------  -----  ----"]
    lines += [f"{r.case.ljust(width)}  {r.status.ljust(7)}  {r.seconds:4.0f}s  {r.detail}" for r in rows]
    ran = [r for r in rows if r.status != "skipped"]
    failed = [r for r in ran if r.status == "FAILED"]
    lines.append(
        f"{len(ran) - len(failed)} of {len(ran)} cases that ran worked; {len(rows) - len(ran)} skipped "
        f"(not run here, so not checked)"
    )
    return "\n".join(lines)
