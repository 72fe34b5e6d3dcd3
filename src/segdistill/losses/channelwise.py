"""Channel-wise distillation: each channel's activation map is treated as a distribution over positions.

`cwd` follows Shu et al., "Channel-wise Knowledge Distillation for Dense Prediction" (ICCV 2021), as in the
authors' code, mmrazor's ChannelWiseDivergence and CIRKD: for every (n, c), p = softmax over all H*W
positions of y / tau, and

    loss = tau^2 / (N * C) * sum_n sum_c sum_i p_T (log p_T - log p_S).

`channelwise_legacy` reproduces PaddleSlim's old `SegChannelwiseLoss`, the loss PaddleSeg's first
distillation tutorial used ('loss_function': 'SegChannelwiseLoss'). Facts from PaddleSlim's history (commit
"Refine distillation for Segmentation", #879, Aug 2021; removed again in #892, Sep 2021, so it was in no
2.x release's final form): `SegChannelwiseLoss(KLLoss)` with defaults act='softmax', axis=-1,
reduction='mean', called with (student, teacher) from model_name_pairs [['student', 'teacher']].
KLLoss.forward applies softmax over the last axis to both, takes paddle.log of the student's, and returns
F.kl_div(log p_S, p_T, reduction='mean'):

    loss = mean over all N*C*H*W elements of p_T (log p_T - log p_S),   p = softmax over W only,

i.e. KL(teacher || student) per (n, c, h) row, averaged over elements (not batchmean), no temperature.
Here log_softmax replaces log(softmax(.)): the same value, without -inf when a probability underflows.
"""

from segdistill.paddle_env import paddle

import paddle.nn.functional as F  # noqa: E402

from segdistill.losses.registry import check_pair, check_temperature, register, require_unit_temperature


@register("cwd")
def cwd_loss(student, teacher, label=None, ignore_index=255, temperature=1.0):
    """Channel-wise KL(teacher || student) over H*W positions at temperature tau; label is not used (no mask)."""
    teacher = check_pair("cwd", student, teacher)
    tau = check_temperature("cwd", temperature)
    n, c, h, w = student.shape
    s = student.reshape([n * c, h * w]) / tau
    t = teacher.reshape([n * c, h * w]) / tau
    # x - logsumexp(x), not F.log_softmax: paddle 3.3's CPU log_softmax is quadratic in the row length, and these
    # rows are whole H*W maps (45 s per call at 256x256 logits; docs/benchmark.md)
    log_p_t = t - paddle.logsumexp(t, axis=1, keepdim=True)
    log_p_s = s - paddle.logsumexp(s, axis=1, keepdim=True)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum()
    return kl * (tau * tau) / (n * c)


@register("channelwise_legacy")
def channelwise_legacy_loss(student, teacher, label=None, ignore_index=255, temperature=1.0):
    """Old PaddleSlim SegChannelwiseLoss: KL(teacher || student) with softmax over W, mean over N*C*H*W.

    No temperature (a value other than 1 raises SegDistillError) and no mask (label is not used).
    """
    teacher = check_pair("channelwise_legacy", student, teacher)
    require_unit_temperature("channelwise_legacy", temperature)
    log_p_s = F.log_softmax(student, axis=-1)
    p_t = F.softmax(teacher, axis=-1)
    return F.kl_div(log_p_s, p_t, reduction="mean")
