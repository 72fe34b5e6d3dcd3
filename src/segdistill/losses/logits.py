"""Pixel-wise KL distillation on logits, with PaddleSeg's KLLoss semantics.

Per pixel, the class distribution of the student, log_softmax(s / T) over channels, is compared with the
teacher's, softmax(t / T): elementwise KL p_T * (log p_T - log p_S), times T^2 (keeps gradient scale
independent of T, Hinton et al.). Without a label the result is the mean over all N*C*H*W elements. With a
label, elements at ignored pixels are zeroed and the mean over all elements is divided by
(fraction of kept pixels + 1e-8) -- i.e. PaddleSeg's normalisation, which is the mean over kept pixels of the
per-pixel KL summed over channels, divided by C.

`standardize: true` is logit standardisation (Sun et al., "Logit Standardization in Knowledge Distillation",
CVPR 2024, the authors' `normalize`): before the above, each pixel's logits of student and teacher are z-scored
over the classes, z' = (z - mean_c z) / (std_c z + 1e-7) with the sample standard deviation (ddof = 1, torch's
default `std`), so the student matches the teacher's logit *shape*, not its scale; T then divides z'.
"""

from segdistill.paddle_env import paddle  # noqa: F401  (prepares the process before paddle is imported)

import paddle.nn.functional as F

from segdistill.errors import SegDistillError
from segdistill.losses.registry import check_pair, check_temperature, prepare_label, register

_EPS = 1e-8  # PaddleSeg's KLLoss constant; keeps an all-ignored batch at 0 instead of NaN
_STD_EPS = 1e-7  # Sun et al.'s constant


def standardize_logits(z):
    """Per pixel, (z - mean over C) / (sample std over C + 1e-7)."""
    centred = z - z.mean(axis=1, keepdim=True)
    return centred / (z.std(axis=1, unbiased=True, keepdim=True) + _STD_EPS)


@register("kl")
def kl_loss(student, teacher, label=None, ignore_index=255, temperature=1.0, standardize=False):
    """PaddleSeg-style KL(teacher || student) over channels at temperature T, masked by label != ignore_index;
    `standardize`: logits z-scored per pixel first (Sun et al. 2024)."""
    teacher = check_pair("kl", student, teacher)
    t = check_temperature("kl", temperature)
    if standardize:
        if int(student.shape[1]) < 2:
            raise SegDistillError("loss 'kl': standardize needs at least 2 classes (a sample std over C)")
        student, teacher = standardize_logits(student), standardize_logits(teacher)
    log_p_s = F.log_softmax(student / t, axis=1)
    p_t = F.softmax(teacher / t, axis=1)
    elem = F.kl_div(log_p_s, p_t, reduction="none") * (t * t)
    if label is None:
        return elem.mean()
    label = prepare_label("kl", label, student.shape)
    mask = (label != ignore_index).astype(student.dtype).unsqueeze(1)  # N x 1 x H x W, broadcast over C
    return (elem * mask).mean() / (mask.mean() + _EPS)
