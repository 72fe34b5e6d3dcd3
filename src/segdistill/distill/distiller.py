"""The Distiller: a teacher-feature source, a student, a recorder on the student, connectors, and the terms.

Why not PaddleSlim's `Distill`: it runs the teacher with autograd (its graph is built, then detached) and runs an
extra forward of every model on its first call (measured, see docs/benchmark.md). Here the teacher runs in eval
mode under `paddle.no_grad()`, so it holds no graph and no gradient, and only the student and the connectors
train.

Where the teacher's tensors come from is a *source*: `OnlineTeacher` runs the frozen teacher on the batch (what
PaddleSeg does); `segdistill.distill.cache.CachedTeacher` reads them from the outputs a `teacher-outputs` job
stored for the same keyed data stream, so the distill job never builds the teacher (docs/distillation.md).
"""

from __future__ import annotations

from dataclasses import asdict

from segdistill.paddle_env import paddle

from segdistill.data.fetch import sha256_of
from segdistill.distill.connectors import build_connector
from segdistill.distill.recorder import Recorder, check_names, check_outputs, model_outputs, output_index
from segdistill.distill.teachers import OnlineTeacher, isolated_rng, trained_teacher
from segdistill.distill.terms import DistillTerm, resolve_terms
from segdistill.errors import SegDistillError
from segdistill.losses import get_loss
from segdistill.precision import to_fp32

_KEY_WORD = 0x6D67  # first word of the keys handed to keyed losses: their own stream, apart from the data's


class Distiller(paddle.nn.Layer):
    """Holds the connectors as its trainable parameters; the student and teacher are referenced, not owned.

    Call `setup(images)` once with a real batch before building the optimizer: it checks every shape and
    creates the connectors (their input channels are only known from a forward pass). `build_distiller` does
    all of that from a teacher config.
    """

    def __init__(
        self, student, teacher, terms: list[DistillTerm], ignore_index: int = 255, student_forward=None, stream=None
    ):
        """`teacher`: a teacher model (run online) or a teacher-feature source (`OnlineTeacher`, `CachedTeacher`);
        `stream`: the run's KeyedStream (keys for losses that draw random numbers, e.g. MGD's mask)."""
        super().__init__()
        if not terms:
            raise SegDistillError("distillation needs at least one term")
        check_names(student, [t.student for t in terms], "student")
        if isinstance(teacher, paddle.nn.Layer):
            teacher = OnlineTeacher(teacher, [t.teacher for t in terms])
        else:
            teacher.check_names([t.teacher for t in terms])
        object.__setattr__(self, "_source", teacher)
        self.terms = terms
        self.ignore_index = ignore_index
        self.stream = stream
        # Kept in plain attributes (object.__setattr__) so they are not sublayers: their parameters must not
        # join the distiller's (only connectors train here; the student is optimised with them explicitly).
        object.__setattr__(self, "_student", student)
        # Under data parallelism the student is called through its DataParallel wrapper (gradient sync) while
        # hooks stay on the inner layers.
        object.__setattr__(self, "_student_forward", student_forward or student)
        self.connectors = paddle.nn.LayerDict()
        self.loss_fns = [get_loss(t.loss) for t in terms]  # one per term, in term order
        self._s_rec = Recorder(student, [t.student for t in terms])

    @property
    def student(self):
        return self._student

    @property
    def source(self):
        """Where the teacher's tensors come from (`OnlineTeacher` or `CachedTeacher`)."""
        return self._source

    @property
    def teacher(self):
        """The teacher model when it runs online; None with cached teacher outputs (no teacher is built)."""
        return None if self._source.cached else self._source.model

    def train(self, mode: bool = True):
        """Student and connectors train; the teacher stays in eval whatever the caller asks (as mmrazor's
        distillers do): its batch-norm statistics are the trained teacher's and must never move."""
        if self.teacher is not None:
            self.teacher.eval()
        super().train(mode)
        self._student.train(mode)
        return self

    def eval(self):
        super().eval()
        self._student.eval()
        return self

    # -- set-up ---------------------------------------------------------------------------------------------
    def setup(self, images) -> None:
        """Shapes on the first batch: build connectors where channels differ by request, else explain the fix."""
        s_feats = self._probe_student(images)
        with paddle.no_grad():
            t_shapes = self._source.probe(images)
        for i, term in enumerate(self.terms):
            s_shape, t_shape = list(s_feats[term.student].shape), list(t_shapes[term.teacher])
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
            fn = self.loss_fns[i]
            if fn.module_factory:  # the loss's own trainable part (MGD's generator), fed the connector's output
                cin = t_shape[1] if term.connector else s_shape[1]
                self.connectors[f"module{i}"] = build_connector(fn.module_factory, cin, t_shape[1], term.name)
            elif not term.connector and s_shape[1] != t_shape[1] and not fn.any_channels:
                raise SegDistillError(
                    f"distillation term '{term.name}': channels differ, student '{term.student}' {s_shape} vs "
                    f"teacher '{term.teacher}' {t_shape}; add `connector: conv1x1` to the term to learn a "
                    f"{s_shape[1]}->{t_shape[1]} projection"
                )

    def _probe_student(self, images) -> dict:
        """The student's tensors on a real batch, leaving its state as it was. In eval mode, unless a term takes
        an auxiliary output (`logits.N`, produced in train mode only): then in train mode, with the BN statistics
        restored and the random generators isolated (dropout) afterwards."""
        was_training = self._student.training
        aux = any((output_index(t.student) or 0) > 0 for t in self.terms)
        saved = {k: v.clone() for k, v in self._student.state_dict().items()} if aux else None
        self._student.train(aux)  # train(False) is eval
        with paddle.no_grad(), isolated_rng():
            s_feats, _ = self._student_features(images)
        if saved is not None:
            self._student.set_state_dict(saved)
        self._student.train(was_training)
        check_outputs(s_feats, [t.student for t in self.terms], "student", "train" if aux else "eval")
        return s_feats

    # -- forward --------------------------------------------------------------------------------------------
    def _student_features(self, images):
        with self._s_rec as feats:
            logits = self._student_forward(images)
        outputs = model_outputs(logits)
        feats.update(outputs)
        check_outputs(outputs, [t.student for t in self.terms], "student", "train" if self.training else "eval")
        return feats, logits

    def _context(self, i: int, fn, it) -> dict:
        """What term i's loss takes besides its options: its trainable module, and for a loss that draws random
        numbers one key per image from the keyed stream, the iteration, the image's global position and i."""
        ctx = {}
        if fn.module_factory:
            ctx["module"] = self.connectors[f"module{i}"]
        if fn.keyed:
            if it is None or self.stream is None:
                raise SegDistillError(
                    f"distillation term '{self.terms[i].name}': loss '{self.terms[i].loss}' "
                    "draws random numbers per image; it needs the keyed stream and the iteration"
                )
            ctx["keys"] = [[_KEY_WORD, int(self.stream.seed), int(k[0]), int(k[1]), i] for k in self.stream.keys(it)]
        return ctx

    def forward(self, images, label=None, teacher_feats=None, it=None):
        """Returns (student logits list, {term name: weighted loss}).

        `teacher_feats` ({name: tensor} for this batch) comes from the caller with a cached source (it knows the
        iteration); an online source computes them here, on the batch. `it`: the iteration (keyed losses)."""
        t_feats = teacher_feats if teacher_feats is not None else self._source.features(images)
        s_feats, logits = self._student_features(images)
        losses = {}
        for i, (term, fn) in enumerate(zip(self.terms, self.loss_fns)):
            s = s_feats[term.student]
            if str(i) in self.connectors:
                s = self.connectors[str(i)](s)
            t = t_feats[term.teacher]
            # In fp32 whatever autocast produced (segdistill.precision).
            value = fn(
                to_fp32(s),
                to_fp32(t),
                label=label,
                ignore_index=self.ignore_index,
                **term.options,
                **self._context(i, fn, it),
            )
            losses[term.name] = term.weight * value
        return logits, losses


