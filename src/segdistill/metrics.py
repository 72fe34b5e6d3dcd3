"""Segmentation metrics from a confusion matrix accumulated over a whole evaluation set.

Rows of the matrix are ground-truth classes, columns predicted classes. Pixels whose label equals the
ignore index are left out entirely.

Classes that never occur: a class absent from both the labels and the predictions of the whole set has a
zero union, so its IoU and Dice (and precision/recall) are undefined; they are reported as NaN and left out
of the means (`miou`, `dice`). A class that occurs in the labels but is never predicted (or is predicted but
never occurs) has IoU 0 and counts in the means. Kappa is NaN when chance agreement is 1 (every pixel of
labels and predictions is one class), where Cohen's kappa is 0/0. With no pixels at all every value is NaN.

Works on numpy arrays and on paddle tensors (anything with `.numpy()`), without importing paddle.
"""

import numpy as np

from segdistill.errors import SegDistillError


def _to_numpy(x, what):
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
        raise SegDistillError(
            f"metrics: {what} must hold integer class ids, got dtype {x.dtype}"
            + ("; take the argmax over channels first" if what == "pred" else "")
        )
    return x


def _squeeze_channel(x):
    # N x 1 x H x W -> N x H x W
    return x[:, 0] if x.ndim == 4 and x.shape[1] == 1 else x


def _safe_div(num, den):
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _nanmean(x):
    x = np.asarray(x, dtype=np.float64)
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def compute_metrics(matrix):
    """Metrics of a K x K confusion matrix (rows = ground truth, cols = prediction).

    Returns a dict: miou, class_iou (list), acc (pixel accuracy), class_precision, class_recall, kappa
    (Cohen's), dice (mean), class_dice, num_pixels. Per-class lists hold NaN where undefined (see module doc).
    """
    m = np.asarray(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise SegDistillError(f"metrics: confusion matrix must be square, got shape {m.shape}")
    m = m.astype(np.float64)
    tp = np.diag(m)
    gt = m.sum(axis=1)  # pixels per ground-truth class
    pr = m.sum(axis=0)  # pixels per predicted class
    total = m.sum()
    union = gt + pr - tp

    class_iou = _safe_div(tp, union)
    class_dice = _safe_div(2 * tp, gt + pr)
    acc = float(_safe_div(tp.sum(), total))
    chance = float(_safe_div((gt * pr).sum(), total * total))
    kappa = float(_safe_div(acc - chance, 1.0 - chance)) if total > 0 else float("nan")

    return {
        "miou": _nanmean(class_iou),
        "class_iou": class_iou.tolist(),
        "acc": acc,
        "class_precision": _safe_div(tp, pr).tolist(),
        "class_recall": _safe_div(tp, gt).tolist(),
        "kappa": kappa,
        "dice": _nanmean(class_dice),
        "class_dice": class_dice.tolist(),
        "num_pixels": int(total),
    }


def majority_miou(class_pixels) -> float:
    """mIoU of predicting the most frequent class everywhere, from the label histogram alone (pixels per class,
    the confusion matrix's row sums): that class's IoU is its share of the pixels, every other class present has
    IoU 0, absent classes are left out as always (NaN when there are no pixels). The same `compute_metrics` as any
    prediction, on the matrix that prediction would give (ties: the first class, as an argmax)."""
    counts = np.asarray(list(class_pixels), dtype=np.int64)
    matrix = np.zeros((len(counts), len(counts)), dtype=np.int64)
    if len(counts):
        matrix[:, int(np.argmax(counts))] = counts
    return compute_metrics(matrix)["miou"] if len(counts) else float("nan")


class ConfusionMatrix:
    """Accumulates a confusion matrix over batches; `compute()` gives the metrics of everything seen."""

    def __init__(self, num_classes, ignore_index=255):
        if int(num_classes) < 1:
            raise SegDistillError(f"metrics: num_classes must be >= 1, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred, label):
        """Add a batch: pred N x H x W class ids, label N x H x W or N x 1 x H x W. Returns self."""
        pred = _squeeze_channel(_to_numpy(pred, "pred"))
        label = _squeeze_channel(_to_numpy(label, "label"))
        if pred.shape != label.shape:
            raise SegDistillError(f"metrics: prediction shape {pred.shape} differs from label shape {label.shape}")
        k = self.num_classes
        label = label.reshape(-1).astype(np.int64)
        pred = pred.reshape(-1).astype(np.int64)
        keep = label != self.ignore_index
        label, pred = label[keep], pred[keep]
        for name, arr in (("label", label), ("prediction", pred)):
            bad = (arr < 0) | (arr >= k)
            if bad.any():
                values = np.unique(arr[bad])[:10].tolist()
                raise SegDistillError(
                    f"metrics: {name} values {values} are outside [0, {k}) and not the ignore index "
                    f"{self.ignore_index}; check num_classes and the dataset's labels"
                )
        self.matrix += np.bincount(label * k + pred, minlength=k * k).reshape(k, k)
        return self

    def merge(self, other):
        """Add another ConfusionMatrix's counts (e.g. from another process). Returns self."""
        if not isinstance(other, ConfusionMatrix):
            raise TypeError(f"can only merge a ConfusionMatrix, got {type(other).__name__}")
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise SegDistillError(
                f"metrics: cannot merge a {other.num_classes}-class matrix (ignore {other.ignore_index}) into a "
                f"{self.num_classes}-class one (ignore {self.ignore_index})"
            )
        self.matrix += other.matrix
        return self

    def reset(self):
        self.matrix[:] = 0

    def compute(self):
        """Metrics of all pixels seen so far (see compute_metrics)."""
        return compute_metrics(self.matrix)
