"""Pair-wise affinity distillation: the student's pixel-to-pixel similarity matrices match the teacher's.

Both losses compare similarities between L2-normalised feature vectors, so student and teacher may differ in
channels (registered `any_channels`); N, H and W must agree.

`skd_pairwise` (Liu, Chen, Liu, Qin, Luo, Wang, "Structured Knowledge Distillation for Semantic Segmentation",
CVPR 2019; pair-wise term as in CIRKD's `CriterionPairWiseforWholeFeatAfterPool`): both features max-pooled with
kernel = stride = `pool` (default 2, ceil mode, so odd sizes keep their last row/column), each pixel's vector
divided by its L2 norm over C plus 1e-8 (CIRKD's `L2`), per image the affinity A = F^T F (HW' x HW'), and

    loss = mean over the N * HW' * HW' entries of (A_S - A_T)^2.

CIRKD's code pools with kernel = half the feature size (`scale` 0.5) and detaches the norm; here the kernel is
`pool` and the gradient flows through the norm, as the formula reads.

`cirkd_pixel` (Yang, Zhou, Wang, Wu, Xu, Tian, "Cross-Image Relational Knowledge Distillation for Semantic
Segmentation", CVPR 2022; mini-batch pixel-to-pixel term, `CriterionMiniBatchCrossImagePair`): features
L2-normalised along C (F.normalize: v / max(|v|, 1e-12)), optionally max-pooled first (`pool`, default 1 = no
pooling; CIRKD's code pools by 2); for every ordered pair (i, j) of images of the batch S_ij = f_S[i]^T f_S[j]
(HW x HW), T_ij likewise, and

    loss = 1/N^2 * sum over (i, j) of 1/HW * sum over rows m of KL(softmax(T_ij[m] / tau) || softmax(S_ij[m] / tau))

(`batchmean` per pair), tau = `temperature` (default 0.1, CIRKD's). The batch is the rank's own: under data
parallelism each rank relates its own images only (CIRKD gathers across GPUs for its memory bank, not for this
term).
"""

from segdistill.paddle_env import paddle

import paddle.nn.functional as F  # noqa: E402

from segdistill.errors import SegDistillError
from segdistill.losses.registry import check_pair, check_temperature, register

_L2_EPS = 1e-8  # CIRKD's `L2` constant


def check_pool(loss_name, pool) -> int:
    if isinstance(pool, bool) or int(pool) != pool or int(pool) < 1:
        raise SegDistillError(f"loss {loss_name!r}: pool must be a whole number >= 1, got {pool!r}")
    return int(pool)


def max_pool(x, k):
    return F.max_pool2d(x, kernel_size=k, stride=k, padding=0, ceil_mode=True) if k > 1 else x


def _pixels(f):
    """N x C x H x W -> N x C x HW."""
    return f.reshape([int(f.shape[0]), int(f.shape[1]), -1])


@register("skd_pairwise", any_channels=True)
def skd_pairwise_loss(student, teacher, label=None, ignore_index=255, pool=2):
    """Mean squared difference of the per-image pixel affinity matrices after max pooling; label is not used."""
    teacher = check_pair("skd_pairwise", student, teacher, any_channels=True)
    k = check_pool("skd_pairwise", pool)

    def affinity(f):
        f = max_pool(f, k)
        u = _pixels(f / (f.norm(p=2, axis=1, keepdim=True) + _L2_EPS))
        return paddle.matmul(u, u, transpose_x=True)  # N x HW' x HW'

    return ((affinity(student) - affinity(teacher)) ** 2).mean()


@register("cirkd_pixel", any_channels=True)
def cirkd_pixel_loss(student, teacher, label=None, ignore_index=255, temperature=0.1, pool=1):
    """Mini-batch cross-image pixel-to-pixel similarity KL at temperature tau; label is not used."""
    teacher = check_pair("cirkd_pixel", student, teacher, any_channels=True)
    tau = check_temperature("cirkd_pixel", temperature)
    k = check_pool("cirkd_pixel", pool)
    u_s = _pixels(F.normalize(max_pool(student, k), p=2, axis=1))  # N x C x HW
    u_t = _pixels(F.normalize(max_pool(teacher, k), p=2, axis=1))
    n, hw = int(u_s.shape[0]), int(u_s.shape[2])
    total = 0.0
    for i in range(n):  # one image against the whole batch at a time: N x HW x HW, not N^2 x HW x HW
        s = paddle.matmul(u_s[i : i + 1], u_s, transpose_x=True) / tau  # [j, m, n] = f_S[i][:, m] . f_S[j][:, n]
        t = paddle.matmul(u_t[i : i + 1], u_t, transpose_x=True) / tau
        log_p_t = F.log_softmax(t, axis=2)
        total = total + (log_p_t.exp() * (log_p_t - F.log_softmax(s, axis=2))).sum()
    return total / (hw * n * n)
