"""Confusion-matrix metrics against small examples computed by hand."""

import math

import numpy as np
import pytest

from segdistill.errors import SegDistillError
from segdistill.metrics import ConfusionMatrix, compute_metrics

IGNORE = 255

# Example A, 3 classes, one 2 x 4 image. The ignored pixel's prediction (7) is out of range on purpose:
# it must be skipped, not counted and not rejected.
LABEL_A = np.array([[[0, 0, 1, 1], [2, 2, IGNORE, 1]]])
PRED_A = np.array([[[0, 1, 1, 1], [2, 0, 7, 2]]])
# (gt, pred) pairs: (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (1,2)
MATRIX_A = np.array(
    [
        [1, 1, 0],
        [0, 2, 1],
        [1, 0, 1],
    ]
)
# tp = [1, 2, 1], row sums gt = [2, 3, 2], column sums pred = [2, 3, 2], 7 pixels
# IoU = tp / (gt + pred - tp) = [1/3, 2/4, 1/3]; mIoU = (1/3 + 1/2 + 1/3) / 3 = 7/18
# acc = 4/7; precision = tp/pred = [1/2, 2/3, 1/2]; recall = tp/gt = [1/2, 2/3, 1/2]
# Dice = 2tp / (gt + pred) = [2/4, 4/6, 2/4]; mean = (1/2 + 2/3 + 1/2) / 3 = 5/9
# kappa: po = 4/7, pe = (2*2 + 3*3 + 2*2) / 49 = 17/49, (28/49 - 17/49) / (32/49) = 11/32


def _approx_list(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        if isinstance(e, float) and math.isnan(e):
            assert math.isnan(a)
        else:
            assert a == pytest.approx(e, rel=1e-12)


def test_hand_computed_example():
    cm = ConfusionMatrix(3, ignore_index=IGNORE)
    cm.update(PRED_A, LABEL_A)
    assert cm.matrix.dtype == np.int64
    np.testing.assert_array_equal(cm.matrix, MATRIX_A)
    r = cm.compute()
    assert r["num_pixels"] == 7
    _approx_list(r["class_iou"], [1 / 3, 1 / 2, 1 / 3])
    assert r["miou"] == pytest.approx(7 / 18, rel=1e-12)
    assert r["acc"] == pytest.approx(4 / 7, rel=1e-12)
    _approx_list(r["class_precision"], [1 / 2, 2 / 3, 1 / 2])
    _approx_list(r["class_recall"], [1 / 2, 2 / 3, 1 / 2])
    _approx_list(r["class_dice"], [1 / 2, 2 / 3, 1 / 2])
    assert r["dice"] == pytest.approx(5 / 9, rel=1e-12)
    assert r["kappa"] == pytest.approx(11 / 32, rel=1e-12)
    assert compute_metrics(MATRIX_A) == r


def test_rows_are_ground_truth_and_precision_recall_differ():
    # label [0, 0, 0, 1], pred [0, 1, 1, 1] -> matrix [[1, 2], [0, 1]] (row = gt)
    cm = ConfusionMatrix(2).update(np.array([[[0, 1, 1, 1]]]), np.array([[[0, 0, 0, 1]]]))
    np.testing.assert_array_equal(cm.matrix, [[1, 2], [0, 1]])
    r = cm.compute()
    _approx_list(r["class_precision"], [1 / 1, 1 / 3])  # tp / column sum
    _approx_list(r["class_recall"], [1 / 3, 1 / 1])  # tp / row sum
    _approx_list(r["class_iou"], [1 / 3, 1 / 3])  # 1 / (3 + 1 - 1), 1 / (1 + 3 - 1)


def test_kappa_textbook_example():
    # Two raters, 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15.
    # po = 35/50 = 0.7; pe = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = (0.7 - 0.5) / 0.5 = 0.4
    matrix = np.array([[20, 5], [10, 15]])
    assert compute_metrics(matrix)["kappa"] == pytest.approx(0.4, rel=1e-12)
    # the same through update(): build pixel arrays with exactly these counts
    gt = np.repeat([0, 0, 1, 1], [20, 5, 10, 15])
    pr = np.repeat([0, 1, 0, 1], [20, 5, 10, 15])
    cm = ConfusionMatrix(2).update(pr.reshape(1, 5, 10), gt.reshape(1, 5, 10))
    np.testing.assert_array_equal(cm.matrix, matrix)
    assert cm.compute()["kappa"] == pytest.approx(0.4, rel=1e-12)


def test_class_absent_everywhere_is_nan_and_excluded_from_means():
    # Example A with a 4th class that occurs in neither labels nor predictions.
    r = ConfusionMatrix(4).update(PRED_A, LABEL_A).compute()
    assert math.isnan(r["class_iou"][3]) and math.isnan(r["class_dice"][3])
    assert math.isnan(r["class_precision"][3]) and math.isnan(r["class_recall"][3])
    assert r["miou"] == pytest.approx(7 / 18, rel=1e-12)  # unchanged: the NaN class is left out
    assert r["dice"] == pytest.approx(5 / 9, rel=1e-12)
    assert r["kappa"] == pytest.approx(11 / 32, rel=1e-12)
    assert r["acc"] == pytest.approx(4 / 7, rel=1e-12)


def test_class_in_labels_never_predicted_counts_as_zero():
    # label [0, 0, 1, 1], pred all 0 -> matrix [[2, 0], [2, 0]]
    # IoU0 = 2 / (2 + 4 - 2) = 1/2, IoU1 = 0 / (2 + 0 - 0) = 0 -> mIoU 1/4
    # Dice0 = 4/6, Dice1 = 0 -> 1/3; precision1 = 0/0 -> NaN, recall1 = 0/2 = 0
    # kappa: po = 1/2, pe = (2*4 + 2*0)/16 = 1/2 -> 0
    r = ConfusionMatrix(2).update(np.zeros((1, 1, 4), dtype=np.int64), np.array([[[0, 0, 1, 1]]])).compute()
    _approx_list(r["class_iou"], [1 / 2, 0.0])
    assert r["miou"] == pytest.approx(1 / 4, rel=1e-12)
    assert r["dice"] == pytest.approx(1 / 3, rel=1e-12)
    _approx_list(r["class_precision"], [1 / 2, float("nan")])
    _approx_list(r["class_recall"], [1.0, 0.0])
    assert r["kappa"] == pytest.approx(0.0, abs=1e-12)


def test_class_absent_from_one_batch_is_counted_over_the_set():
    # batch 1 has only classes 0 and 1; batch 2 brings class 2.
    label1, pred1 = np.array([[[0, 1], [1, 0]]]), np.array([[[0, 1], [0, 0]]])
    label2, pred2 = np.array([[[2, 2], [0, 255]]]), np.array([[[2, 1], [0, 2]]])
    alone = ConfusionMatrix(3).update(pred1, label1).compute()
    assert math.isnan(alone["class_iou"][2])
    cm = ConfusionMatrix(3).update(pred1, label1).update(pred2, label2)
    # pairs: (0,0) (1,1) (1,0) (0,0) | (2,2) (2,1) (0,0)
    np.testing.assert_array_equal(cm.matrix, [[3, 0, 0], [1, 1, 0], [0, 1, 1]])
    r = cm.compute()
    # IoU0 = 3 / (3 + 4 - 3) = 3/4; IoU1 = 1 / (2 + 2 - 1) = 1/3; IoU2 = 1 / (2 + 1 - 1) = 1/2
    _approx_list(r["class_iou"], [3 / 4, 1 / 3, 1 / 2])
    assert r["miou"] == pytest.approx((3 / 4 + 1 / 3 + 1 / 2) / 3, rel=1e-12)
    assert r["num_pixels"] == 7


def test_merge_equals_one_matrix_over_all_batches():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 5, size=(6, 9, 11))
    label[rng.random(label.shape) < 0.1] = IGNORE
    pred = rng.integers(0, 5, size=(6, 9, 11))
    whole = ConfusionMatrix(5).update(pred, label)
    a = ConfusionMatrix(5).update(pred[:2], label[:2])
    b = ConfusionMatrix(5).update(pred[2:], label[2:])
    np.testing.assert_array_equal(a.merge(b).matrix, whole.matrix)
    with pytest.raises(SegDistillError, match="merge"):
        a.merge(ConfusionMatrix(4))


