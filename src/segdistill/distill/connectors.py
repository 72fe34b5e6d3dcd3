"""Connectors: map a student tensor to the teacher's channel count so a loss can compare them.

They are trained with the student (their parameters join the student's optimizer) and discarded at export.
A loss's own trainable part (MGD's generator) is built from here too, by the name the loss registers
(`segdistill.losses.register(name, module=...)`), and lives and trains beside the connectors.
"""

from __future__ import annotations

from segdistill.paddle_env import paddle

from segdistill.errors import SegDistillError

nn = paddle.nn


def _sync_batch_norm(channels: int):
    from paddleseg.models import layers

    return layers.SyncBatchNorm(channels)


class Conv1x1(nn.Layer):
    """1x1 convolution, optionally followed by batch norm (as in CIRKD / mmrazor's ConvModule connector)."""

    def __init__(self, in_channels: int, out_channels: int, bn: bool = False):
        super().__init__()
        self.conv = nn.Conv2D(in_channels, out_channels, 1, bias_attr=not bn)
        # PaddleSeg's SyncBatchNorm, as in the models: synchronised over several GPU ranks, BatchNorm2D otherwise.
        self.bn = _sync_batch_norm(out_channels) if bn else None

    def forward(self, x):
        x = self.conv(x)
        return self.bn(x) if self.bn is not None else x


class MGDGenerator(nn.Layer):
    """MGD's generator (Yang et al., ECCV 2022): 3x3 conv, ReLU, 3x3 conv, padding 1; the first maps the input's
    channels to the teacher's (the authors' code: teacher channels throughout, after a 1x1 alignment)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2D(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2D(out_channels, out_channels, 3, padding=1)

    def forward(self, x):
        return self.conv2(nn.functional.relu(self.conv1(x)))


CONNECTORS = {
    "conv1x1": lambda cin, cout, **kw: Conv1x1(cin, cout, bn=False),
    "conv1x1_bn": lambda cin, cout, **kw: Conv1x1(cin, cout, bn=True),
    "mgd_generator": lambda cin, cout, **kw: MGDGenerator(cin, cout),
}


def build_connector(spec, in_channels: int, out_channels: int, term_name: str):
    """`spec` is a name (`conv1x1`, `conv1x1_bn`) or a mapping {type: conv1x1, bn: true}."""
    if isinstance(spec, dict):
        kind = spec.get("type", "conv1x1")
        if spec.get("bn"):
            kind = "conv1x1_bn"
    else:
        kind = spec
    if kind not in CONNECTORS:
        raise SegDistillError(
            f"distillation term '{term_name}': unknown connector '{kind}' (known: {', '.join(CONNECTORS)})"
        )
    return CONNECTORS[kind](in_channels, out_channels)
