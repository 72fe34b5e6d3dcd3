"""PaddleSeg's evaluation protocol: a YAML's `test_config` (sliding window, scales, flips, auc_roc).

PaddleSeg 2.8's tools/val.py and core/train.py pass the YAML's `test_config` to core/val.py's `evaluate`, which
gets each image's logits from core/infer.py. The same semantics here (facts carried over, code our own):

- `aug_eval: false` (default): one forward (or the sliding window) at the input's size; `scales` and the flips
  are ignored, as PaddleSeg ignores them.
- `aug_eval: true`: for each scale (in order) the image is resized bilinearly to (int(h*s+0.5), int(w*s+0.5));
  for each flip of `(none, horizontal, vertical, both)` that is on (in that order) the flipped image's logits are
  flipped back, resized bilinearly to the input's size and summed in that order; the sum is divided by the
  number of views. Raw logits are summed (no softmax).
- `is_slide`: windows of `crop_size` (w, h) every `stride` (w, h), the last row/column aligned to the image's
  edge; the windows' logits are summed in float64 and divided by how many windows cover each pixel. The result
  stays float64 from there on, as in PaddleSeg.
- Then the dataset's transforms are undone in reverse (`trans_info`): a resize by bilinear resizing of the
  logits, a padding by cropping, which brings the logits to the label's size.
- `auc_roc`: the area under the ROC curve of the softmax probabilities of every evaluated pixel
  (scikit-learn's roc_auc_score; one-vs-rest for more than 2 classes), as PaddleSeg's val.py computes it.

Batching (ours): the views of one scale and the windows of a batch's images go through the model
`batch_size` at a time; in eval mode an image's logits do not depend on the rest of its batch beyond rounding.

No paddle at import: the study's checks parse a YAML's test_config when the workflow is parsed.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

from segdistill.errors import SegDistillError

KEYS = ("is_slide", "crop_size", "stride", "aug_eval", "scales", "flip_horizontal", "flip_vertical", "auc_roc")


@dataclass(frozen=True)
class Protocol:
    """An evaluation protocol, as PaddleSeg's test_config; `Protocol()` is plain evaluation."""

    is_slide: bool = False
    crop_size: tuple[int, int] | None = None  # (w, h), as PaddleSeg
    stride: tuple[int, int] | None = None  # (w, h)
    aug_eval: bool = False
    scales: tuple[float, ...] = (1.0,)
    flip_horizontal: bool = False
    flip_vertical: bool = False
    auc_roc: bool = False

    @classmethod
    def parse(cls, test_config, source: str) -> Protocol:
        """The protocol of a test_config mapping (None or {}: plain); `source` names it in errors
        (e.g. `cfg.yml: test_config`). Unknown keys and bad values are refused by name."""
        if test_config is None:
            return cls()
        if not isinstance(test_config, dict):
            raise SegDistillError(f"{source}: must be a mapping of {', '.join(KEYS)}; got {test_config!r}")
        unknown = [k for k in test_config if k not in KEYS]
        if unknown:
            raise SegDistillError(f"{source}.{unknown[0]}: unknown key (PaddleSeg's test_config has {', '.join(KEYS)})")
        kw = {k: _flag(test_config[k], f"{source}.{k}") for k in KEYS if k in test_config and k in _FLAGS}
        kw["scales"] = _scales(test_config.get("scales", 1.0), f"{source}.scales")
        for key in ("crop_size", "stride"):
            if test_config.get(key) is not None:
                kw[key] = _pair(test_config[key], f"{source}.{key}")
        proto = cls(**kw)
        if proto.is_slide:
            for key in ("crop_size", "stride"):
                if getattr(proto, key) is None:
                    raise SegDistillError(f"{source}.{key}: is_slide needs crop_size and stride ([w, h])")
            if any(s > c for s, c in zip(proto.stride, proto.crop_size)):
                raise SegDistillError(
                    f"{source}.stride: {list(proto.stride)} is larger than crop_size {list(proto.crop_size)}: "
                    "some pixels would lie in no window"
                )
        return proto

    @property
    def plain(self) -> bool:
        """One forward per image at its size (what evaluation did before test_config was honoured)."""
        return not (self.is_slide or self.aug_eval or self.auc_roc)

    def views(self) -> list[tuple[float, tuple[bool, bool]]]:
        """(scale, (flip horizontal, flip vertical)) of each forward view, in PaddleSeg's summing order."""
        if not self.aug_eval:
            return [(1.0, (False, False))]
        flips = [(False, False)]
        if self.flip_horizontal:
            flips.append((True, False))
        if self.flip_vertical:
            flips.append((False, True))
            if self.flip_horizontal:
                flips.append((True, True))
        return [(s, f) for s in self.scales for f in flips]

    def record(self) -> dict:
        """JSON-ready: the effective protocol (what evaluation did), with its label."""
        rec = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}
        if not self.aug_eval:
            rec.update(scales=[1.0], flip_horizontal=False, flip_vertical=False)
        return {"label": self.label(), **rec}

    def label(self) -> str:
        """Short text for tables: `plain`, `slide 64x64/32`, `scales 0.5,1 flip h`, ..."""
        parts = []
        if self.aug_eval:
            scales = ",".join(f"{s:g}" for s in self.scales)
            flips = "".join(c for c, on in (("h", self.flip_horizontal), ("v", self.flip_vertical)) if on)
            if scales != "1" or not flips:
                parts.append(f"scale{'s' if len(self.scales) > 1 else ''} {scales}")
            if flips:
                parts.append(f"flip {flips}")
        if self.is_slide:
            (cw, ch), (sw, sh) = self.crop_size, self.stride
            parts.append(f"slide {cw}x{ch} stride {sw}x{sh}")
        if self.auc_roc:
            parts.append("auc_roc")
        return " + ".join(parts) or "plain"