def test_matches_a_naive_count_on_random_data():
    rng = np.random.default_rng(1)
    label = rng.integers(0, 7, size=(3, 40, 50))
    label[rng.random(label.shape) < 0.2] = IGNORE
    pred = rng.integers(0, 7, size=(3, 40, 50))
    naive = np.zeros((7, 7), dtype=np.int64)
    for g, p in zip(label.ravel(), pred.ravel()):
        if g != IGNORE:
            naive[g, p] += 1
    np.testing.assert_array_equal(ConfusionMatrix(7).update(pred, label).matrix, naive)


def test_paddle_tensors_and_channel_axis_label():
    from segdistill.paddle_env import paddle

    cm = ConfusionMatrix(3).update(paddle.to_tensor(PRED_A), paddle.to_tensor(LABEL_A[:, None]))
    np.testing.assert_array_equal(cm.matrix, MATRIX_A)


def test_other_ignore_index():
    label = np.array([[[0, 1, 1, 0]]])
    pred = np.array([[[0, 1, 0, 1]]])
    cm = ConfusionMatrix(2, ignore_index=0).update(pred, label)
    np.testing.assert_array_equal(cm.matrix, [[0, 0], [1, 1]])


def test_bad_inputs_raise_clear_errors():
    cm = ConfusionMatrix(3)
    with pytest.raises(SegDistillError, match=r"label values \[-1, 5\]"):
        cm.update(np.zeros((1, 1, 3), dtype=np.int64), np.array([[[5, -1, 0]]]))
    with pytest.raises(SegDistillError, match=r"prediction values \[3\]"):
        cm.update(np.array([[[3, 0]]]), np.array([[[0, 0]]]))
    with pytest.raises(SegDistillError, match="argmax"):
        cm.update(np.zeros((1, 2, 2), dtype=np.float32), np.zeros((1, 2, 2), dtype=np.int64))
    with pytest.raises(SegDistillError, match="shape"):
        cm.update(np.zeros((1, 2, 2), dtype=np.int64), np.zeros((1, 2, 3), dtype=np.int64))
    assert cm.matrix.sum() == 0  # failed updates add nothing


def test_degenerate_cases():
    # Nothing counted: every value undefined, no warnings or exceptions.
    empty = ConfusionMatrix(2).update(np.zeros((1, 2, 2), dtype=np.int64), np.full((1, 2, 2), IGNORE)).compute()
    assert empty["num_pixels"] == 0
    assert all(math.isnan(empty[k]) for k in ("miou", "acc", "kappa", "dice"))
    # One class everywhere, predicted perfectly: IoU 1 for it, other classes excluded; kappa is 0/0 -> NaN.
    one = ConfusionMatrix(3).update(np.zeros((1, 2, 2), dtype=np.int64), np.zeros((1, 2, 2), dtype=np.int64))
    r = one.compute()
    assert r["miou"] == 1.0 and r["acc"] == 1.0 and r["dice"] == 1.0
    assert math.isnan(r["kappa"])
