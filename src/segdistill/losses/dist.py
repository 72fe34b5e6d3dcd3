"""DIST: distillation from a stronger teacher by matching class relations, not probabilities.

Huang, You, Wang, Qian, Xu, "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022 (the authors'
segmentation code, `DIST` on the logits). p = softmax(z / tau) over the classes of every pixel; the rows are the
N*H*W pixels of the batch (a P x C matrix per model). With Pearson(x, y) = x~ . y~ / (|x~| |y~| + 1e-8) on the
centred vectors x~ = x - mean(x), y~ = y - mean(y):

    inter = 1 - mean over pixels i of Pearson(p_S[i, :], p_T[i, :])      (across the C classes)
    intra = 1 - mean over classes c of Pearson(p_S[:, c], p_T[:, c])     (across the P pixels)
    loss  = tau^2 * (beta * inter + gamma * intra)

Defaults beta = gamma = tau = 1 (the paper's segmentation setting). No mask: as in the authors' code, every
pixel is a row, and `label` is not used.
"""

from segdistill.paddle_env import paddle  # noqa: F401  (prepares the process before paddle is imported)

import paddle.nn.functional as F

from segdistill.losses.registry import check_pair, check_temperature, register

_EPS = 1e-8  # the authors' constant


def pearson(x, y, axis):
    """Pearson correlation of x and y along `axis` (2-D inputs), with 1e-8 added to the norms' product."""
    x = x - x.mean(axis=axis, keepdim=True)
    y = y - y.mean(axis=axis, keepdim=True)
    # paddle's norm has gradient 0 at a zero vector (a constant column), not NaN
    return (x * y).sum(axis=axis) / (x.norm(p=2, axis=axis) * y.norm(p=2, axis=axis) + _EPS)


@register("dist")
def dist_loss(student, teacher, label=None, ignore_index=255, beta=1.0, gamma=1.0, temperature=1.0):
    """tau^2 (beta * inter-class + gamma * intra-class relation loss) of the per-pixel class distributions."""
    teacher = check_pair("dist", student, teacher)
    tau = check_temperature("dist", temperature)
    c = int(student.shape[1])

    def rows(z):  # N x C x H x W -> (N*H*W) x C probabilities
        return F.softmax(z / tau, axis=1).transpose([0, 2, 3, 1]).reshape([-1, c])

    p_s, p_t = rows(student), rows(teacher)
    inter = 1.0 - pearson(p_s, p_t, axis=1).mean()
    intra = 1.0 - pearson(p_s, p_t, axis=0).mean()
    return (tau * tau) * (float(beta) * inter + float(gamma) * intra)
