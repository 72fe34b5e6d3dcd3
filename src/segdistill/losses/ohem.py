"""Online hard example mining cross-entropy, with PaddleSeg 2.8's OhemCrossEntropyLoss semantics.

Written out because PaddleSeg's class fails on paddle 3.3 (float32 x int64 type promotion). Its rule
(paddleseg/models/losses/ohem_cross_entropy_loss.py), for logits N x C x H x W and labels N x H x W:

- p_i = softmax(logits)[label_i] at every valid pixel i (label != ignore_index);
- when min_kept < (number of valid pixels): the threshold is t = thresh, raised to the min_kept-th smallest p_i
  when that is larger (min_kept > 0), and only pixels with p_i < t are kept; otherwise (too few valid pixels)
  every valid pixel is kept;
- loss = sum over kept pixels of -log p_i, divided by N*H*W, divided by (kept / (N*H*W) + 1e-5).

So the loss is the mean cross-entropy over the hard pixels, with PaddleSeg's 1e-5 in the denominator (0 when
no pixel is kept).
"""

from segdistill.paddle_env import paddle

import paddle.nn.functional as F

from segdistill.losses.registry import prepare_label

_EPS = 1e-5  # PaddleSeg's constant


def ohem_cross_entropy(logits, label, ignore_index=255, thresh=0.7, min_kept=10000):
    """PaddleSeg's OhemCrossEntropyLoss(thresh, min_kept, ignore_index) on N x C x H x W logits."""
    c = logits.shape[1]
    label = prepare_label("OhemCrossEntropyLoss", label, logits.shape).flatten()
    valid = label != ignore_index
    safe = paddle.where(valid, label, paddle.zeros_like(label))
    logp = F.log_softmax(logits, axis=1).transpose([0, 2, 3, 1]).reshape([-1, c])
    picked = paddle.take_along_axis(logp, safe.unsqueeze(1), axis=1).squeeze(1)
    kept = valid
    num_valid = int(valid.astype("int64").sum())
    if 0 < num_valid and min_kept < num_valid:
        with paddle.no_grad():
            prob = paddle.where(valid, picked.exp(), paddle.full_like(picked, 2.0))  # ignored sort last
            threshold = float(thresh)
            if min_kept > 0:
                v = float(paddle.sort(prob)[min_kept - 1])
                threshold = max(v, threshold)
            kept = paddle.logical_and(valid, prob < threshold)
    mask = kept.astype(logits.dtype)
    return (-picked * mask).mean() / (mask.mean() + _EPS)
