"""Mixed precision as PaddleSeg's train.py offers it: `--precision fp32|fp16|bf16`, `--amp_level O1|O2`.

fp16 scales the loss (paddle.amp.GradScaler, PaddleSeg's init_loss_scaling 1024); bf16 has fp32's exponent range
and needs no scaling. Everything under `autocast()` runs in the chosen precision where Paddle has a kernel
for it: the student's forward and, in distillation, the teacher's. Losses are computed in fp32 from the
(cast) logits and features. O2 casts the parameters themselves (master weights stay fp32 in the optimizer).

Why refuse instead of warn: Paddle's auto_cast silently does nothing off CUDA/XPU/custom devices (paddle 3.3.1:
"amp_guard can only be enabled on CUDAPlace ... so it makes no effect"), so `--precision bf16` on a CPU would
train in fp32 while the log and the report said bf16.
"""

from __future__ import annotations

import contextlib

from segdistill.errors import SegDistillError
from segdistill.paddle_env import paddle

PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
AMP_LEVELS = ("O1", "O2")


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


def check(precision: str, amp_level: str = "O1") -> None:
    if precision not in PRECISIONS:
        raise SegDistillError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if amp_level not in AMP_LEVELS:
        raise SegDistillError(f"--amp_level {amp_level!r}: choose one of {', '.join(AMP_LEVELS)}")
    if precision == "fp32":
        return
    ok = supported_precisions()
    if precision not in ok:
        raise SegDistillError(
            f"--precision {precision} is not available on this device ({paddle.get_device()}): it supports "
            f"{', '.join(ok)}. Paddle applies fp16/bf16 autocast on GPUs only (fp16 from compute capability 7.0, "
            f"bf16 from 8.0 with CUDA >= 11); elsewhere it would silently train in fp32."
        )


class Amp:
    """Autocast + (for fp16) loss scaling around one training step."""

    def __init__(self, precision: str = "fp32", amp_level: str = "O1"):
        check(precision, amp_level)
        self.precision, self.level = precision, amp_level
        self.enabled = precision != "fp32"
        self.dtype = PRECISIONS[precision]
        self.scaler = paddle.amp.GradScaler(init_loss_scaling=1024) if precision == "fp16" else None

    def decorate(self, models, optimizer):
        """O2: cast the parameters (the optimizer keeps fp32 master weights). O1 and fp32: unchanged."""
        if self.enabled and self.level == "O2":
            models, optimizer = paddle.amp.decorate(models=models, optimizers=optimizer, level="O2",
                                                    dtype=self.dtype, save_dtype="float32")
        return models, optimizer

    def autocast(self):
        if not self.enabled:
            return contextlib.nullcontext()
        return paddle.amp.auto_cast(enable=True, level=self.level, dtype=self.dtype)

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

            self.scaler.load_state_dict({k: (np.asarray(v, dtype="float32") if k == "scale" else v)
                                         for k, v in state.items()})


def to_fp32(x):
    """Losses in fp32: cast autocast outputs (fp16/bf16) back before any reduction."""
    return x.astype("float32") if x.dtype in (paddle.float16, paddle.bfloat16) else x
