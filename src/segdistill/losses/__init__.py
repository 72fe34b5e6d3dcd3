"""Segmentation and distillation losses, by name.

    from segdistill.losses import get_loss
    loss = get_loss("kl")(student_logits, teacher_logits, label=label, temperature=4.0)

Distillation losses: kl (standardize option), cwd, channelwise_legacy, mse, dist, skd_pairwise, cirkd_pixel,
ifvd, mgd (signature and options in `registry`, docs/methods.md); segmentation loss: ce.
"""

from segdistill.losses.affinity import cirkd_pixel_loss, skd_pairwise_loss
from segdistill.losses.channelwise import channelwise_legacy_loss, cwd_loss
from segdistill.losses.dist import dist_loss
from segdistill.losses.feature import mse_loss
from segdistill.losses.ifvd import ifvd_loss
from segdistill.losses.logits import kl_loss
from segdistill.losses.mgd import mgd_loss
from segdistill.losses.registry import available, check_options, get_loss, options, register
from segdistill.losses.segmentation import cross_entropy

__all__ = [
    "available",
    "get_loss",
    "register",
    "cross_entropy",
    "kl_loss",
    "cwd_loss",
    "channelwise_legacy_loss",
    "mse_loss",
    "dist_loss",
    "skd_pairwise_loss",
    "cirkd_pixel_loss",
    "ifvd_loss",
    "mgd_loss",
    "options",
    "check_options",
]
