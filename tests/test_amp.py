"""Mixed precision on CPU as far as Paddle allows it: the order resume -> decorate -> DataParallel, evaluation
under the training autocast, and the teacher's precision in the online and the cached path.

Paddle 3.3.1's `amp.decorate` returns unchanged on a CPU (it casts only on GPU/XPU/custom places) and
`auto_cast` does nothing there. `o2_on_cpu` lets Paddle's own `decorate` run on the CPU (its place check is
answered "GPU"), so O2's parameter casts, master weights and fp32 save hook are real; the forward of an
O2-cast model still cannot run here (no autocast to cast its inputs), which is the evaluation crash below.
"""

import contextlib
import importlib
import json

import numpy as np
import paddle
import pytest

from conftest import STUDENT, tiny_spec
from segdistill import checkpoint, precision
from segdistill.errors import SegDistillError
from segdistill.trainer import Trainer


class _GpuPlace:
    def is_gpu_place(self):
        return True

    def is_xpu_place(self):
        return False

    def is_custom_place(self):
        return False


class _Tracer:
    """The real tracer, with its expected place reported as a GPU (only while Paddle's decorate runs)."""

    def __init__(self, real):
        self._real, self._expected_place = real, _GpuPlace()

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.fixture
def o2_on_cpu(monkeypatch):
    auto_cast = importlib.import_module("paddle.amp.auto_cast")  # the module (paddle.amp.auto_cast is a function)
    from paddle.base import framework

    real = paddle.amp.decorate

    def decorate(*args, **kw):
        with monkeypatch.context() as m:
            m.setattr(auto_cast, "_dygraph_tracer", lambda: _Tracer(framework._dygraph_tracer()))
            m.setattr(auto_cast, "_is_gpu_float16_supported", lambda: True)
            m.setattr(auto_cast, "_is_gpu_bfloat16_supported", lambda: True)
            return real(*args, **kw)

    monkeypatch.setattr(paddle.amp, "decorate", decorate)
    monkeypatch.setattr(precision, "supported_precisions", lambda: ["fp32", "fp16", "bf16"])


def _student(data, save_dir, **spec):
    """A trainer of the tiny student on `data` (batch 2), writing to `save_dir`; `spec`: the other fields."""
    return Trainer(tiny_spec(data, save_dir, **{"batch_size": 2, **spec}))


def _fp32_checkpoint(tiny_data, tmp_path):
    # Fresh parameter names, as in the new process that resumes it (the optimizer state is keyed by them).
    with paddle.utils.unique_name.guard():
        _student(tiny_data, tmp_path / "fp32", iters=2, save_interval=2, do_eval=False).run()
    return tmp_path / "fp32" / "iter_2"


