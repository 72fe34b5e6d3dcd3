"""IFVD: intra-class feature variation distillation.

Wang, Zhou, Wang, Wu, Liu, Li, "Intra-class Feature Variation Distillation for Semantic Segmentation", ECCV 2020
(as in CIRKD's `CriterionIFV`). The label is resized to the feature size by nearest neighbour (source index =
floor(target index * in / out), `registry.prepare_label`). Per image and class k the prototype is the mean
feature of that class's pixels, p_k = sum f / (count + 1e-6); per non-ignored pixel with class k,

    cos = f . p_k / max(|f| |p_k|, 1e-8)        (each model its own features and prototypes)
    loss = mean over non-ignored pixels of (cos_S - cos_T)^2;   0 when every pixel is ignored.

CIRKD's code averages over every pixel, ignored ones counting as 0; here the mean is over the non-ignored
pixels, as the paper writes it. Student and teacher may differ in channels (registered `any_channels`).
"""

from segdistill.paddle_env import paddle

import paddle.nn.functional as F  # noqa: E402

from segdistill.errors import SegDistillError
from segdistill.losses.registry import check_pair, prepare_label, register

_COUNT_EPS = 1e-6  # the authors' constants
_COS_EPS = 1e-8


def prototype_cosines(feat, onehot):
    """N x C x H x W features, N x K x HW class masks (0 at ignored pixels) -> N x HW cosine to own prototype."""
    n, c = int(feat.shape[0]), int(feat.shape[1])
    f = feat.reshape([n, c, -1])
    protos = paddle.matmul(f, onehot, transpose_y=True) / (onehot.sum(axis=2).unsqueeze(1) + _COUNT_EPS)  # NxCxK
    own = paddle.matmul(protos, onehot)  # N x C x HW: each pixel's class prototype (0 at ignored pixels)
    denom = paddle.maximum(f.norm(p=2, axis=1) * own.norm(p=2, axis=1), paddle.to_tensor(_COS_EPS, f.dtype))
    return (f * own).sum(axis=1) / denom


@register("ifvd", any_channels=True)
def ifvd_loss(student, teacher, label=None, ignore_index=255):
    """Mean over non-ignored pixels of the squared difference of pixel-to-class-prototype cosines."""
    teacher = check_pair("ifvd", student, teacher, any_channels=True)
    if label is None:
        raise SegDistillError("loss 'ifvd' needs the label (its class prototypes are per labelled class)")
    lab = prepare_label("ifvd", label, student.shape).reshape([int(student.shape[0]), -1])  # N x HW
    valid = lab != ignore_index
    safe = paddle.where(valid, lab, paddle.zeros_like(lab))
    classes = int(safe.max()) + 1
    keep = valid.astype(student.dtype)
    onehot = F.one_hot(safe, classes).astype(student.dtype).transpose([0, 2, 1]) * keep.unsqueeze(1)
    diff = (prototype_cosines(student, onehot) - prototype_cosines(teacher, onehot)) ** 2
    count = keep.sum()
    return (diff * keep).sum() / paddle.where(count > 0, count, paddle.ones_like(count))
