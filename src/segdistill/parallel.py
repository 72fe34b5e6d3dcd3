"""Data parallelism over everything that trains: the student and the distillation connectors.

Why: wrapping only the student in paddle.DataParallel all-reduces the student's gradients but not the
connectors' (they live in the Distiller), so each rank's connectors drift apart and only rank 0's are saved.
`StudentSide` is one Layer whose parameters are the student's and the connectors' and whose forward runs the
whole training forward (an online teacher included, under no_grad; cached teacher
tensors come in as arguments); one DataParallel over it synchronises both.
"""

from __future__ import annotations

import hashlib

from segdistill.paddle_env import paddle

import numpy as np


class StudentSide(paddle.nn.Layer):
    """forward(images, labels, teacher_feats, it) -> (student logits, {term: weighted distillation loss}) ({}
    without a teacher). `teacher_feats` are the cached teacher's tensors of this batch (None: an online teacher
    runs here); `it` the iteration (for losses that draw random numbers, keyed by it)."""

    def __init__(self, student, distiller=None):
        super().__init__()
        self.student = student
        if distiller is not None:
            self.connectors = distiller.connectors  # a sublayer here, so DataParallel syncs its gradients
        # Not a sublayer: the distiller references the teacher, whose parameters must stay out of the sync.
        object.__setattr__(self, "_distiller", distiller)

    def forward(self, images, labels=None, teacher_feats=None, it=None):
        if self._distiller is None:
            return self.student(images), {}
        return self._distiller(images, labels, teacher_feats, it)


def parameter_digest(layer) -> str:
    """SHA-256 of the trainable parameters. Not BatchNorm's running mean/variance: Paddle keeps them as
    parameters that take no gradient, and on CPU ranks they follow each rank's own images (PaddleSeg's
    `layers.SyncBatchNorm` is a plain BatchNorm2D there; on several GPU ranks it is nn.SyncBatchNorm)."""
    h = hashlib.sha256()
    for name, p in layer.named_parameters():
        if p.stop_gradient:
            continue
        h.update(name.encode())
        h.update(np.ascontiguousarray(p.numpy()).tobytes())
    return h.hexdigest()


# -- what the ranks of one run share ---------------------------------------------------------------------------
def check_ranks_agree(layer, it: int, rank: int, world: int, log) -> None:
    """Every rank must hold the same trainable parameters of `layer` (else the gradient sync is broken)."""
    digest = parameter_digest(layer)
    log(f"[ranks] iteration {it}: rank {rank} parameters sha256 {digest}")
    if world == 1:
        return
    import paddle.distributed as dist

    from segdistill.errors import SegDistillError

    mine = paddle.to_tensor([int(digest[i : i + 8], 16) for i in range(0, 32, 8)], dtype="int64")
    gathered = []
    dist.all_gather(gathered, mine)
    differ = [r for r, t in enumerate(gathered) if not np.array_equal(t.numpy(), mine.numpy())]
    if differ:
        raise SegDistillError(
            f"after iteration {it} the parameters of rank(s) {differ} differ from rank {rank}'s: "
            f"gradients are not synchronised across ranks"
        )


def join_ranks() -> tuple[int, int]:
    """(rank, world) of this process, joined to the other ranks' parallel environment when there are several."""
    import paddle.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    if world > 1:
        dist.init_parallel_env()
    return rank, world


def any_rank(flag: bool, world: int) -> bool:
    """Whether `flag` holds on any rank: every rank then takes the same branch."""
    if world == 1:
        return flag
    import paddle.distributed as dist

    t = paddle.to_tensor([int(flag)], dtype="int64")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(int(t.numpy()[0]))


def gather(obj, world: int) -> list:
    """Every rank's `obj` (a picklable value), in rank order."""
    if world == 1:
        return [obj]
    import paddle.distributed as dist

    out = []
    dist.all_gather_object(out, obj)
    return out


def all_mean(value: float, world: int) -> float:
    """The mean of `value` over the ranks."""
    if world == 1:
        return value
    import paddle.distributed as dist

    t = paddle.to_tensor([value], dtype="float64")
    dist.all_reduce(t)
    return float(t.numpy()[0]) / world
