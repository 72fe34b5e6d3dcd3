"""The Distiller: a frozen teacher, a student, recorders on both, connectors, and the weighted terms.

Why not PaddleSlim's `Distill`: it runs the teacher with autograd (its graph is built, then detached) and runs an
extra forward of every model on its first call (measured, see docs/benchmark.md). Here the teacher runs in eval
mode under `paddle.no_grad()`, so it holds no graph and no gradient, and only the student and the connectors
train.
"""

from __future__ import annotations

from segdistill.distill.connectors import build_connector
from segdistill.distill.recorder import LOGITS, Recorder, check_names
from segdistill.distill.terms import DistillTerm
from segdistill.errors import SegDistillError
from segdistill.losses import get_loss
from segdistill.paddle_env import paddle
from segdistill.precision import to_fp32


def _first(out):
    return out[0] if isinstance(out, (list, tuple)) else out


class Distiller(paddle.nn.Layer):
    """Holds the connectors as its trainable parameters; the student and teacher are referenced, not owned.

    Call `setup(images)` once with a real batch before building the optimizer: it checks every shape and
    creates the connectors (their input channels are only known from a forward pass).
    """

    def __init__(self, student, teacher, terms: list[DistillTerm], ignore_index: int = 255, student_forward=None):
        super().__init__()
        if not terms:
            raise SegDistillError("distillation needs at least one term")
        check_names(student, [t.student for t in terms], "student")
        check_names(teacher, [t.teacher for t in terms], "teacher")
        self.terms = terms
        self.ignore_index = ignore_index
        # Kept in plain attributes (object.__setattr__) so they are not sublayers: their parameters must not
        # join the distiller's (only connectors train here; the student is optimised with them explicitly).
        object.__setattr__(self, "_student", student)
        object.__setattr__(self, "_teacher", teacher)
        # Under data parallelism the student is called through its DataParallel wrapper (gradient sync) while
        # hooks stay on the inner layers.
        object.__setattr__(self, "_student_forward", student_forward or student)
        self.connectors = paddle.nn.LayerDict()
        self._losses = [get_loss(t.loss) for t in terms]
        self._s_rec = Recorder(student, [t.student for t in terms])
        self._t_rec = Recorder(teacher, [t.teacher for t in terms])
        freeze(teacher)

    # -- set-up ---------------------------------------------------------------------------------------------
    def setup(self, images) -> None:
        """Shapes on the first batch: build connectors where channels differ by request, else explain the fix."""
        was_training = self._student.training
        self._student.eval()  # a probe must not move the student's BN statistics
        with paddle.no_grad():
            s_feats, _ = self._student_features(images)
            t_feats = self._teacher_features(images)
        self._s_rec.clear()
        if was_training:
            self._student.train()
        for i, term in enumerate(self.terms):
            s, t = s_feats[term.student], t_feats[term.teacher]
            s_shape, t_shape = list(s.shape), list(t.shape)
            if len(s_shape) != 4 or len(t_shape) != 4:
                raise SegDistillError(
                    f"distillation term '{term.name}': needs 4-D NCHW tensors, got student '{term.student}' "
                    f"{s_shape} and teacher '{term.teacher}' {t_shape}"
                )
            if s_shape[2:] != t_shape[2:]:
                raise SegDistillError(
                    f"distillation term '{term.name}': spatial sizes differ, student '{term.student}' {s_shape} vs "
                    f"teacher '{term.teacher}' {t_shape}; pick layers at the same output stride "
                    f"(see `segdistill layers`)"
                )
            if term.connector:
                self.connectors[str(i)] = build_connector(term.connector, s_shape[1], t_shape[1], term.name)
            elif s_shape[1] != t_shape[1]:
                raise SegDistillError(
                    f"distillation term '{term.name}': channels differ, student '{term.student}' {s_shape} vs "
                    f"teacher '{term.teacher}' {t_shape}; add `connector: conv1x1` to the term to learn a "
                    f"{s_shape[1]}->{t_shape[1]} projection"
                )

    # -- forward --------------------------------------------------------------------------------------------
    def _student_features(self, images):
        self._s_rec.clear()
        logits = self._student_forward(images)
        feats = dict(self._s_rec.outputs)
        feats[LOGITS] = _first(logits)
        return feats, logits

    def _teacher_features(self, images):
        self._t_rec.clear()
        self._teacher.eval()
        with paddle.no_grad():
            logits = self._teacher(images)
        feats = dict(self._t_rec.outputs)
        feats[LOGITS] = _first(logits)
        self._t_rec.clear()
        return feats

    def forward(self, images, label=None):
        """Returns (student logits list, {term name: weighted loss})."""
        t_feats = self._teacher_features(images)
        s_feats, logits = self._student_features(images)
        self._s_rec.clear()
        losses = {}
        for i, (term, fn) in enumerate(zip(self.terms, self._losses)):
            s = s_feats[term.student]
            if str(i) in self.connectors:
                s = self.connectors[str(i)](s)
            t = t_feats[term.teacher]
            # In fp32 whatever autocast produced (segdistill.precision).
            value = fn(to_fp32(s), to_fp32(t), label=label, ignore_index=self.ignore_index,
                       temperature=term.temperature)
            losses[term.name] = term.weight * value
        return logits, losses

    def remove_hooks(self) -> None:
        self._s_rec.remove()
        self._t_rec.remove()


def freeze(model) -> None:
    """Teacher: eval mode (fixed BN statistics, no dropout) and no parameter takes a gradient."""
    model.eval()
    for p in model.parameters():
        p.stop_gradient = True
