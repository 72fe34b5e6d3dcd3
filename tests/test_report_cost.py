"""Model cost: our conv/linear MAC counter against a hand count, parameter counts, input sizes, latency."""

import csv
import math

from segdistill.paddle_env import paddle

import pytest

from conftest import STUDENT, TEACHER
from segdistill import cost
from segdistill.errors import SegDistillError
from segdistill.models import input_size

nn = paddle.nn


class Tiny(nn.Layer):
    """conv 3->4 (3x3, pad 1) -> BN -> ReLU -> grouped conv 4->4 (3x3, stride 2, groups 2, no bias)
    -> transposed conv 4->2 (2x2, stride 2) -> global mean -> linear 2->5."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2D(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2D(4)
        self.c2 = nn.Conv2D(4, 4, 3, stride=2, padding=1, groups=2, bias_attr=False)
        self.up = nn.Conv2DTranspose(4, 2, 2, stride=2)
        self.fc = nn.Linear(2, 5)

    def forward(self, x):
        y = self.up(self.c2(nn.functional.relu(self.bn(self.c1(x)))))
        return self.fc(y.mean(axis=[2, 3]))


def test_macs_of_tiny_net_by_hand():
    # 8x8 input. c1: 8*8 outputs * 4 channels * (3 in * 3*3) = 6912
    # c2: 4*4 outputs * 4 channels * (4/2 in * 3*3) = 1152
    # up: 4*4 inputs * 4 in-channels * (2 out * 2*2) = 512;  fc: 2 * 5 = 10
    macs = cost.count_macs(Tiny(), (1, 3, 8, 8))
    assert macs["macs_conv"] == 6912 + 1152 + 512
    assert macs["macs_linear"] == 10
    assert macs["macs"] == 8586 and macs["flops"] == 2 * 8586
    # Per image counts scale with the batch and the spatial size of a fully convolutional part.
    assert cost.count_macs(Tiny(), (2, 3, 8, 8))["macs"] == 2 * 8586
    assert cost.count_macs(Tiny(), (1, 3, 16, 16))["macs_conv"] == 4 * (6912 + 1152 + 512)


def test_params_of_tiny_net_by_hand():
    # c1 3*4*9 + 4 = 112, bn 4 + 4 = 8, c2 4*2*9 = 72, up 4*2*4 + 2 = 34, fc 2*5 + 5 = 15
    p = cost.count_params(Tiny())
    assert p["params"] == 112 + 8 + 72 + 34 + 15
    assert p["params_all"] == p["params"] + 8  # + BN running mean and variance


def test_counter_leaves_no_hooks_and_keeps_mode():
    net = Tiny()
    net.train()
    cost.count_macs(net, (1, 3, 8, 8))
    assert net.training
    assert not net.c1._forward_pre_hooks and not net.c1._forward_post_hooks


def test_input_size_reads_w_h_from_config():
    dic = {"val_dataset": {"transforms": [{"type": "Resize", "target_size": [48, 32]}, {"type": "Normalize"}]}}
    assert input_size(dic) == (32, 48)  # PaddleSeg writes (w, h)
    dic = {
        "val_dataset": {"transforms": [{"type": "Normalize"}]},
        "train_dataset": {"transforms": [{"type": "RandomPaddingCrop", "crop_size": [64, 40]}]},
    }
    assert input_size(dic) == (40, 64)
    assert input_size({"val_dataset": {"transforms": [{"type": "Resize", "target_size": 96}]}}) == (96, 96)
    with pytest.raises(SegDistillError, match="my.yml: no input size"):
        input_size({"val_dataset": {"transforms": [{"type": "Normalize"}]}}, "my.yml")
    with pytest.raises(SegDistillError, match=r"my.yml: val_dataset.transforms Resize.target_size"):
        input_size({"val_dataset": {"transforms": [{"type": "Resize", "target_size": [1, 2, 3]}]}}, "my.yml")


def test_latency_median_of_timed_runs():
    a, b = Tiny(), Tiny()
    res = cost.measure_latencies([(a, (1, 3, 8, 8)), (b, (2, 3, 16, 16))], runs=5, warmup=1)
    assert len(res) == 2
    for r in res:
        assert r["runs"] == 5 and r["warmup"] == 1
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"]
    with pytest.raises(SegDistillError, match="latency_runs"):
        cost.measure_latency(a, (1, 3, 8, 8), runs=0)


def test_ratios_by_hand():
    rows = [
        {"model": "teacher", "params": 400, "flops": 1000, "cpu_ms": 30.0, "gpu_ms": math.nan},
        {"model": "student", "params": 100, "flops": 250, "cpu_ms": 10.0, "gpu_ms": math.nan},
    ]
    cost.add_ratios(rows)
    assert rows[1]["compression"] == 4 and rows[1]["flops_ratio"] == 4 and rows[1]["cpu_speedup"] == 3
    assert rows[0]["compression"] == 1 and math.isnan(rows[1]["gpu_speedup"])
    with pytest.raises(SegDistillError, match="no 'teacher' row"):
        cost.add_ratios(rows[1:])


def test_cost_table_of_tiny_configs(tmp_path):
    out = tmp_path / "cost.csv"
    rows = cost.cost_table([("teacher", TEACHER, None), ("student", STUDENT, None)], out, runs=2, warmup=1)
    with open(out, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["model"] for r in table] == ["teacher", "student"]
    assert table[0]["input"] == "32x32" and table[0]["backbone"] == "ResNet18_vd"
    assert table[0]["architecture"] == table[1]["architecture"] == "DeepLabV3P"
    # The tiny teacher and student are the same network: same cost, compression 1.
    assert int(table[0]["params"]) == int(table[1]["params"]) > 1_000_000
    assert int(table[0]["flops"]) == 2 * int(table[0]["macs"])
    assert float(table[1]["compression"]) == 1.0
    assert float(table[0]["cpu_ms"]) > 0 and table[0]["latency_runs"] == "2"
    assert rows[0]["cpu_threads"] >= 1
    assert not list(tmp_path.glob(".*tmp"))


def test_cost_row_of_a_model_without_backbone_names_its_architecture(tmp_path):
    """BiSeNetV2 (as FastSCNN and UNet) has no `backbone:`: its row still says what was measured."""
    import yaml

    dic = yaml.safe_load(open(STUDENT))
    dic["model"] = {"type": "BiSeNetV2", "num_classes": 2, "pretrained": None}
    config = tmp_path / "bisenetv2.yml"
    config.write_text(yaml.safe_dump(dic))
    cost.cost_table([("teacher", TEACHER, None), ("student", str(config), None)], tmp_path / "cost.csv", runs=1)
    with open(tmp_path / "cost.csv", newline="") as fh:
        student = list(csv.DictReader(fh))[1]
    assert (student["architecture"], student["backbone"]) == ("BiSeNetV2", "")
    assert 0 < int(student["params"]) < 5_000_000
