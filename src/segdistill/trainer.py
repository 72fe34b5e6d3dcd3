"""One trainer for every arm: teacher, student baseline and distilled student.

Iteration-based like PaddleSeg: evaluate every `save_interval`, keep `best_model`, checkpoints (model, optimizer,
scheduler, iteration, RNG state) pruned to `keep_checkpoint_max`, a log line every `log_iters`. It resumes from
the newest valid checkpoint in its own `save_dir` when that run stopped before its last iteration, so a killed job
loses at most `save_interval` iterations and ends with the same numbers as an uninterrupted run (CPU, same seed);
a finished run is never resumed (a rerun trains again). The data come from a keyed stream
(segdistill.data.stream): the batch at iteration `it` is a pure function of (data, transforms, data seed, it), so
resuming needs no saved loader state and the number of loader workers changes nothing. `batch_size` is per rank,
as in PaddleSeg: with several ranks (paddle.distributed.launch) the global batch is batch_size x ranks, every rank
takes its slice of it, and rank 0 alone writes.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from segdistill.paddle_env import paddle

import numpy as np

from segdistill import checkpoint, threads
from segdistill.data.digest import data_digest
from segdistill.data.stream import training_stream
from segdistill.distill import build_distiller
from segdistill.doctor import check_devices
from segdistill.errors import SegDistillError
from segdistill.evaluate import KnownSplit, evaluate, metrics_record, reduce_matrix
from segdistill.finite import LossGuard, NonFinite, NonFiniteLogits, state_problem
from segdistill.losses.task import task_losses
from segdistill.paddleseg_yaml import (
    build,
    build_model,
    experiment_dict,
    ignore_index,
    load_weights,
    num_classes,
    open_dataset,
)
from segdistill.parallel import StudentSide, all_mean, any_rank, check_ranks_agree, gather, join_ranks
from segdistill.precision import Amp, set_deterministic, to_fp32
from segdistill.protocol import of_experiment as protocol_of
from segdistill.run_folder import RunFolder, run_key
from segdistill.specs import TrainSpec, identity
from segdistill.timing import Clock


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


# The spec's fields that override the experiment YAML (segdistill.paddleseg_yaml.experiment_dict).
_OVERRIDES = (
    "data_root",
    "iters",
    "batch_size",
    "learning_rate",
    "grad_clip_norm",
    "pretrained_cache",
    "pretrained_backbone",
)


class Trainer:
    def __init__(self, spec: TrainSpec, log=None):
        self.spec = spec
        self.rank, self.world = join_ranks()
        self.is_main = self.rank == 0
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._log(check_devices(self.world))  # fails at once when leased GPUs cannot be used
        self.amp = Amp(spec.precision, spec.amp_level, self.world)
        if spec.deterministic:
            self._log(set_deterministic())
        self.dic = experiment_dict(spec.config, **{k: getattr(spec, k) for k in _OVERRIDES})
        self.iters = self.dic["iters"]
        self.batch_size = self.dic["batch_size"]
        self.num_classes = num_classes(self.dic)
        self.ignore_index = ignore_index(self.dic)
        # The YAML's test_config (or the study's), refused by name before anything trains.
        self.protocol = protocol_of(self.dic, spec.config, spec.evaluate.test_config)
        self.class_names = _class_names(spec, self.num_classes)
        seed_everything(spec.seed)
        self.builder = build(self.dic, spec.config)
        self.model = build_model(self.dic, spec.config)
        self.task_loss = task_losses(self.dic["loss"], spec.config, self.ignore_index)  # PaddleSeg's `loss:`
        self.stream = training_stream(spec, self.rank, self.world)
        self.train_ds = self.stream.dataset
        self.val_ds = open_dataset(self.builder, spec.config, "val_dataset") if spec.do_eval else None
        # What decides the training images (the cache checks it; the run key includes it).
        self.train_data_sha256 = data_digest(self.dic["train_dataset"], self.train_ds, spec.data_record)
        self.distiller = self._build_distiller()
        # One Layer holding the student and the connectors: one DataParallel all-reduces the gradients of both.
        # It is the one object a step asks for (logits, losses), with or without a teacher.
        self.student_side = StudentSide(self.model, self.distiller)
        # What the optimizer trains and a checkpoint holds: the student plus any connectors.
        self.trainable = paddle.nn.LayerList([self.model] + ([self.distiller] if self.distiller else []))
        self.lr = self.builder.lr_scheduler
        self.optimizer = _optimizer(self.builder, self.trainable, self.lr)
        self.vdl = None
        self.clock = Clock()
        self.threads = threads.in_effect()
        val_files, distill = getattr(self.val_ds, "file_list", None), getattr(self.distiller, "identity", None)
        self.run_key = run_key(spec, self.dic, self.train_data_sha256, val_files, self.world, distill, self.threads)
        self.folder = RunFolder(spec.save_dir, self.run_key, self.rank, self._log)
        self._prepare()

    def _prepare(self) -> None:
        """PaddleSeg's order (core/train.py; Paddle's amp.decorate docstring): resume into the fp32 model and
        optimizer (checkpoints are fp32, and set_value into O2's fp16/bf16 parameters fails), then decorate
        (O2 casts the parameters in place), then DataParallel (its reducer fixes the gradient groups' dtypes when
        built). The teacher is not decorated: it runs in fp32 (segdistill.distill.teachers.run_teacher)."""
        self.resumed = self._resume()
        self.amp.decorate([self.trainable], self.optimizer)
        self.net = paddle.DataParallel(self.student_side) if self.world > 1 else self.student_side

    # -- distillation ---------------------------------------------------------------------------------------
    def _build_distiller(self):
        spec = self.spec
        if not spec.teacher_config:
            return None
        # The probe batch is the first training batch (real data, real shapes).
        images, _ = self.stream.batch(1)
        cached = {}
        if spec.teacher_outputs:
            cached = {
                "teacher_outputs": spec.teacher_outputs,
                "iterations": self.iters,
                "data_sha256": self.train_data_sha256,
            }
        terms = spec.distill_terms
        if spec.distill:
            from segdistill.distill import read_terms_file

            terms = read_terms_file(spec.distill)
        return build_distiller(
            self.model,
            spec.config,
            self.dic,
            spec.teacher_config,
            terms,
            data_root=spec.data_root,
            pretrained_cache=spec.pretrained_cache,
            probe_images=paddle.to_tensor(images),
            log=self._log,
            stream=self.stream,
            **cached,
        )

    # -- the loop -------------------------------------------------------------------------------------------
    def _resume(self) -> tuple[int, dict]:
        path, meta = self.folder.to_resume(self.spec.resume_model, self.iters)
        if path is None:
            return 0, {"best_miou": -1.0, "best_iter": 0, "train_log": [], "eval_log": []}
        checkpoint.load(path, self.trainable, self.optimizer, rank=self.rank, log=self._log)
        self.lr.set_state_dict(meta["lr_scheduler"])
        self.amp.set_state_dict(meta.get("amp", {}))
        self._log(f"resumed from {path} (iteration {meta['iteration']})")
        return meta["iteration"], meta

    def step(self, images, labels, it=None):
        """One optimisation step on the batch of iteration `it`: (total loss, {part name: loss}); parts are the
        task losses (`ce`, `ce_1`, ... by loss type and output, segdistill.losses.task) and the terms.

        The student's forward runs under the autocast, an online teacher's in fp32 outside it (run_teacher);
        the losses in fp32.
        With cached teacher outputs the teacher's tensors of iteration `it` (this rank's slice) are read here and
        handed to the forward as arguments (so DataParallel over StudentSide sees them as inputs)."""
        teacher_feats = None
        if self.distiller is not None and self.distiller.source.cached:
            if it is None:
                raise SegDistillError("a distill step with cached teacher outputs needs its iteration")
            teacher_feats = self.distiller.source.features(images, it)
        with self.amp.autocast():
            logits, distill = self.net(images, labels, teacher_feats, it)
        logits = logits if isinstance(logits, (list, tuple)) else [logits]
        parts = self.task_loss([to_fp32(x) for x in logits], labels)
        parts.update(distill)
        loss = paddle.add_n(list(parts.values())) if len(parts) > 1 else next(iter(parts.values()))
        self.amp.minimize(loss, self.optimizer)
        self.lr.step()
        return loss, parts

    def _eval(self):
        # Under the training autocast, as PaddleSeg's core/val.py: with O2 the weights are fp16/bf16.
        cm = reduce_matrix(
            evaluate(
                self.model,
                self.val_ds,
                self.num_classes,
                self.ignore_index,
                (self.rank, self.world),
                autocast=self.amp.autocast,
                batch_size=self.spec.evaluate.batch_size,
                protocol=self.protocol,
            )
        )
        return metrics_record(cm, self.class_names), cm

    def run(self) -> dict:
        """Train from the resumed iteration to `iters`: a log row every `log_iters`; every `save_interval`
        evaluate (keep the best model) and write a checkpoint; then the run's files."""
        spec = self.spec
        start, meta = self.resumed
        progress = _Progress(meta["best_miou"], meta["best_iter"], list(meta["train_log"]), list(meta["eval_log"]))
        self.best_val = None  # val matrix of the current best model when this process evaluated it (not resumed)
        if self.is_main:
            self.folder.dir.mkdir(parents=True, exist_ok=True)
            if spec.use_vdl:
                from visualdl import LogWriter

                self.vdl = LogWriter(str(self.folder.dir / "vdl"))
        if start >= self.iters:
            self._log(f"already trained to iteration {start}")
        self.student_side.train()
        batches = self.stream.loader(start + 1, self.iters, spec.num_workers)
        # The loader's batches are made inside the loop, so loading counts as training steps.
        t_loop = time.perf_counter()
        guard = LossGuard(self.world)  # read at log rows, evaluations and checkpoints (segdistill.finite)
        for it, (images, labels) in zip(range(start + 1, self.iters + 1), batches):
            loss, parts = self.step(images, labels, it)
            guard.update(it, loss, parts)
            progress.done_since += 1
            log_now = it % spec.log_iters == 0 or it == self.iters
            save_now = it % spec.save_interval == 0 or it == self.iters
            if log_now or save_now:
                self._stop_if_nonfinite(guard.first_nonfinite())
            if log_now:
                self._log_train(it, float(loss), parts, progress)
            if save_now:
                self._stop_if_nonfinite(_state_problem(self.trainable, self.world, it))
                with self.clock("evaluate"):
                    self._evaluate_and_keep_best(it, progress)
                if self.world > 1:  # what a checkpoint holds: student + connectors
                    check_ranks_agree(self.trainable, it, self.rank, self.world, self._log)
                rng_states = gather(checkpoint.rng_state(), self.world)
                # A finished run is never resumed (_resume), so its last checkpoint is for the command line's
                # --resume_model only; the workflow's jobs do not write it.
                if self.is_main and (it < self.iters or spec.final_checkpoint):
                    with self.clock("checkpoint"):
                        progress.last_checkpoint = self._checkpoint(it, progress, rng_states)
        loop = time.perf_counter() - t_loop
        self.clock.totals["train_steps"] = loop - sum(self.clock.totals.get(k, 0.0) for k in ("evaluate", "checkpoint"))
        summary = self._summary(progress)
        if self.is_main:
            with self.clock("results"):
                self.folder.write_results(progress.train_log, progress.eval_log, summary, self.iters)
            if spec.evaluate_out:
                self._evaluate_best()
        if self.vdl:
            self.vdl.close()
        self._log(self.clock.line())
        return summary

    def _log_train(self, it: int, loss_value: float, parts: dict, progress: _Progress) -> None:
        """One training log row (averaged over ranks): the log line, train_log, VisualDL."""
        elapsed = time.time() - progress.t0
        ips = progress.done_since * self.batch_size * self.world / max(elapsed, 1e-9)
        eta = (self.iters - it) * elapsed / progress.done_since
        row = {
            "iter": it,
            "loss": all_mean(loss_value, self.world),
            **{k: all_mean(float(v), self.world) for k, v in parts.items()},
            "lr": float(self.optimizer.get_lr()),
        }
        progress.train_log.append(row)
        parts_txt = " ".join(f"{k}={row[k]:.4f}" for k in parts)
        self._log(
            f"[train] iter {it}/{self.iters} loss={row['loss']:.4f} {parts_txt} lr={row['lr']:.6f} "
            f"ips={ips:.2f} img/s eta={_fmt_eta(eta)}"
        )
        if self.vdl:
            for k, v in row.items():
                if k != "iter":
                    self.vdl.add_scalar(f"train/{k}", v, it)
        progress.t0, progress.done_since = time.time(), 0

    def _evaluate_and_keep_best(self, it: int, progress: _Progress) -> None:
        """Evaluate on val and keep the model if its mIoU is the best so far (without evaluation: the latest)."""
        if not self.spec.do_eval or not _val_chooses_or_reported(self.spec, self.iters):
            progress.best_iter = it
            self.folder.save_best(self.model)
            return
        try:
            rec, cm = self._eval()
        except NonFiniteLogits as exc:
            self._stop_if_nonfinite((it, f"logits of val image {exc.index}"))
        progress.eval_log.append({"iter": it, **{k: rec[k] for k in ("miou", "acc", "kappa", "dice", "num_pixels")}})
        self._log(
            f"[eval] iter {it} mIoU={rec['miou']:.4f} acc={rec['acc']:.4f} "
            f"kappa={rec['kappa']:.4f} dice={rec['dice']:.4f}"
        )
        if self.vdl:
            self.vdl.add_scalar("val/miou", rec["miou"], it)
        if rec["miou"] > progress.best_miou:
            progress.best_miou, progress.best_iter = rec["miou"], it
            self.folder.save_best(self.model)
            self.best_val = cm

    def _stop_if_nonfinite(self, found: tuple[int, str] | None) -> None:
        """Stop the run with one message when `found` ((iteration, what) went non-finite): no best model is left
        (the job's output, and the copy beside the checkpoints), so nothing downstream takes it for a result.
        The checkpoints stay: each was checked before it was written."""
        if found is None:
            return
        it, what = found
        self.folder.drop_best()
        raise NonFinite(
            f"run {self.spec.run_id or self.folder.dir}: {what} went non-finite at iteration {it}; the run is stopped "
            f"and keeps no best model (last good checkpoint: {self.folder.last_good() or 'none'}). Lower the "
            f"learning rate or check the data ({self.spec.config})."
        )

    def _evaluate_best(self) -> None:
        """best_model/ evaluated as `segdistill evaluate` does (the weights in an fp32 model, eval mode), in this
        process: the record is the evaluate job's, without that job's start-up. In one fp32 process the trained
        model itself takes the best weights; otherwise (mixed precision casts it, DataParallel wraps it) a model
        is built from the YAML, as the evaluate command builds it."""
        from segdistill.evaluate import evaluate_run

        model, known = None, None
        if self.spec.precision == "fp32" and self.world == 1:
            load_weights(self.model, self.folder.best_store, source=f"best model of {self.folder.dir}")
            model = self.model
            # The best model's val matrix, when this process computed it: the same model, data and protocol
            # give the same matrix, so the record takes it instead of a second pass over val.
            if self.best_val is not None:
                known = {
                    "val": KnownSplit(getattr(self.val_ds, "file_list", None), self.protocol.record(), self.best_val)
                }
        evaluate_run(_best_model_spec(self.spec, self.folder.best_model), clock=self.clock, model=model, known=known)

    def _checkpoint(self, it: int, progress: _Progress, rng_states: list) -> Path:
        """Rank 0 writes the checkpoint of iteration `it` (pruned to keep_checkpoint_max)."""
        state = {**progress.kept(), "lr_scheduler": self.lr.state_dict(), "amp": self.amp.state_dict()}
        return self.folder.save_checkpoint(
            it, self.trainable, self.optimizer, state, self.spec.keep_checkpoint_max, rng_states
        )

    def _summary(self, progress: _Progress) -> dict:
        """The run's settings (its config and every identity field of its spec, at its default too) and results."""
        last = progress.last_checkpoint
        return {
            "config": self.spec.config,
            **identity(self.spec, every=True),
            "iters": self.iters,
            "batch_size": self.batch_size,
            "global_batch_size": self.batch_size * self.world,
            "best_miou": progress.best_miou,
            "best_iter": progress.best_iter,
            "world_size": self.world,
            "threads": self.threads,
            "distill_terms": [asdict(t) for t in self.distiller.terms] if self.distiller else None,
            "teacher_outputs": self.distiller.source.record() if self.distiller else None,
            "last_checkpoint": str(last) if last else None,
        }


