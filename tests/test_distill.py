"""The distiller's parts on small layers: recorders record only inside a `with` block, the teacher stays in eval
whatever mode the distiller is put in, and the `distill_loss` fallback of the terms."""

import pytest

from segdistill.distill import Distiller, resolve_terms
from segdistill.distill.recorder import Recorder
from segdistill.errors import SegDistillError
from segdistill.paddle_env import paddle

nn = paddle.nn


class Net(nn.Layer):
    """conv -> BN -> conv: 4-D logits, a named feature and batch-norm statistics that training would move."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2D(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2D(4)
        self.head = nn.Conv2D(4, 2, 1)

    def forward(self, x):
        return [self.head(self.bn(self.stem(x)))]


def test_recorder_records_only_inside_with():
    net = Net()
    rec = Recorder(net, ["stem", "logits"])
    x = paddle.rand([1, 3, 8, 8])
    net(x)
    assert not net.stem._forward_post_hooks  # nothing registered outside a block
    with rec as outputs:
        assert len(net.stem._forward_post_hooks) == 1
        net(x)
    assert list(outputs) == ["stem"] and outputs["stem"].shape == [1, 4, 8, 8]
    assert not net.stem._forward_post_hooks  # removed on exit
    seen = outputs["stem"]
    net(paddle.rand([1, 3, 8, 8]))  # e.g. a validation pass: records nothing
    assert outputs["stem"] is seen
    with rec as again:
        pass
    assert again == {} and again is not outputs  # every block gets its own record


def test_distiller_train_keeps_teacher_in_eval():
    student, teacher = Net(), Net()
    teacher.train()
    d = Distiller(student, teacher, resolve_terms([{"loss": "kl"}, {"name": "mse_stem", "student": "stem",
                                                                     "teacher": "stem", "loss": "mse"}], "s.yml"))
    x = paddle.rand([2, 3, 8, 8])
    d.setup(x)
    teacher.train()  # whoever switches the teacher, the distiller's train() puts it back
    d.train()
    assert student.training and not teacher.training and not teacher.bn.training
    before = teacher.bn._mean.numpy().copy()
    logits, losses = d(x)
    assert set(losses) == {"kl:logits", "mse_stem"} and logits[0].shape == [2, 2, 8, 8]
    assert (teacher.bn._mean.numpy() == before).all()  # teacher BN statistics never move
    assert not student.stem._forward_post_hooks and not teacher.stem._forward_post_hooks  # no hook left
    d.eval()
    assert not student.training and not teacher.training
    d.train()
    assert student.training and not teacher.training


def test_terms_fall_back_to_the_student_yaml_distill_loss():
    dic = {"distill_loss": {"types": [{"type": "KLLoss"}], "coef": [3]}}
    terms = resolve_terms(None, "student.yml", dic)
    assert [(t.loss, t.weight, t.student) for t in terms] == [("kl", 3.0, "logits")]
    explicit = resolve_terms([{"loss": "mse", "weight": 2}], "student.yml", dic)
    assert [(t.loss, t.weight) for t in explicit] == [("mse", 2.0)]
    with pytest.raises(SegDistillError, match=r"distill.kl.terms: no terms given and student.yml has no"):
        resolve_terms(None, "student.yml", {}, "distill.kl.terms")