def build_distiller(
    student,
    student_config,
    student_dic: dict,
    teacher_config,
    terms=None,
    *,
    data_root=None,
    pretrained_cache=None,
    probe_images=None,
    student_forward=None,
    log=None,
    teacher_outputs=None,
    stream=None,
    iterations=None,
    data_sha256=None,
) -> Distiller:
    """A ready Distiller from a patched teacher config: what a trainer needs to distil into `student`.

    - the teacher config's `model.pretrained` must point at the trained teacher (`segdistill patch-teacher`);
      its weights load strictly and cover the backbone;
    - teacher and student must predict the same number of classes;
    - `terms` (raw mappings) or, when None, the student YAML's `distill_loss` (see `resolve_terms`);
    - online (`teacher_outputs` None): the teacher is built (its construction isolated from the global random
      generators, see `isolated_rng`) and frozen; cached (`teacher_outputs`: a `teacher-outputs` folder): no
      teacher is built; the folder's manifest must match this run's `stream` (the trainer's KeyedStream) and
      `iterations`, `data_sha256` (`segdistill.data.digest.data_digest`), the teacher weights'
      SHA-256 and the terms' teacher names, else the field that differs is named;
    - `probe_images` (a real batch) checks every shape and builds the connectors, so the returned distiller's
      parameters are final (build the optimizer after this call).

    `student_dic` is the student's experiment dict (class count, ignore index, `distill_loss`), `data_root`
    and `pretrained_cache` apply to the teacher config as to the student's, `student_forward` is the callable
    that runs the student (its DataParallel wrapper under several ranks), `log` gets one line naming the terms.
    """
    from segdistill.distill import cache
    from segdistill.paddleseg_yaml import build_model, ignore_index

    tdic, weights = trained_teacher(teacher_config, student_config, student_dic, data_root, pretrained_cache)
    parsed = resolve_terms(terms, student_config, student_dic)
    weights_sha256 = sha256_of(weights)
    if teacher_outputs:
        expected = {
            "stream": cache.stream_key(stream, iterations),
            "data_sha256": data_sha256,
            "weights": str(weights),
            "weights_sha256": weights_sha256,
        }
        teacher = cache.CachedTeacher(teacher_outputs, expected, rank=stream.rank)
    else:
        with isolated_rng():
            teacher = build_model(tdic, teacher_config)
    distiller = Distiller(
        student, teacher, parsed, ignore_index(student_dic), student_forward=student_forward, stream=stream
    )
    # What of the teacher side decides the trained student (a checkpoint of another identity is not resumed).
    distiller.identity = {
        "terms": [asdict(t) for t in parsed],
        "teacher_model": {k: v for k, v in tdic["model"].items() if k != "pretrained"},  # weights: by digest
        "teacher_weights_sha256": weights_sha256,
        "teacher_outputs": {"manifest_sha256": teacher.manifest_sha256} if teacher_outputs else "online",
    }
    if probe_images is not None:
        distiller.setup(probe_images)
    if log is not None:
        log(
            "distillation terms: "
            + "; ".join(
                f"{t.name} (loss {t.loss}, weight {t.weight}"
                + "".join(f", {k} {v}" for k, v in t.options.items())
                + (f", connector {t.connector})" if t.connector else ")")
                for t in parsed
            )
        )
        if teacher_outputs:
            log(
                f"teacher outputs: cached in {teacher_outputs} ({teacher.manifest['dtype']}, manifest sha256 "
                f"{teacher.manifest_sha256}); no teacher is built"
            )
    return distiller
