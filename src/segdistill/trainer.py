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

import csv
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from segdistill.paddle_env import paddle

import numpy as np

from segdistill import checkpoint, threads
from segdistill.atomic import replacing, write_json
from segdistill.config import (
    DATA_PATH_KEYS,
    build,
    build_model,
    experiment_dict,
    ignore_index,
    load_weights,
    num_classes,
    open_dataset,
)
from segdistill.data.digest import data_digest
from segdistill.data.stream import KeyedStream
from segdistill.distill import build_distiller
from segdistill.doctor import check_devices
from segdistill.errors import SegDistillError
from segdistill.evaluate import evaluate, metrics_record, reduce_matrix
from segdistill.losses.task import task_losses
from segdistill.parallel import StudentSide, parameter_digest
from segdistill.precision import TEACHER_PRECISION, Amp, set_deterministic, to_fp32
from segdistill.specs import TrainSpec, identity
from segdistill.timing import Clock


class NonFiniteLoss(SegDistillError):
    pass


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


class Trainer:
    def __init__(self, spec: TrainSpec, log=None):
        import paddle.distributed as dist

        self.spec = spec
        self.world = dist.get_world_size()
        self.rank = dist.get_rank()
        if self.world > 1:
            dist.init_parallel_env()
        self.is_main = self.rank == 0
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._log(check_devices(self.world))  # fails at once when leased GPUs cannot be used
        self.amp = Amp(spec.precision, spec.amp_level, self.world)
        if spec.deterministic:
            self._log(set_deterministic())
        self.save_dir = Path(spec.save_dir)
        self.dic = experiment_dict(
            spec.config,
            data_root=spec.data_root,
            iters=spec.iters,
            batch_size=spec.batch_size,
            learning_rate=spec.learning_rate,
            grad_clip_norm=spec.grad_clip_norm,
            pretrained_cache=spec.pretrained_cache,
            pretrained_backbone=spec.pretrained_backbone,
        )
        self.iters = self.dic["iters"]
        self.batch_size = self.dic["batch_size"]
        self.num_classes = num_classes(self.dic)
        self.ignore_index = ignore_index(self.dic)
        self.class_names = spec.class_names or [f"class_{i}" for i in range(self.num_classes)]
        if len(self.class_names) != self.num_classes:
            raise SegDistillError(
                f"{len(self.class_names)} class names given but {spec.config} has num_classes {self.num_classes}"
            )
        seed_everything(spec.seed)
        self.builder = build(self.dic, spec.config)
        self.model = build_model(self.dic, spec.config)
        self.task_loss = task_losses(self.dic["loss"], spec.config, self.ignore_index)  # PaddleSeg's `loss:`
        self.train_ds = open_dataset(self.builder, spec.config)
        self.val_ds = open_dataset(self.builder, spec.config, "val_dataset") if spec.do_eval else None
        self.data_seed = spec.stream_seed
        self.stream = KeyedStream(
            self.train_ds,
            self.batch_size,
            self.data_seed,
            self.rank,
            self.world,
            num_classes=self.num_classes,
            ignore_index=self.ignore_index,
        )
        # What decides the training images (the cache checks it; the run key includes it).
        self.train_data_sha256 = data_digest(self.dic["train_dataset"], self.train_ds, spec.data_record)
        self.distiller = self._build_distiller()
        # One Layer holding the student and the connectors: one DataParallel all-reduces the gradients of both.
        # It is the one object a step asks for (logits, losses), with or without a teacher.
        self.student_side = StudentSide(self.model, self.distiller)
        # What the optimizer trains and a checkpoint holds: the student plus any connectors.
        self.trainable = paddle.nn.LayerList([self.model] + ([self.distiller] if self.distiller else []))
        self.lr = self.builder.lr_scheduler
        opt_cfg = self.builder.config.optimizer_cfg
        # PaddleSeg maps SGD+momentum to Momentum; its factory takes (model, lr) and we pass student+connectors.
        if opt_cfg.get("type") in ("SGD", "sgd") and "momentum" in opt_cfg:
            opt_cfg["type"] = "Momentum"
        self.optimizer = self.builder.build_component(opt_cfg)(self.trainable, self.lr)
        self.vdl = None
        self.clock = Clock()
        self._best_store = self.save_dir / "checkpoints_best" / "model.pdparams"
        # Written when a run has finished, beside the checkpoints (not a workflow output, so a rerun sees it).
        self._finished = self.save_dir / "finished.json"
        self.threads = threads.in_effect()
        self.run_key = self._run_key()
        self._prepare()

    def _prepare(self) -> None:
        """PaddleSeg's order (core/train.py; Paddle's amp.decorate docstring): resume into the fp32 model and
        optimizer (checkpoints are fp32, and set_value into O2's fp16/bf16 parameters fails), then decorate
        (O2 casts the parameters in place), then DataParallel (its reducer fixes the gradient groups' dtypes when
        built). The teacher is not decorated: it runs in fp32 (segdistill.distill.teachers.run_teacher)."""
        self.resumed = self._resume()
        self.amp.decorate([self.trainable], self.optimizer)
        self.net = paddle.DataParallel(self.student_side) if self.world > 1 else self.student_side

    def _run_key(self) -> str:
        return run_key(
            self.spec,
            experiment=self.dic,
            train_data=self.train_data_sha256,
            val_files=getattr(self.val_ds, "file_list", None),
            world=self.world,
            distill=getattr(self.distiller, "identity", None) if self.distiller else None,
            threads=self.threads,
        )

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

    def _teacher_outputs_record(self):
        """How the teacher's tensors came (the report's provenance): online, or cached with the manifest hash."""
        if self.distiller is None:
            return None
        source = self.distiller.source
        if not source.cached:
            return {"mode": "online", "teacher_precision": TEACHER_PRECISION}
        return {
            "mode": "cached",
            "folder": str(source.folder),
            "manifest_sha256": source.manifest_sha256,
            "dtype": source.manifest["dtype"],
            "teacher_precision": TEACHER_PRECISION,
            # A manifest names its job's thread count when it is not 1 (a default study's caches keep their hash).
            "threads": source.manifest.get("threads", 1),
        }

    # -- the loop -------------------------------------------------------------------------------------------
    def _resume(self) -> tuple[int, dict]:
        source = Path(self.spec.resume_model) if self.spec.resume_model else None
        if source is not None:
            meta = checkpoint.verify(source) if source.is_dir() else None
            if meta is None:
                raise SegDistillError(f"--resume_model {source}: not a checkpoint folder")
            path = source
            if meta.get("run_key") != self.run_key:
                self._log(
                    f"note: --resume_model {source} was written by a run with another config, data, seed "
                    f"or teacher; resuming it as asked"
                )
        else:
            path, meta = checkpoint.latest_valid(self.save_dir, self._log)
            if path is not None and meta.get("run_key") != self.run_key:
                self._discard(
                    path, "are of another run (its config, data, seed, teacher or thread count differ from this one's)"
                )
                path, meta = None, None
            elif path is not None and (meta["iteration"] >= self.iters or self._finished.is_file()):
                # Only a run stopped before its last iteration resumes: the job is rerun on purpose (--forcerun,
                # a rerun Snakemake decided on), and resuming would hand back the old model untrained. A run
                # without a last checkpoint (final_checkpoint false) says it finished in `finished.json`.
                self._discard(
                    path,
                    f"are of a run that finished (iteration {self.iters} of {self.iters}); "
                    f"this job was rerun, so it trains again",
                )
                path, meta = None, None
        if path is None:
            if self.is_main:
                self._finished.unlink(missing_ok=True)  # of an earlier run; this one has not finished
            return 0, {"best_miou": -1.0, "best_iter": 0, "train_log": [], "eval_log": []}
        checkpoint.load(path, self.trainable, self.optimizer, rank=self.rank, log=self._log)
        self.lr.set_state_dict(meta["lr_scheduler"])
        self.amp.set_state_dict(meta.get("amp", {}))
        self._log(f"resumed from {path} (iteration {meta['iteration']})")
        return meta["iteration"], meta

    def _discard(self, newest: Path, why: str) -> None:
        """The checkpoints in save_dir are not to be resumed: of another run (Snakemake reruns a job whose config,
        data or teacher changed; killed runs leave checkpoints behind) or of a finished one (the job is rerun).
        Resuming them would return the old run's model. They and the old best-model copy are removed, so pruning
        and a later resume see this run's checkpoints only."""
        self._log(
            f"checkpoints in {self.save_dir} (newest {newest.name}) {why}: not resumed, removed; "
            f"training from iteration 0"
        )
        if not self.is_main:
            return
        for path in checkpoint.list_checkpoints(self.save_dir):
            shutil.rmtree(path, ignore_errors=True)
        self._best_store.unlink(missing_ok=True)
        self._finished.unlink(missing_ok=True)

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

    def _check_ranks_agree(self, it: int) -> None:
        """Every rank must hold the same student and connector parameters (else the gradient sync is broken)."""
        import paddle.distributed as dist

        digest = parameter_digest(self.trainable)  # what a checkpoint holds: student + connectors
        self._log(f"[ranks] iteration {it}: rank {self.rank} parameters sha256 {digest}")
        if self.world == 1:
            return
        mine = paddle.to_tensor([int(digest[i : i + 8], 16) for i in range(0, 32, 8)], dtype="int64")
        gathered = []
        dist.all_gather(gathered, mine)
        differ = [r for r, t in enumerate(gathered) if not np.array_equal(t.numpy(), mine.numpy())]
        if differ:
            raise SegDistillError(
                f"after iteration {it} the parameters of rank(s) {differ} differ from rank {self.rank}'s: "
                f"gradients are not synchronised across ranks"
            )

    def _gather_rng(self) -> list:
        """Every rank's generator state, in rank order (rank 0 writes them all into the checkpoint)."""
        mine = checkpoint.rng_state()
        if self.world == 1:
            return [mine]
        import paddle.distributed as dist

        states = []
        dist.all_gather_object(states, mine)
        return states

    def _all_mean(self, value: float) -> float:
        if self.world == 1:
            return value
        import paddle.distributed as dist

        t = paddle.to_tensor([value], dtype="float64")
        dist.all_reduce(t)
        return float(t.numpy()[0]) / self.world

    def _eval(self):
        # Under the training autocast, as PaddleSeg's core/val.py: with O2 the weights are fp16/bf16.
        cm = evaluate(
            self.model,
            self.val_ds,
            self.num_classes,
            self.ignore_index,
            (self.rank, self.world),
            autocast=self.amp.autocast,
            batch_size=self.spec.evaluate.batch_size,
        )
        return metrics_record(reduce_matrix(cm), self.class_names)

    def run(self) -> dict:
        """Train from the resumed iteration to `iters`: a log row every `log_iters`; every `save_interval`
        evaluate (keep the best model) and write a checkpoint; then the run's files."""
        spec = self.spec
        start, meta = self.resumed
        progress = _Progress(meta["best_miou"], meta["best_iter"], list(meta["train_log"]), list(meta["eval_log"]))
        if self.is_main:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            if spec.use_vdl:
                from visualdl import LogWriter

                self.vdl = LogWriter(str(self.save_dir / "vdl"))
        if start >= self.iters:
            self._log(f"already trained to iteration {start}")
        self.student_side.train()
        batches = self.stream.loader(start + 1, self.iters, spec.num_workers)
        # The loader's batches are made inside the loop, so loading counts as training steps.
        t_loop = time.perf_counter()
        for it, (images, labels) in zip(range(start + 1, self.iters + 1), batches):
            loss, parts = self.step(images, labels, it)
            loss_value = float(loss)
            progress.done_since += 1
            if not math.isfinite(loss_value):
                path, _ = checkpoint.latest_valid(self.save_dir, self._log)
                raise NonFiniteLoss(
                    f"loss is {loss_value} at iteration {it} of {spec.config}; stopped. Last good checkpoint: "
                    f"{path or 'none'}. Lower the learning rate or check the data."
                )
            if it % spec.log_iters == 0 or it == self.iters:
                self._log_train(it, loss_value, parts, progress)
            if it % spec.save_interval == 0 or it == self.iters:
                with self.clock("evaluate"):
                    self._evaluate_and_keep_best(it, progress)
                if self.world > 1:
                    self._check_ranks_agree(it)
                rng_states = self._gather_rng()
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
                self._write_results(progress, summary)
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
            "loss": self._all_mean(loss_value),
            **{k: self._all_mean(float(v)) for k, v in parts.items()},
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
        if not self.spec.do_eval:
            if self.is_main:
                progress.best_iter = it
                checkpoint.save_weights(self.model, self._best_store)
            return
        rec = self._eval()
        progress.eval_log.append(
            {
                "iter": it,
                "miou": rec["miou"],
                "acc": rec["acc"],
                "kappa": rec["kappa"],
                "dice": rec["dice"],
                "num_pixels": rec["num_pixels"],
            }
        )
        self._log(
            f"[eval] iter {it} mIoU={rec['miou']:.4f} acc={rec['acc']:.4f} "
            f"kappa={rec['kappa']:.4f} dice={rec['dice']:.4f}"
        )
        if self.vdl:
            self.vdl.add_scalar("val/miou", rec["miou"], it)
        if rec["miou"] > progress.best_miou:
            progress.best_miou, progress.best_iter = rec["miou"], it
            if self.is_main:
                checkpoint.save_weights(self.model, self._best_store)

    def _evaluate_best(self) -> None:
        """best_model/ evaluated as `segdistill evaluate` does (the weights in an fp32 model, eval mode), in this
        process: the record is the evaluate job's, without that job's start-up. In one fp32 process the trained
        model itself takes the best weights; otherwise (mixed precision casts it, DataParallel wraps it) a model
        is built from the YAML, as the evaluate command builds it."""
        from segdistill.evaluate import evaluate_run
        from segdistill.specs import EvaluateSpec

        spec = self.spec
        model = None
        if spec.precision == "fp32" and self.world == 1:
            load_weights(self.model, self._best_store, source=f"best model of {self.save_dir}")
            model = self.model
        evaluate_spec = EvaluateSpec(
            **asdict(spec.evaluate),
            config=spec.config,
            model=str(self.save_dir / "best_model" / "model.pdparams"),
            data_root=spec.data_root,
            class_names=spec.class_names,
            run=spec.run_id,
            out=spec.evaluate_out,
        )
        evaluate_run(evaluate_spec, clock=self.clock, model=model)

    def _checkpoint(self, it: int, progress: _Progress, rng_states: list) -> Path:
        """Rank 0 writes the checkpoint of iteration `it` (pruned to keep_checkpoint_max)."""
        state = {
            "run_key": self.run_key,
            "best_miou": progress.best_miou,
            "best_iter": progress.best_iter,
            "train_log": progress.train_log,
            "eval_log": progress.eval_log,
            "lr_scheduler": self.lr.state_dict(),
            "amp": self.amp.state_dict(),
        }
        path = checkpoint.save(
            self.save_dir,
            it,
            self.trainable,
            self.optimizer,
            state,
            self.spec.keep_checkpoint_max,
            rng_states=rng_states,
        )
        # Fault-injection hook for the kill tests: die right after a given checkpoint is written.
        if os.environ.get("SEGDISTILL_DIE_AFTER_ITER") == str(it):
            os._exit(137)
        return path

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
            "teacher_outputs": self._teacher_outputs_record(),
            "last_checkpoint": str(last) if last else None,
        }

    def _write_results(self, progress: _Progress, summary: dict) -> None:
        """best_model/, the logs as CSV and train_summary.json (rank 0).

        best_model/ is the workflow's declared output, which Snakemake deletes before rerunning a killed job; the
        copy kept beside the checkpoints survives, so a resumed run still ends with its best model."""
        if not self._best_store.is_file():
            raise SegDistillError(f"{self._best_store} is missing: no evaluation ran (is iters >= 1?)")
        best = self.save_dir / "best_model" / "model.pdparams"
        best.parent.mkdir(parents=True, exist_ok=True)
        with replacing(best) as tmp:
            _link_or_copy(self._best_store, tmp)
        _write_csv(self.save_dir / "train_log.csv", progress.train_log)
        _write_csv(self.save_dir / "eval_log.csv", progress.eval_log)
        write_json(self.save_dir / "train_summary.json", summary)
        write_json(self._finished, {"run_key": self.run_key, "iteration": self.iters})


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


