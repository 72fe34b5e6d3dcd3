"""Mixed precision as PaddleSeg's train.py offers it: `--precision fp32|fp16|bf16`, `--amp_level O1|O2`.

fp16 scales the loss (paddle.amp.GradScaler, PaddleSeg's init_loss_scaling 1024); bf16 has fp32's exponent range
and needs no scaling. Everything under `autocast()` runs in the chosen precision where Paddle has a kernel
for it: the student's forward and, in distillation, the teacher's. Losses are computed in fp32 from the
(cast) logits and features. O2 casts the parameters themselves (master weights stay fp32 in the optimizer).

The order is PaddleSeg's (core/train.py) and the one Paddle's `amp.decorate` docstring asks for: resume into the
fp32 model and optimizer, then `decorate`, then `paddle.DataParallel` (its reducer fixes the gradient groups'
dtypes when it is built). Evaluation during training runs under the same `autocast()` (PaddleSeg's core/val.py):
under O2 the parameters are fp16/bf16 and the images fp32. The teacher is never decorated and runs at
TEACHER_PRECISION (`teacher_region()`) both online and when its outputs are cached.

The op lists are PaddleSeg's (core/train.py and core/val.py pass them to every `auto_cast`): `elementwise_add`,
`batch_norm`, `sync_batch_norm` white, `bilinear_interp_v2` black (already black in Paddle 3.3.1's own lists).

Why refuse instead of warn: Paddle's auto_cast silently does nothing off CUDA/XPU/custom devices (paddle 3.3.1:
"amp_guard can only be enabled on CUDAPlace ... so it makes no effect"), so `--precision bf16` on a CPU would
train in fp32 while the log and the report said bf16.
"""

from __future__ import annotations

import contextlib

from segdistill.errors import SegDistillError


class _Paddle:
    """paddle, imported on first use: the study's preflight (workflow parse time, no paddle) calls `refused`."""

    def __getattr__(self, name):
        from segdistill.paddle_env import paddle

        return getattr(paddle, name)


paddle = _Paddle()

PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
AMP_LEVELS = ("O1", "O2")
WHITE_LIST = frozenset({"elementwise_add", "batch_norm", "sync_batch_norm"})  # PaddleSeg 2.8 core/train.py
BLACK_LIST = frozenset({"bilinear_interp_v2"})
TEACHER_PRECISION = "fp32"  # the teacher's forward, online and cached: no autocast, fp32 weights


def supported_precisions() -> list[str]:
    """Precisions that Paddle's AMP really applies on the current device."""
    place = paddle.get_device()
    if not place.startswith("gpu"):
        return ["fp32"]
    major, minor = paddle.device.cuda.get_device_capability()
    out = ["fp32"]
    if (major, minor) >= (7, 0):
        out.append("fp16")
    cuda = paddle.version.cuda()
    if major >= 8 and cuda not in ("False", None) and int(str(cuda).split(".")[0]) >= 11:
        out.append("bf16")
    return out


def check(precision: str, amp_level: str = "O1", world: int = 1) -> None:
    if precision not in PRECISIONS:
        raise SegDistillError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if amp_level not in AMP_LEVELS:
        raise SegDistillError(f"--amp_level {amp_level!r}: choose one of {', '.join(AMP_LEVELS)}")
    if precision == "fp32":
        return
    why = refused(precision, amp_level, world)
    if why:
        raise SegDistillError(f"--precision {precision} --amp_level {amp_level} with {world} ranks {why}")
    ok = supported_precisions()
    if precision not in ok:
        raise SegDistillError(
            f"--precision {precision} is not available on this device ({paddle.get_device()}): it supports "
            f"{', '.join(ok)}. Paddle applies fp16/bf16 autocast on GPUs only (fp16 from compute capability 7.0, "
            f"bf16 from 8.0 with CUDA >= 11); elsewhere it would silently train in fp32."
        )


def refused(precision: str, amp_level: str, ranks: int) -> str | None:
    """Why a combination is refused on any device, or None. bf16 with O2 over several ranks: O2 makes the
    gradients bf16, the data-parallel reducer of the Paddle versions read all-reduces fp16/fp32/fp64 gradient
    groups, and nobody has run it with segdistill yet."""
    if precision == "bf16" and amp_level == "O2" and ranks > 1:
        return (
            "is refused: it has not been run (Paddle's data-parallel reducer may not all-reduce bf16 "
            "gradients). Use amp_level O1, fp16, or one rank; `segdistill doctor --train` tries bf16 O2 on a "
            "GPU box (docs/distillation.md, 'Mixed precision')."
        )
    return None


class Amp:
    """Autocast + (for fp16) loss scaling around one training step."""

    def __init__(self, precision: str = "fp32", amp_level: str = "O1", world: int = 1):
        check(precision, amp_level, world)
        self.precision, self.level = precision, amp_level
        self.enabled = precision != "fp32"
        self.dtype = PRECISIONS[precision]
        self.scaler = paddle.amp.GradScaler(init_loss_scaling=1024) if precision == "fp16" else None

    def decorate(self, models, optimizer):
        """O2: cast the parameters (the optimizer keeps fp32 master weights). O1 and fp32: unchanged.

        Call it after resuming (a checkpoint is fp32: `save_dtype`) and before wrapping in DataParallel."""
        if self.enabled and self.level == "O2":
            models, optimizer = paddle.amp.decorate(
                models=models, optimizers=optimizer, level="O2", dtype=self.dtype, save_dtype="float32"
            )
        return models, optimizer

    def autocast(self):
        """The student's forward, in training and in evaluation."""
        if not self.enabled:
            return contextlib.nullcontext()
        return paddle.amp.auto_cast(
            enable=True,
            level=self.level,
            dtype=self.dtype,
            custom_white_list=set(WHITE_LIST),
            custom_black_list=set(BLACK_LIST),
        )

    def minimize(self, loss, optimizer) -> None:
        """backward + optimizer step (scaled for fp16: steps with inf/nan gradients are skipped)."""
        if self.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaled = self.scaler.scale(loss)
            scaled.backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        optimizer.clear_grad()

    def state_dict(self) -> dict:
        """The loss scaler's state as plain JSON values (a resumed fp16 run continues with the same scale)."""
        if self.scaler is None:
            return {}
        return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in self.scaler.state_dict().items()}

    def set_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            import numpy as np

            self.scaler.load_state_dict(
                {k: (np.asarray(v, dtype="float32") if k == "scale" else v) for k, v in state.items()}
            )


def set_deterministic() -> str:
    """Opt-in GPU determinism: cuDNN's deterministic algorithms (FLAGS_cudnn_deterministic), no autotuned
    choice between runs. It does not make every kernel deterministic (atomic-add backward kernels such as
    bilinear interpolation's stay as they are). A CPU build has no such flag: CPU runs are repeatable already
    (same machine, same threads). Returns the line the job logs."""
    if not paddle.is_compiled_with_cuda():
        return "deterministic: CPU build, nothing to set (CPU runs repeat bit for bit on the same machine)"
    paddle.set_flags({"FLAGS_cudnn_deterministic": True})
    return "deterministic: FLAGS_cudnn_deterministic=True (cuDNN's deterministic algorithms)"


def teacher_region():
    """Where the teacher's forward runs: outside any autocast of the caller (fp32, TEACHER_PRECISION), so the
    online teacher computes what the cache writer stores whatever the student's precision."""
    return paddle.amp.auto_cast(enable=False)


def to_fp32(x):
    """Losses in fp32: cast autocast outputs (fp16/bf16) back before any reduction."""
    return x.astype("float32") if x.dtype in (paddle.float16, paddle.bfloat16) else x
