"""Segmentation and distillation losses, by name.

    from segdistill.losses import get_loss
    loss = get_loss("kl")(student_logits, teacher_logits, label=label, temperature=4.0)

Distillation losses: kl, cwd, channelwise_legacy, mse (signature in `registry`); segmentation loss: ce.
"""

from segdistill.losses.registry import available, get_loss, register
from segdistill.losses.segmentation import cross_entropy
from segdistill.losses.logits import kl_loss
from segdistill.losses.channelwise import channelwise_legacy_loss, cwd_loss
from segdistill.losses.feature import mse_loss

__all__ = [
    "available",
    "get_loss",
    "register",
    "cross_entropy",
    "kl_loss",
    "cwd_loss",
    "channelwise_legacy_loss",
    "mse_loss",
]