def test_o2_resumes_before_decorate_and_decorates_before_data_parallel(tiny_data, tmp_path, monkeypatch, o2_on_cpu):
    ckpt = _fp32_checkpoint(tiny_data, tmp_path)
    wrapped = []

    class SpyDataParallel:
        def __init__(self, layers):
            # What Paddle's reducer sees when it is built: the parameters' dtypes and values at this moment.
            wrapped.append((layers, {p.name: (str(p.dtype), p.astype("float32").numpy()) for p in layers.parameters()}))

    # Two ranks as far as the trainer can tell (no process group: only the constructor is checked).
    monkeypatch.setattr(paddle, "DataParallel", SpyDataParallel)
    monkeypatch.setattr(paddle.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(paddle.distributed, "get_rank", lambda: 0)
    monkeypatch.setattr(paddle.distributed, "init_parallel_env", lambda: None)
    with paddle.utils.unique_name.guard():
        t = _student(
            tiny_data, tmp_path / "o2", iters=4, precision="fp16", amp_level="O2", do_eval=False, resume_model=str(ckpt)
        )
    assert t.resumed[0] == 2  # the fp32 checkpoint loaded (after decorate it fails: dtypes differ)
    [(layers, seen)] = wrapped
    assert layers is t.student_side and isinstance(t.net, SpyDataParallel)
    saved = paddle.load(str(ckpt / "model.pdparams"))
    conv = [n for n, p in t.model.named_parameters() if n.endswith("conv.weight")][0]
    param = dict(t.model.named_parameters())[conv]
    # Decorated before the wrap: the reducer saw the fp16 parameters, holding the checkpoint's values.
    assert seen[param.name][0] == "paddle.float16"
    np.testing.assert_array_equal(seen[param.name][1], saved["0." + conv].astype("float16").astype("float32"))
    bn = next(layer.weight for layer in t.model.sublayers() if isinstance(layer, paddle.nn.BatchNorm2D))
    assert seen[bn.name][0] == "paddle.float32"  # BatchNorm stays fp32 under O2
    # The master weights are the checkpoint's fp32 values, and a checkpoint of this run is fp32 again.
    assert t.optimizer._multi_precision
    assert {str(v.dtype) for v in t.trainable.state_dict().values()} == {"paddle.float32"}


def test_o2_evaluation_needs_the_autocast_and_runs_under_it(tiny_data, tmp_path, monkeypatch, o2_on_cpu):
    from segdistill.evaluate import evaluate

    t = _student(tiny_data, tmp_path / "o2", iters=2, precision="bf16", amp_level="O2", do_eval=True)
    # The crash: O2 weights are bf16, the images fp32; without autocast (as before) the first conv fails.
    with pytest.raises(ValueError, match="does not match the type of data"):
        evaluate(t.model, t.val_ds, t.num_classes, t.ignore_index)

    # The trainer's evaluation runs every forward under its own autocast, with PaddleSeg's op lists.
    calls, depth, inside = [], [0], []
    real_auto_cast = paddle.amp.auto_cast

    def auto_cast(**kw):
        calls.append(kw)
        return real_auto_cast(**kw)

    @contextlib.contextmanager
    def counted(cm):
        depth[0] += 1
        try:
            with cm:
                yield
        finally:
            depth[0] -= 1

    monkeypatch.setattr(paddle.amp, "auto_cast", auto_cast)
    real_autocast = t.amp.autocast
    monkeypatch.setattr(t.amp, "autocast", lambda: counted(real_autocast()))
    t.model.register_forward_pre_hook(lambda layer, inputs: inside.append(depth[0] > 0))
    t.model.to(dtype="float32")  # on a CPU the autocast cannot cast: run the counted evaluation in fp32
    t._eval()
    assert len(inside) == len(t.val_ds) and all(inside)
    assert calls[0]["level"] == "O2" and calls[0]["dtype"] == "bfloat16"
    assert calls[0]["custom_white_list"] == {"elementwise_add", "batch_norm", "sync_batch_norm"}
    assert calls[0]["custom_black_list"] == {"bilinear_interp_v2"}


def test_online_teacher_is_not_decorated_and_runs_outside_the_autocast(
    tiny_data, tmp_path, monkeypatch, o2_on_cpu, patched_teacher
):
    o2 = _student(tiny_data, tmp_path / "o2", iters=2, precision="fp16", amp_level="O2", teacher_config=patched_teacher)
    assert {str(p.dtype) for p in o2.distiller.teacher.parameters()} == {"paddle.float32"}
    assert "paddle.float16" in {str(p.dtype) for p in o2.model.parameters()}

    # A step (O1: it runs on a CPU): the student's forward inside the enabled autocast, the teacher's outside.
    stack, seen = _autocast_stack(monkeypatch), {}
    t = _student(tiny_data, tmp_path / "o1", iters=2, precision="fp16", amp_level="O1", teacher_config=patched_teacher)
    for name, model in (("student", t.model), ("teacher", t.distiller.teacher)):
        model.register_forward_pre_hook(lambda layer, inputs, name=name: seen.setdefault(name, list(stack)) and None)
    t.step(*map(paddle.to_tensor, t.stream.batch(1)), it=1)
    assert seen == {"student": [True], "teacher": [True, False]}


def test_cache_records_the_teacher_precision_and_refuses_another(tiny_data, tmp_path, monkeypatch, patched_teacher):
    from segdistill.distill.cache import write_teacher_outputs
    from segdistill.specs import TeacherOutputsSpec

    stack, seen = _autocast_stack(monkeypatch), []
    from segdistill.distill import cache, teachers

    real_run = teachers.run_teacher

    def run_teacher(model, recorder, images):
        model.register_forward_pre_hook(lambda layer, inputs: seen.append(list(stack)))
        return real_run(model, recorder, images)

    monkeypatch.setattr(teachers, "run_teacher", run_teacher)
    out = tmp_path / "cache"
    spec = TeacherOutputsSpec(
        config=STUDENT,
        teacher_config=patched_teacher,
        out=str(out),
        data_seed=0,
        data_root=str(tiny_data),
        iters=2,
        batch_size=2,
        dtype="float32",
    )
    manifest = write_teacher_outputs(spec, log=lambda m: None)
    assert manifest["teacher"]["precision"] == "fp32" == precision.TEACHER_PRECISION
    assert seen and all(s[-1] is False for s in seen)  # the same fp32 region as the online teacher

    # A cache whose teacher ran at another precision is refused by name.
    data = json.loads((out / "manifest.json").read_text())
    data["teacher"]["precision"] = "fp16"
    (out / "manifest.json").write_text(json.dumps(data))
    expected = {
        "stream": data["stream"],
        "data_sha256": data["data"]["sha256"],
        "weights": "w",
        "weights_sha256": data["teacher"]["weights_sha256"],
    }
    with pytest.raises(SegDistillError, match="teacher.precision is fp16 in the cache"):
        cache.CachedTeacher(out, expected).check_names(["logits"])


def test_bf16_o2_on_several_ranks_is_refused(monkeypatch):
    monkeypatch.setattr(precision, "supported_precisions", lambda: ["fp32", "fp16", "bf16"])
    with pytest.raises(SegDistillError, match="--precision bf16 --amp_level O2 with 2 ranks is refused"):
        precision.Amp("bf16", "O2", world=2)
    precision.Amp("bf16", "O1", world=2)
    precision.Amp("fp16", "O2", world=2)
    precision.Amp("bf16", "O2", world=1)


def test_checkpoint_without_rank_files_is_damaged(tmp_path):
    layer = paddle.nn.Linear(2, 2)
    opt = paddle.optimizer.SGD(parameters=layer.parameters())
    path = checkpoint.save(tmp_path, 1, layer, opt, {}, rng_states=[checkpoint.rng_state()] * 2)
    assert sorted(p.name for p in path.glob("rng*")) == ["rng_rank0.pkl", "rng_rank1.pkl"]
    checkpoint.verify(path)
    (path / "rng_rank1.pkl").write_bytes(b"")
    with pytest.raises(ValueError, match="rng_rank1.pkl does not match"):
        checkpoint.verify(path)


def test_several_gpu_ranks_get_paddleseg_sync_batch_norm_one_rank_or_cpu_plain(monkeypatch):
    """SyncBN is PaddleSeg's (layers.SyncBatchNorm in its models, kept; the connectors use it too): synchronised
    over several GPU ranks, plain BatchNorm2D on one rank or on CPU ranks (no SyncBN kernel there)."""
    from segdistill.distill.connectors import Conv1x1
    from segdistill.paddleseg_yaml import build_model, experiment_dict

    def kinds():
        dic = experiment_dict(STUDENT, pretrained_backbone=False)
        layers = list(build_model(dic, STUDENT).sublayers()) + list(Conv1x1(4, 8, bn=True).sublayers())
        return {type(layer).__name__ for layer in layers if "BatchNorm" in type(layer).__name__}

    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "2")
    assert kinds() == {"BatchNorm2D"}  # CPU ranks
    monkeypatch.setattr(paddle, "get_device", lambda: "gpu:0")
    assert kinds() == {"SyncBatchNorm"}
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "1")
    assert kinds() == {"BatchNorm2D"}


