"""Task losses PaddleSeg 2.8 computes correctly on paddle 3.3: its own classes, called through one wrapper.

Each was checked to run forward and backward on the pinned paddle and to match a numpy reference of its formula
(tests/test_task_losses.py). Formulas (paddleseg/models/losses/*.py), logits N x C x H x W, labels N x H x W:

- DiceLoss(weight, smooth=1): p = softmax(logits), y = one-hot labels, both zeroed at ignored pixels; per class c
  and image n, d_nc = 1 - (2 sum p*y + smooth) / (sum (p + y) + smooth + 1e-8); loss = (1/C) sum_c w_c mean_n d_nc.
- BCELoss(weight='dynamic'|None, pos_weight=float|'dynamic'|None): y = one-hot labels (the label itself when
  C = 1); elementwise binary cross-entropy with logits, times the mask of non-ignored pixels, mean over
  elements / (mean of the mask + 1e-10). 'dynamic' weights: positives 2*neg/(pos+neg), negatives 2*pos/(pos+neg).
- LovaszSoftmaxLoss(classes='present'|'all'|[ids]): Berman et al. (CVPR 2018) over the valid pixels of the
  whole batch: per class, the Lovasz extension of the Jaccard loss on the errors |y_c - p_c|, sorted; mean over
  classes ('present': those in the labels).
- DetailAggregateLoss (STDC, Fan et al. CVPR 2021), on the detail head's 1-channel output: boundary targets from
  a 3x3 Laplacian of the label at strides 1, 2, 4, fused by the loss's own 1x1 kernel (PaddleSeg draws it at
  construction and never trains it), thresholded at 0.1; loss = BCE with logits + (1 - Dice) on sigmoid.

PaddleSeg's DiceLoss writes into its labels (ignored pixels set to 0); the wrapper passes a copy so the next
loss sees the labels unchanged.
"""

from segdistill.paddle_env import paddle

from segdistill.losses.registry import prepare_label


def paddleseg_loss(type_name: str, **options):
    """fn(logits, label) calling PaddleSeg's `type_name` loss class built with `options`."""
    from paddleseg.models import losses

    cls = getattr(losses, type_name)
    if type_name == "BCELoss" and isinstance(options.get("pos_weight"), int):
        options["pos_weight"] = float(options["pos_weight"])  # PaddleSeg accepts float or 'dynamic' only
    layer = cls(**options)

    def fn(logits, label):
        label = prepare_label(type_name, label, logits.shape)
        return layer(logits, paddle.assign(label))

    fn.layer = layer
    return fn
