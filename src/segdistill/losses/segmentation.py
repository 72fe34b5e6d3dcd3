"""Pixel-wise cross-entropy for segmentation, written out so that it works on paddle 3.x.

PaddleSeg 2.8's CrossEntropyLoss fails on paddle 3.3 (float32 * int64 promotion), and
paddle.nn.functional.cross_entropy returns NaN when every pixel is ignored; this one does neither.
"""

from segdistill.paddle_env import paddle

import numpy as np
import paddle.nn.functional as F  # noqa: E402  (after paddle_env set paddle up)

from segdistill.errors import SegDistillError
from segdistill.losses.registry import prepare_label, register


@register("ce")
def cross_entropy(
    logits, label, ignore_index=255, weight=None, avg_non_ignore=True, top_k_percent_pixels=1.0, check_labels=True
):
    """Cross-entropy over the pixels whose label is not `ignore_index`, with PaddleSeg's CrossEntropyLoss options.

    logits: N x C x H x W float; label: N x H x W (or N x 1 x H x W) integer class ids at the same H, W.
    Per pixel l = w[y] * nll (w = 1 without `weight`, 0 at ignored pixels). Then, as PaddleSeg 2.8:
    - `avg_non_ignore` (default): sum(l) / sum(w[y] over non-ignored pixels), the weighted mean over valid pixels;
    - `avg_non_ignore=False`: sum(l) / (N*H*W), ignored pixels count in the denominator;
    - `top_k_percent_pixels` p < 1: the k = int(p*N*H*W) largest l (hard-pixel mining), divided by the mean of
      their w[y] (1 without weights) -- `avg_non_ignore` does not apply, as in PaddleSeg.
    If every pixel is ignored the loss is 0 (and its gradient is 0), not NaN.
    `check_labels` (host copy of the labels): non-ignored labels outside [0, C) raise SegDistillError. The
    trainer passes False: its data stream checks labels on the host before they reach the device.
    """
    shape = list(logits.shape)
    _check_shapes(logits, label, top_k_percent_pixels)
    num_classes = shape[1]
    label = prepare_label("ce", label, shape)

    valid = label != ignore_index
    if check_labels:
        _check_label_values(label, num_classes, ignore_index)

    safe_label = paddle.where(valid, label, paddle.zeros_like(label))
    logp = F.log_softmax(logits, axis=1)
    picked = paddle.take_along_axis(logp, safe_label.unsqueeze(1), axis=1).squeeze(1)  # N x H x W
    mask = valid.astype(logits.dtype)  # explicit cast: float * int64 does not promote on paddle 3.x

    coef = _class_coef(weight, safe_label, mask, num_classes, logits.dtype)
    pix_w = coef * mask
    pixel_loss = -picked * pix_w

    if float(top_k_percent_pixels) < 1.0:
        flat = pixel_loss.flatten()
        k = max(1, int(float(top_k_percent_pixels) * flat.shape[0]))
        top, idx = paddle.topk(flat, k)
        top_coef = paddle.gather(coef.flatten(), idx)
        return top.mean() / (top_coef.mean() + 1e-8)
    if not avg_non_ignore:
        return pixel_loss.mean()
    total = pix_w.sum()
    # All pixels ignored: divide 0 by 1 instead of 0 by 0, so the loss is 0, not NaN.
    denom = paddle.where(total > 0, total, paddle.ones_like(total))
    return pixel_loss.sum() / denom


def _check_shapes(logits, label, top_k_percent_pixels) -> None:
    shape = list(logits.shape)
    if len(shape) != 4:
        raise SegDistillError(f"cross-entropy needs N x C x H x W logits, got shape {shape}")
    if not logits.is_floating_point():
        raise SegDistillError(f"cross-entropy needs floating point logits, got {logits.dtype}")
    if not 0.0 < float(top_k_percent_pixels) <= 1.0:
        raise SegDistillError(f"cross-entropy: top_k_percent_pixels must be in (0, 1], got {top_k_percent_pixels}")
    label_shape = list(label.shape)
    squeezed = label_shape[:1] + label_shape[2:] if len(label_shape) == 4 and label_shape[1] == 1 else label_shape
    if squeezed != [shape[0]] + shape[2:]:
        raise SegDistillError(
            f"cross-entropy: label shape {label_shape} does not match logits shape {shape} "
            "(expected N x H x W at the logits' size)"
        )


def _check_label_values(label, num_classes: int, ignore_index) -> None:
    """Out-of-range class ids would index garbage (or crash inside the kernel); say which values are wrong."""
    lab_np = label.numpy()
    bad = (lab_np != ignore_index) & ((lab_np < 0) | (lab_np >= num_classes))
    if bad.any():
        values = sorted(set(np.unique(lab_np[bad]).tolist()))[:10]
        raise SegDistillError(
            f"cross-entropy: label values {values} are outside [0, {num_classes}) and not the "
            f"ignore index {ignore_index}"
        )


def _class_coef(weight, safe_label, mask, num_classes: int, dtype):
    """Each pixel's class weight w[y] (1 without `weight`)."""
    if weight is None:
        return paddle.ones_like(mask)
    w = paddle.to_tensor(np.asarray(weight.numpy() if hasattr(weight, "numpy") else weight, dtype="float64"))
    if list(w.shape) != [num_classes]:
        raise SegDistillError(
            f"cross-entropy: class weight has shape {list(w.shape)}, expected [{num_classes}] (one per class)"
        )
    w = w.astype(dtype)
    return paddle.gather(w, safe_label.flatten()).reshape(safe_label.shape)