_FLAGS = ("is_slide", "aug_eval", "flip_horizontal", "flip_vertical", "auc_roc")


def _flag(value, where: str) -> bool:
    if not isinstance(value, bool):
        raise SegDistillError(f"{where}: must be true or false, got {value!r}")
    return value


def _scales(value, where: str) -> tuple[float, ...]:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values):
        raise SegDistillError(f"{where}: must be a positive number or a non-empty list of them, got {value!r}")
    return tuple(float(v) for v in values)


def _pair(value, where: str) -> tuple[int, int]:
    ok = isinstance(value, (list, tuple)) and len(value) == 2
    if not ok or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise SegDistillError(f"{where}: must be [width, height] (positive integers), got {value!r}")
    return int(value[0]), int(value[1])


def of_record(record: dict) -> Protocol:
    """The protocol an evaluation record states (`protocol`, as `Protocol.record` wrote it); a record from
    before protocols were recorded was a plain evaluation."""
    rec = dict(record.get("protocol") or {})
    rec.pop("label", None)
    return Protocol.parse(rec, f"{record.get('run') or 'evaluation record'}: protocol")


def of_experiment(dic: dict, config, override=None) -> Protocol:
    """The protocol a model is evaluated under: `override` (the study's evaluate.test_config mapping) when
    given, else (None or `yaml`) its YAML's own test_config."""
    if override is not None and override != "yaml":
        return Protocol.parse(override, "evaluate.test_config")
    return Protocol.parse(dic.get("test_config"), f"{config}: test_config")


# -- the logits ---------------------------------------------------------------------------------------------
def batch_logits(model, images, protocol: Protocol, trans_infos=None, batch_size: int = 1, autocast=None) -> list:
    """Each image's logits under `protocol`, as PaddleSeg 2.8's infer.inference / aug_inference give them.

    `images`: a paddle tensor N x C x H x W (images of one size, after the val transforms). `trans_infos`: per
    image, the dataset's `trans_info` list (('resize' | 'padding', (h, w)), ...) to undo, bringing the logits
    to the label's size; None keeps them at H x W. `batch_size`: forwards at once (windows, views, images).
    `autocast`: a context manager factory wrapping the forwards (the trainer's mixed precision).
    Returns N tensors 1 x K x h x w (float32, or float64 when the protocol slides, as PaddleSeg): take the
    argmax over axis 1 for the prediction."""
    from segdistill.paddle_env import paddle

    F = paddle.nn.functional
    autocast = autocast or contextlib.nullcontext
    n, _, h, w = images.shape
    views = protocol.views()
    total = None
    for scale in dict.fromkeys(s for s, _ in views):
        flips = [f for s, f in views if s == scale]
        scaled = images
        if protocol.aug_eval:
            scaled = F.interpolate(images, [int(h * scale + 0.5), int(w * scale + 0.5)], mode="bilinear")
        stacked = paddle.concat([_flip(scaled, f) for f in flips]) if len(flips) > 1 else _flip(scaled, flips[0])
        out = _infer(model, stacked, protocol, batch_size, autocast)
        for k, f in enumerate(flips):
            logit = _flip(out[k * n : (k + 1) * n], f)
            if protocol.aug_eval:
                logit = F.interpolate(logit, [h, w], mode="bilinear")
            total = logit if total is None else total + logit
    if protocol.aug_eval:
        total = total / len(views)
    return [_reverse(total[k : k + 1], None if trans_infos is None else trans_infos[k]) for k in range(n)]


def _flip(x, flip):
    from segdistill.paddle_env import paddle

    axes = [a for a, on in zip((3, 2), flip) if on]
    return paddle.flip(x, axis=axes) if axes else x