def test_deterministic_mode_sets_the_cudnn_flag_on_a_cuda_build_only(monkeypatch):
    import segdistill.cli

    args = segdistill.cli.parser().parse_args(["train", "--config", "c.yml", "--save_dir", "s", "--deterministic"])
    assert segdistill.cli._spec(args, config="c.yml").deterministic is True
    flags = []
    monkeypatch.setattr(paddle, "set_flags", lambda f: flags.append(f))
    monkeypatch.setattr(paddle, "is_compiled_with_cuda", lambda: False)
    assert "nothing to set" in precision.set_deterministic() and flags == []
    monkeypatch.setattr(paddle, "is_compiled_with_cuda", lambda: True)
    assert "FLAGS_cudnn_deterministic=True" in precision.set_deterministic()
    assert flags == [{"FLAGS_cudnn_deterministic": True}]


def _autocast_stack(monkeypatch) -> list:
    """paddle.amp.auto_cast wrapped so the returned list holds the `enable` flags of the autocasts now open."""
    stack, real_auto_cast = [], paddle.amp.auto_cast

    @contextlib.contextmanager
    def auto_cast(enable=True, **kw):
        stack.append(enable)
        try:
            with real_auto_cast(enable=enable, **kw):
                yield
        finally:
            stack.pop()

    monkeypatch.setattr(paddle.amp, "auto_cast", auto_cast)
    return stack
