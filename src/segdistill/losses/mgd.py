"""MGD: masked generative distillation.

Yang, Li, Shao, Li, Yuan, Yuan, "Masked Generative Distillation", ECCV 2022 (the authors' `MGDLoss`). A random
spatial mask M (N x 1 x H x W, shared by the channels) drops a fraction `lambda_mask` of the student feature's
pixels; a generator G (3x3 conv, ReLU, 3x3 conv; trained with the student, not exported) must rebuild the
teacher's feature from what is left:

    M[n, h, w] = 0 if u > 1 - lambda_mask else 1,   u ~ U[0, 1)
    loss = alpha * sum over C*H*W of (T - G(S * M))^2 / N

Defaults alpha = 2e-5, lambda_mask = 0.75 (the paper's segmentation setting). The authors align differing
channels with a 1x1 conv before the mask: a term's `connector: conv1x1` is exactly that; without one G's first
conv maps the student's channels to the teacher's.

u is not drawn from a global generator: image n's u is `numpy.random.default_rng(keys[n]).random((H, W))`, with
keys[n] the image's key from the distiller (stream seed, iteration, position in the global batch, term), so a run
draws the same masks with any number of ranks or loader workers, and a resumed run the same as an uninterrupted
one.
"""

from segdistill.paddle_env import paddle

import numpy as np

from segdistill.errors import SegDistillError
from segdistill.losses.registry import check_pair, register


def mgd_mask(keys, h: int, w: int, lambda_mask: float) -> np.ndarray:
    """N x 1 x H x W float32 mask: 0 at the pixels MGD drops, 1 elsewhere; image n drawn from keys[n]."""
    u = np.stack([np.random.default_rng([int(k) for k in key]).random((h, w)) for key in keys])
    return (u <= 1.0 - lambda_mask).astype(np.float32)[:, None]


@register("mgd", module="mgd_generator", keyed=True, any_channels=True)
def mgd_loss(student, teacher, label=None, ignore_index=255, alpha=2e-5, lambda_mask=0.75, module=None, keys=None):
    """alpha * squared error of G(masked student) against the teacher, summed over C*H*W, averaged over N."""
    teacher = check_pair("mgd", student, teacher, any_channels=True)
    if not 0.0 <= float(lambda_mask) < 1.0:
        raise SegDistillError(f"loss 'mgd': lambda_mask must be in [0, 1), got {lambda_mask!r}")
    if module is None or keys is None:
        raise SegDistillError(
            "loss 'mgd' needs its generator (module=) and one random key per image (keys=); "
            "a distillation term gets both from the distiller"
        )
    n, _, h, w = (int(d) for d in student.shape)
    if len(keys) != n:
        raise SegDistillError(f"loss 'mgd': {len(keys)} keys for a batch of {n} images")
    mask = paddle.to_tensor(mgd_mask(keys, h, w, float(lambda_mask)), dtype=student.dtype)
    rebuilt = module(student * mask)
    if list(rebuilt.shape) != list(teacher.shape):
        raise SegDistillError(
            f"loss 'mgd': the generator gives {list(rebuilt.shape)}, the teacher feature is {list(teacher.shape)}"
        )
    return float(alpha) * ((rebuilt - teacher) ** 2).sum() / n
