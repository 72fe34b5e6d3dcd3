"""The online teacher: a frozen model run on each batch, its named sublayers recorded.

A teacher-feature source for the Distiller (the other one, `segdistill.distill.cache.CachedTeacher`, reads what a
`teacher-outputs` job stored); both it and the cache writer read the patched teacher config, check it against
the student and freeze the teacher the same way, so this module is what they share.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

from segdistill.paddle_env import paddle

import numpy as np

from segdistill.distill.recorder import Recorder, check_names, check_outputs, model_outputs, output_index
from segdistill.errors import SegDistillError
from segdistill.precision import TEACHER_PRECISION, teacher_region


def teacher_weights(teacher_dic: dict, teacher_config) -> Path:
    weights = teacher_dic["model"].get("pretrained")
    if not weights:
        raise SegDistillError(
            f"{teacher_config}: model.pretrained is not set; point it at the trained teacher "
            f"(`segdistill patch-teacher`) -- distilling from an untrained teacher is never what you want"
        )
    if not Path(weights).is_file():
        raise SegDistillError(f"{teacher_config}: model.pretrained: weights file not found: {weights}")
    return Path(weights)


def trained_teacher(teacher_config, student_config, student_dic: dict, data_root=None, pretrained_cache=None):
    """(experiment dict, weights file) of a patched teacher config, checked: model.pretrained names the trained
    weights (they cover the backbone, so no backbone is fetched) and the teacher predicts the student's classes."""
    from segdistill.paddleseg_yaml import experiment_dict, num_classes

    tdic = experiment_dict(
        teacher_config, data_root=data_root, pretrained_cache=pretrained_cache, pretrained_backbone=False
    )
    weights = teacher_weights(tdic, teacher_config)
    t_classes, s_classes = num_classes(tdic), num_classes(student_dic)
    if t_classes != s_classes:
        raise SegDistillError(
            f"teacher {teacher_config} has num_classes {t_classes} but student {student_config} has {s_classes}"
        )
    return tdic, weights


class OnlineTeacher:
    """The frozen teacher run on each batch, its named sublayers recorded: {name: tensor} per call."""

    cached = False

    def __init__(self, model, names):
        check_names(model, names, "teacher")
        self.model = model
        self._outputs = [n for n in dict.fromkeys(names) if output_index(n) is not None]
        self._rec = Recorder(model, names)
        freeze(model)

    def features(self, images, it=None) -> dict:
        feats, logits = run_teacher(self.model, self._rec, images)
        outputs = model_outputs(logits)
        check_outputs(outputs, self._outputs, "teacher", "eval")  # the probe's call fails before training
        feats.update({n: outputs[n] for n in self._outputs})
        return feats

    def probe(self, images) -> dict:
        """{name: shape} of this rank's batch, from one forward on a real batch."""
        return {k: list(v.shape) for k, v in self.features(images).items()}

    def record(self) -> dict:
        """How the teacher's tensors came, as the run's summary records it (the report's provenance)."""
        return {"mode": "online", "teacher_precision": TEACHER_PRECISION}


def run_teacher(model, recorder, images):
    """The teacher's forward as both sources run it (online, and the cache writer): no autograd, and outside the
    caller's autocast, at segdistill.precision.TEACHER_PRECISION. Returns (recorded tensors, model output)."""
    with paddle.no_grad(), teacher_region(), recorder as feats:
        logits = model(images)
    return feats, logits


@contextlib.contextmanager
def isolated_rng():
    """Generators as they were before the block. Building a model draws its initial weights from the global
    generators; a teacher whose weights are then loaded must not shift what the student side draws afterwards
    (connectors), so that a run with cached teacher outputs (which builds no teacher) draws exactly what a run
    with the online teacher draws."""
    py, np_state = random.getstate(), np.random.get_state()
    pd_state = paddle.get_rng_state()
    cuda = paddle.get_cuda_rng_state() if paddle.is_compiled_with_cuda() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        paddle.set_rng_state(pd_state)
        if cuda is not None:
            paddle.set_cuda_rng_state(cuda)


def freeze(model) -> None:
    """Teacher: eval mode (fixed BN statistics, no dropout) and no parameter takes a gradient."""
    model.eval()
    for p in model.parameters():
        p.stop_gradient = True