def _link_or_copy(src: Path, dst: Path) -> None:
    """`dst` a hard link to `src` (no second write of the weights), a copy where links fail (another file
    system). Snakemake deleting best_model/ before a rerun unlinks its name only; the store keeps its file. The
    link's time is set to now: the job's output is as new as the job."""
    try:
        os.link(src, dst)
        os.utime(dst)
    except OSError:
        shutil.copyfile(src, dst)


def _fmt_eta(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r)) or ["iter"]
    with replacing(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def run_key(
    spec: TrainSpec, experiment: dict, train_data: str, val_files, world: int, distill, threads: int = 1
) -> str:
    """SHA-256 of what decides a run's result: what the trainer resolved (the experiment, data paths aside; the
    training data's digest; val's files; the ranks; when distilling, the terms and the teacher; the CPU threads,
    when not 1) and the identity fields of its spec (segdistill.specs.identity). A checkpoint records it; one of
    another key (a config or teacher changed since) is never resumed."""
    import hashlib
    import json

    experiment = {
        k: ({kk: vv for kk, vv in v.items() if kk not in DATA_PATH_KEYS} if isinstance(v, dict) else v)
        for k, v in experiment.items()
    }
    key = {
        "experiment": experiment,
        "train_data": train_data,
        "val_data": [list(map(str, e)) for e in (val_files or [])],
        "world": world,
        "distill": distill,
        # CPU kernels split their sums by thread: a run resumes only at the count it started with. Not named at 1,
        # so the keys of runs made before the count was recorded (all at 1 in the workflow) are unchanged.
        **({"threads": threads} if threads != 1 else {}),
        **identity(spec),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def train(spec: TrainSpec) -> dict:
    return Trainer(spec).run()
