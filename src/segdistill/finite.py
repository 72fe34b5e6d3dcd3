"""A non-finite value stops a run at once, named: a diverged run is never a result.

What is checked, and when:

- every training step: the total loss and each of its parts (task losses, distillation terms), by `LossGuard`;
- at every evaluation and checkpoint: every parameter and buffer of the student and its connectors, BatchNorm's
  running mean and variance included (`check_state`). A NaN in a running statistic leaves the training loss finite
  (train mode normalises with the batch's statistics) and breaks only evaluation;
- in every evaluation, the logits of each batch before any argmax (segdistill.evaluate): finite weights can still
  overflow a forward (weights of 1e30 give inf - inf = NaN), and an argmax of NaN would count as class 0.

Why the loss is not read every step: on a GPU, reading a value to the host (`float(loss)`, `.numpy()`) waits
until the device has finished the step, so the host cannot queue the next step's work while the device computes.
`LossGuard.update` only queues a few element-wise kernels on the device (is each part finite; the first iteration
each went non-finite), and `LossGuard.check` reads that vector when the training log row is written (which reads
the loss anyway), and before every evaluation and checkpoint. Reading it every `log_iters` steps is safe: the
first non-finite iteration is kept on the device, so the message names it exactly whatever the interval; nothing
is saved between two reads (checkpoints and the best model are written after one); a run that went non-finite
wastes at most `log_iters - 1` steps before it stops. The cost per step is measured in bench/finite_guard.py.
"""

from __future__ import annotations

from segdistill.errors import SegDistillError

NEVER = 2**62  # "not non-finite yet": larger than any iteration, so the minimum over ranks is the first


class NonFinite(SegDistillError):
    """A non-finite loss, parameter, buffer or logit: the run is stopped and is not a result."""


class NonFiniteLogits(NonFinite):
    """Evaluation met non-finite logits (`index`: the first such image of the split, in this process's shard)."""

    def __init__(self, index: int, what: str = "logits"):
        self.index = index
        super().__init__(
            f"non-finite {what} for image {index} of the split: the model's forward overflows or carries NaN "
            f"(refused: an argmax of NaN would count as class 0)"
        )


class LossGuard:
    """The first iteration at which the loss and each part went non-finite, kept on the device."""

    def __init__(self, world: int = 1):
        self.world = world
        self.names: list[str] | None = None
        self.first = None

    def update(self, it: int, loss, parts: dict) -> None:
        """Queue the check of this step's loss and parts (no read to the host)."""
        from segdistill.paddle_env import paddle

        with paddle.no_grad():
            values = [loss, *parts.values()]
            values = paddle.stack([v.reshape([]).astype("float32") for v in values])
            if self.first is None:
                self.names = ["loss", *parts]
                self.first = paddle.full([len(self.names)], NEVER, dtype="int64")
            now = paddle.where(
                paddle.isfinite(values), paddle.full_like(self.first, NEVER), paddle.full_like(self.first, it)
            )
            self.first = paddle.minimum(self.first, now)

    def first_nonfinite(self) -> tuple[int, str] | None:
        """(iteration, what) of the earliest non-finite value so far on any rank, or None (reads the device)."""
        if self.first is None:
            return None
        first = self.first
        if self.world > 1:
            import paddle.distributed as dist

            first = first.clone()
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
        values = first.numpy().tolist()
        it = min(values)
        if it >= NEVER:
            return None
        name = self.names[values.index(it)]
        return it, "total loss" if name == "loss" else f"loss term '{name}'"


def first_nonfinite_tensor(named) -> str | None:
    """The name of the first tensor of `named` ((name, tensor) pairs) holding a NaN or an infinity, or None.
    One read to the host for all of them; integer tensors are skipped."""
    from segdistill.paddle_env import paddle

    floats = (paddle.float32, paddle.float16, paddle.bfloat16, paddle.float64)
    named = [(n, t) for n, t in named if t is not None and t.dtype in floats]
    if not named:
        return None
    with paddle.no_grad():
        ok = paddle.stack([paddle.isfinite(t).all() for _, t in named]).numpy()
    return next((n for (n, _), good in zip(named, ok) if not good), None)


def state_problem(layers) -> str | None:
    """What is non-finite in the state of `layers` as a checkpoint holds it: `parameter 'x'` (trained) or
    `buffer 'y'` (not trained: Paddle keeps BatchNorm's running mean and variance as parameters that take no
    gradient), or None."""
    for layer in layers:
        trained = {n for n, p in layer.named_parameters() if not p.stop_gradient}
        name = first_nonfinite_tensor(layer.state_dict().items())
        if name is not None:
            return f"{'parameter' if name in trained else 'buffer'} '{name}'"
    return None
