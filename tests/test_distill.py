"""The distiller's parts on small layers: recorders record only inside a `with` block, the teacher stays in eval
whatever mode the distiller is put in, and the `distill_loss` fallback of the terms."""

from segdistill.paddle_env import paddle

import pytest

from segdistill.distill import Distiller, resolve_terms
from segdistill.distill.recorder import Recorder
from segdistill.errors import SegDistillError

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
    d = Distiller(
        student,
        teacher,
        resolve_terms(
            [{"loss": "kl"}, {"name": "mse_stem", "student": "stem", "teacher": "stem", "loss": "mse"}], "s.yml"
        ),
    )
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


# ---- a term's options ---------------------------------------------------------------------------------------


def test_term_options_reach_the_loss_and_a_new_loss_needs_no_other_edit():
    from segdistill.losses import get_loss, register

    seen = {}

    @register("scaled_mse_for_test")
    def scaled(student, teacher, label=None, ignore_index=255, factor=1.0):
        seen["factor"] = factor
        return factor * ((student - teacher) ** 2).mean()

    student, teacher = Net(), Net()
    terms = resolve_terms(
        [
            {"loss": "dist", "options": {"beta": 2.0, "gamma": 0.5, "temperature": 3}},
            {"loss": "scaled_mse_for_test", "options": {"factor": 7.5}},
        ],
        "s.yml",
    )
    d = Distiller(student, teacher, terms)
    x = paddle.rand([2, 3, 8, 8])
    d.setup(x)
    d.eval()  # BN in eval: the direct call below sees the same student outputs
    _, losses = d(x)
    s, t = student(x)[0], teacher(x)[0]
    want = get_loss("dist")(s, t, beta=2.0, gamma=0.5, temperature=3.0)
    assert float(losses["dist:logits"]) == pytest.approx(float(want), rel=1e-6)
    assert float(want) != pytest.approx(float(get_loss("dist")(s, t)), rel=1e-3)  # the options matter
    assert seen["factor"] == 7.5 and terms[1].temperature is None


def test_unknown_option_names_the_term_and_the_option():
    with pytest.raises(SegDistillError) as err:
        resolve_terms(
            [{"loss": "kl"}, {"name": "rel", "loss": "dist", "options": {"gama": 2}}],
            "study.yaml",
            source="distill.dist.terms",
        )
    msg = str(err.value)
    assert "distill.dist.terms[1] (term 'rel').options" in msg and "'gama'" in msg and "did you mean gamma" in msg
    assert "beta (default 1.0)" in msg
    with pytest.raises(SegDistillError, match=r"term 'ifvd:logits'.*no option 'temperature'"):
        resolve_terms([{"loss": "ifvd", "temperature": 2}], "s.yml")
    with pytest.raises(SegDistillError, match="temperature is given twice"):
        resolve_terms([{"loss": "cwd", "temperature": 2, "options": {"temperature": 3}}], "s.yml")
    with pytest.raises(SegDistillError, match=r"options: expected a mapping"):
        resolve_terms([{"loss": "cwd", "options": [1]}], "s.yml")


def test_temperature_key_is_the_options_temperature():
    a, b, c = resolve_terms(
        [{"loss": "cwd", "temperature": 4}, {"loss": "kl", "options": {"temperature": 4}}, {"loss": "cirkd_pixel"}],
        "s.yml",
    )
    assert a.options == {"temperature": 4.0} and b.options == {"temperature": 4.0}
    assert a.temperature == b.temperature == 4.0
    assert c.options == {} and c.temperature == 0.1  # unset: the loss's own default, not 1


class FakeStream:
    """What the distiller asks a keyed stream: its seed and this rank's (iteration, global position, index)."""

    seed = 5

    def keys(self, it):
        return [(it, 2 + j, 0) for j in range(2)]


def test_mgd_generator_trains_beside_the_connectors_and_its_mask_follows_the_iteration():
    student, teacher = Net(), Net()
    terms = resolve_terms(
        [{"name": "mgd", "student": "stem", "teacher": "stem", "loss": "mgd", "options": {"alpha": 1.0}}], "s.yml"
    )
    d = Distiller(student, teacher, terms, stream=FakeStream())
    x = paddle.rand([2, 3, 8, 8])
    d.setup(x)
    d.eval()
    names = [n for n, _ in d.named_parameters()]
    assert names and all(n.startswith("connectors.module0.") for n in names)  # the generator, not the student's
    assert not any("module" in n for n, _ in student.named_parameters())
    one, again, other = (float(d(x, it=it)[1]["mgd"]) for it in (3, 3, 4))
    assert one == again != other
    with pytest.raises(SegDistillError, match="term 'mgd'.*needs the keyed stream and the iteration"):
        d(x)


def test_check_terms_probes_both_untrained_models(tmp_path):
    """The check_terms job: every method's terms against both models (no weights) at the input size; a term whose
    channels differ without a connector is refused with the fix."""
    import json

    import yaml

    from conftest import ROOT
    from segdistill.distill.check import check_terms
    from segdistill.distill.terms import read_terms_file

    student, teacher = (str(ROOT / f"tests/configs/{r}_tiny.yml") for r in ("student", "teacher"))
    good, bad = tmp_path / "kl_cwd.yml", tmp_path / "bad.yml"
    good.write_text(
        yaml.safe_dump(
            {
                "terms": [
                    {"loss": "kl"},
                    {
                        "name": "cwd",
                        "student": "backbone.bb_2_1",
                        "teacher": "backbone.bb_3_1",
                        "loss": "cwd",
                        "connector": "conv1x1",
                    },
                ]
            }
        )
    )
    bad.write_text(
        yaml.safe_dump({"terms": [{"student": "backbone.bb_2_1", "teacher": "backbone.bb_3_1", "loss": "cwd"}]})
    )
    out = tmp_path / "checked.json"
    methods = {p.stem: read_terms_file(p) for p in (good, bad)}
    check_terms(student, teacher, {"kl_cwd": methods["kl_cwd"]}, out, log=lambda m: None)
    assert json.loads(out.read_text())["methods"] == {"kl_cwd": ["kl:logits", "cwd"]}
    assert json.loads(out.read_text())["input_size"] == [32, 32]
    with pytest.raises(SegDistillError, match=r"channels differ.*add `connector: conv1x1`"):
        check_terms(student, teacher, methods, tmp_path / "again.json", log=lambda m: None)
    assert not (tmp_path / "again.json").exists()
