"""Pixel-wise cross-entropy for segmentation, written out so that it works on paddle 3.x.

PaddleSeg 2.8's CrossEntropyLoss fails on paddle 3.3 (float32 * int64 promotion), and
paddle.nn.functional.cross_entropy returns NaN when every pixel is ignored; this one does neither.
"""

import numpy as np

from segdistill.errors import SegDistillError
from segdistill.losses.registry import prepare_label, register
from segdistill.paddle_env import paddle

import paddle.nn.functional as F  # noqa: E402  (after paddle_env set paddle up)


@register("ce")
def cross_entropy(logits, label, ignore_index=255, weight=None):
    """Mean cross-entropy over the pixels whose label is not `ignore_index`.

    logits: N x C x H x W float; label: N x H x W (or N x 1 x H x W) integer class ids at the same H, W.
    With `weight` (C class weights) the result is the weighted mean sum(w[y] * nll) / sum(w[y]), as in
    paddle.nn.functional.cross_entropy. If every pixel is ignored the loss is 0 (and its gradient is 0).
    Non-ignored labels outside [0, C) raise SegDistillError.
    """
    shape = list(logits.shape)
    if len(shape) != 4:
        raise SegDistillError(f"cross-entropy needs N x C x H x W logits, got shape {shape}")
    if not logits.is_floating_point():
        raise SegDistillError(f"cross-entropy needs floating point logits, got {logits.dtype}")
    num_classes = shape[1]
    label_shape = list(label.shape)
    squeezed = label_shape[:1] + label_shape[2:] if len(label_shape) == 4 and label_shape[1] == 1 else label_shape
    if squeezed != [shape[0]] + shape[2:]:
        raise SegDistillError(
            f"cross-entropy: label shape {label_shape} does not match logits shape {shape} "
            "(expected N x H x W at the logits' size)"
        )
    label = prepare_label("ce", label, shape)

    valid = label != ignore_index
    # Out-of-range class ids would index garbage (or crash inside the kernel); say which values are wrong.
    lab_np = label.numpy()
    bad = (lab_np != ignore_index) & ((lab_np < 0) | (lab_np >= num_classes))
    if bad.any():
        values = sorted(set(np.unique(lab_np[bad]).tolist()))[:10]
        raise SegDistillError(
            f"cross-entropy: label values {values} are outside [0, {num_classes}) and not the "
            f"ignore index {ignore_index}"
        )

    safe_label = paddle.where(valid, label, paddle.zeros_like(label))
    logp = F.log_softmax(logits, axis=1)
    picked = paddle.take_along_axis(logp, safe_label.unsqueeze(1), axis=1).squeeze(1)  # N x H x W
    mask = valid.astype(logits.dtype)  # explicit cast: float * int64 does not promote on paddle 3.x

    if weight is None:
        pix_w = mask
    else:
        w = paddle.to_tensor(np.asarray(weight.numpy() if hasattr(weight, "numpy") else weight, dtype="float64"))
        if list(w.shape) != [num_classes]:
            raise SegDistillError(
                f"cross-entropy: class weight has shape {list(w.shape)}, expected [{num_classes}] (one per class)"
            )
        w = w.astype(logits.dtype)
        pix_w = paddle.gather(w, safe_label.flatten()).reshape(safe_label.shape) * mask

    total = pix_w.sum()
    # All pixels ignored: divide 0 by 1 instead of 0 by 0, so the loss is 0, not NaN.
    denom = paddle.where(total > 0, total, paddle.ones_like(total))
    return -(picked * pix_w).sum() / denom