def _val_chooses_or_reported(spec: TrainSpec, iters: int) -> bool:
    """Whether evaluating val in training does anything: it chooses among several evaluations, or its matrix is
    the run's val record. A run evaluated once, at its end, keeps that model whatever val says, so a study that
    does not report val (`evaluate.splits` without it) skips the pass. The default study reports val (its export
    chooses on it), so it does not take this path (docs/study-design.md)."""
    return spec.save_interval < iters or "val" in spec.evaluate.splits


def _state_problem(trainable, world: int, it: int) -> tuple[int, str] | None:
    """(it, what) when a parameter or buffer of the student or a connector (`trainable`) is not finite, else None."""
    problem = state_problem(list(trainable))
    # BatchNorm statistics are per rank: every rank stops, or none.
    if any_rank(problem is not None, world) and problem is None:
        problem = "a parameter or buffer of another rank"
    return (it, problem) if problem else None


@dataclass
class _Progress:
    """What the loop carries between iterations (and a checkpoint keeps): the best model so far, the logs."""

    best_miou: float
    best_iter: int
    train_log: list
    eval_log: list
    last_checkpoint: Path | None = None
    t0: float = field(default_factory=time.time)  # start of the current log window, for img/s and the ETA
    done_since: int = 0

    def kept(self) -> dict:
        """What a checkpoint keeps of it."""
        return {
            "best_miou": self.best_miou,
            "best_iter": self.best_iter,
            "train_log": self.train_log,
            "eval_log": self.eval_log,
        }


def _best_model_spec(spec: TrainSpec, best_model: Path):
    """The evaluate job's spec of a run's best model (its `evaluate` block, its record `evaluate_out`)."""
    from segdistill.specs import EvaluateSpec

    return EvaluateSpec(
        **asdict(spec.evaluate),
        config=spec.config,
        model=str(best_model),
        data_root=spec.data_root,
        class_names=spec.class_names,
        run=spec.run_id,
        out=spec.evaluate_out,
    )


def _class_names(spec: TrainSpec, num_classes: int) -> list[str]:
    names = spec.class_names or [f"class_{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise SegDistillError(f"{len(names)} class names given but {spec.config} has num_classes {num_classes}")
    return names


def _optimizer(builder, trainable, lr):
    """The YAML's optimizer over the student and any connectors."""
    cfg = builder.config.optimizer_cfg
    # PaddleSeg maps SGD+momentum to Momentum; its factory takes (model, lr) and we pass student+connectors.
    if cfg.get("type") in ("SGD", "sgd") and "momentum" in cfg:
        cfg["type"] = "Momentum"
    return builder.build_component(cfg)(trainable, lr)


def _fmt_eta(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def train(spec: TrainSpec) -> dict:
    return Trainer(spec).run()