def _forward(model, x, autocast):
    """The model's first output (the prediction's logits) as NCHW, whatever the model's data_format."""
    from segdistill.paddle_env import paddle

    nhwc = getattr(model, "data_format", "NCHW") == "NHWC"
    with autocast():
        out = model(x.transpose((0, 2, 3, 1)) if nhwc else x)
    out = out[0] if isinstance(out, (list, tuple)) else out
    out = out.transpose((0, 3, 1, 2)) if nhwc else out
    # Mixed precision's fp16/bf16 logits are resized and summed in float32.
    return out if out.dtype in (paddle.float32, paddle.float64) else out.astype("float32")


def _infer(model, x, protocol: Protocol, batch_size: int, autocast):
    """Logits of each image of `x` (one forward, or the sliding window), `batch_size` forwards at once."""
    from segdistill.paddle_env import paddle

    bs = max(1, int(batch_size))
    if not protocol.is_slide:
        if len(x) <= bs:
            return _forward(model, x, autocast)
        return paddle.concat([_forward(model, x[i : i + bs], autocast) for i in range(0, len(x), bs)])
    return _slide(model, x, protocol, bs, autocast)


def windows(h: int, w: int, crop_size, stride) -> list[tuple[int, int, int, int]]:
    """(h1, h2, w1, w2) of each sliding window over an h x w image, row by row, as PaddleSeg's slide_inference:
    `crop_size`/`stride` are (w, h); the last window of a row/column ends at the image's edge."""
    (wc, hc), (ws, hs) = crop_size, stride
    rows = 1 if h <= hc else -(-(h - hc) // hs) + 1
    cols = 1 if w <= wc else -(-(w - wc) // ws) + 1
    out = []
    for r in range(rows):
        for c in range(cols):
            h2, w2 = min(r * hs + hc, h), min(c * ws + wc, w)
            out.append((max(h2 - hc, 0), h2, max(w2 - wc, 0), w2))
    return out


def _slide(model, x, protocol: Protocol, bs: int, autocast):
    """Sliding-window logits of every image of `x` (float64). Windows of all images go through the model `bs`
    at a time; the sums are float64, in window order, as PaddleSeg sums them (numpy float64)."""
    from segdistill.paddle_env import paddle

    import numpy as np

    n, _, h, w = x.shape
    wins = windows(h, w, protocol.crop_size, protocol.stride)
    jobs = [(j, k) for j in range(len(wins)) for k in range(n)]  # window-major: the summing order per image
    total, count = None, np.zeros([1, 1, h, w])
    for h1, h2, w1, w2 in wins:
        count[:, :, h1:h2, w1:w2] += 1
    for start in range(0, len(jobs), bs):
        chunk = jobs[start : start + bs]
        crops = [x[k : k + 1, :, wins[j][0] : wins[j][1], wins[j][2] : wins[j][3]] for j, k in chunk]
        out = _forward(model, paddle.concat(crops) if len(crops) > 1 else crops[0], autocast).numpy()
        if total is None:
            total = np.zeros([n, out.shape[1], h, w])
        for (j, k), logit in zip(chunk, out):
            h1, h2, w1, w2 = wins[j]
            total[k, :, h1:h2, w1:w2] += logit[:, : h2 - h1, : w2 - w1]
    return paddle.to_tensor(total / count)


def _reverse(logit, trans_info):
    """Undo the dataset's transforms on one image's logits (1 x K x H x W), last first: a resize by bilinear
    resizing, a padding by cropping (PaddleSeg's reverse_transform with mode bilinear)."""
    from segdistill.paddle_env import paddle

    for item in reversed(trans_info or []):
        mode = item[0][0] if isinstance(item[0], (list, tuple)) else item[0]
        hh, ww = int(item[1][0]), int(item[1][1])
        if mode == "resize":
            if list(logit.shape[2:]) != [hh, ww]:
                logit = paddle.nn.functional.interpolate(logit, [hh, ww], mode="bilinear")
        elif mode == "padding":
            logit = logit[:, :, :hh, :ww]
        else:
            raise SegDistillError(f"cannot undo the transform '{mode}' (trans_info): only resize and padding")
    return logit


def auc_roc(probabilities, labels, num_classes: int, ignore_index: int) -> float:
    """PaddleSeg's auc_roc: roc_auc_score over every pixel's softmax probabilities (class 1's for 2 classes,
    one-vs-rest otherwise). `probabilities`: arrays P x K, `labels`: arrays P (concatenated here). Labels with
    the ignore index are refused, as PaddleSeg refuses them."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    p, y = np.concatenate(probabilities), np.concatenate(labels)
    if (y == ignore_index).any():
        raise SegDistillError(f"test_config.auc_roc: labels with the ignore index {ignore_index} are not supported")
    try:
        return float(roc_auc_score(y, p[:, 1]) if num_classes == 2 else roc_auc_score(y, p, multi_class="ovr"))
    except ValueError as exc:
        raise SegDistillError(f"test_config.auc_roc: {exc}") from None
