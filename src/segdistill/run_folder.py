"""A training run's folder over its life: its key, resume or discard, checkpoints, the best model, the result
files and the finished marker.

Why one class: what may be resumed, what is removed and what marks a run finished decide whether a rerun equals
an uninterrupted run (kill -9, SIGTERM, a job Snakemake reruns); the trainer only trains and hands its state here.
Rank 0 alone writes; every rank decides the same way (the folder is shared).

The folder: `iter_<N>/` checkpoints (segdistill.checkpoint), `checkpoints_best/model.pdparams` (the best weights
so far; it survives Snakemake deleting the declared output `best_model/` before a rerun), `best_model/`,
`train_log.csv`, `eval_log.csv`, `train_summary.json` and `finished.json` (not a workflow output, so a rerun sees
it).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

from segdistill import checkpoint
from segdistill.atomic import replacing, write_json
from segdistill.errors import SegDistillError
from segdistill.paddleseg_yaml import DATA_PATH_KEYS
from segdistill.specs import identity


def run_key(spec, experiment: dict, train_data: str, val_files, world: int, distill, threads: int = 1) -> str:
    """SHA-256 of what decides a run's result: what the trainer resolved (the experiment, data paths aside; the
    training data's digest; val's files; the ranks; when distilling, the terms and the teacher; the CPU threads,
    when not 1) and the identity fields of its spec (segdistill.specs.identity). A checkpoint records it; one of
    another key (a config or teacher changed since) is never resumed."""
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


class RunFolder:
    def __init__(self, save_dir, key: str, rank: int = 0, log=print):
        self.dir, self.key, self.is_main, self._log = Path(save_dir), key, rank == 0, log
        self.best_store = self.dir / "checkpoints_best" / "model.pdparams"
        self.best_model = self.dir / "best_model" / "model.pdparams"
        self.finished = self.dir / "finished.json"

    def to_resume(self, resume_model: str | None, iters: int) -> tuple[Path, dict] | tuple[None, None]:
        """The checkpoint to continue from and its state: `resume_model` when given, else the newest valid one of
        this run (same key) that stopped before its last iteration; (None, None) when the run starts afresh."""
        if resume_model:
            source = Path(resume_model)
            meta = checkpoint.verify(source) if source.is_dir() else None
            if meta is None:
                raise SegDistillError(f"--resume_model {source}: not a checkpoint folder")
            if meta.get("run_key") != self.key:
                self._log(
                    f"note: --resume_model {source} was written by a run with another config, data, seed "
                    f"or teacher; resuming it as asked"
                )
            return source, meta
        path, meta = checkpoint.latest_valid(self.dir, self._log)
        if path is not None and meta.get("run_key") != self.key:
            self._discard(
                path, "are of another run (its config, data, seed, teacher or thread count differ from this one's)"
            )
            path, meta = None, None
        elif path is not None and (meta["iteration"] >= iters or self.finished.is_file()):
            # Only a run stopped before its last iteration resumes: the job is rerun on purpose (--forcerun,
            # a rerun Snakemake decided on), and resuming would hand back the old model untrained. A run
            # without a last checkpoint (final_checkpoint false) says it finished in `finished.json`.
            self._discard(
                path,
                f"are of a run that finished (iteration {iters} of {iters}); this job was rerun, so it trains again",
            )
            path, meta = None, None
        if path is None and self.is_main:
            self.finished.unlink(missing_ok=True)  # of an earlier run; this one has not finished
        return path, meta

    def _discard(self, newest: Path, why: str) -> None:
        """The checkpoints here are not to be resumed: of another run (Snakemake reruns a job whose config, data or
        teacher changed; killed runs leave checkpoints behind) or of a finished one (the job is rerun). Resuming
        them would return the old run's model. They and the old best-model copy are removed, so pruning and a later
        resume see this run's checkpoints only."""
        self._log(
            f"checkpoints in {self.dir} (newest {newest.name}) {why}: not resumed, removed; training from iteration 0"
        )
        if not self.is_main:
            return
        for path in checkpoint.list_checkpoints(self.dir):
            shutil.rmtree(path, ignore_errors=True)
        self.best_store.unlink(missing_ok=True)
        self.finished.unlink(missing_ok=True)

    def last_good(self) -> Path | None:
        """The newest valid checkpoint (what a stopped run can be resumed from)."""
        return checkpoint.latest_valid(self.dir, self._log)[0]

    def drop_best(self) -> None:
        """No best model is left (the job's output and the copy beside the checkpoints): a stopped run's."""
        if self.is_main:
            self.best_store.unlink(missing_ok=True)
            shutil.rmtree(self.best_model.parent, ignore_errors=True)

    def save_best(self, model) -> None:
        if self.is_main:
            checkpoint.save_weights(model, self.best_store)

    def save_checkpoint(self, it: int, trainable, optimizer, state: dict, keep: int, rng_states: list) -> Path:
        """Rank 0 writes the checkpoint of iteration `it` with this run's key (pruned to `keep`)."""
        path = checkpoint.save(self.dir, it, trainable, optimizer, {"run_key": self.key, **state}, keep, rng_states)
        # Fault-injection hook for the kill tests: die right after a given checkpoint is written.
        if os.environ.get("SEGDISTILL_DIE_AFTER_ITER") == str(it):
            os._exit(137)
        return path

    def write_results(self, train_log: list, eval_log: list, summary: dict, iters: int) -> None:
        """best_model/, the logs as CSV, train_summary.json, then the finished marker (rank 0).

        best_model/ is the workflow's declared output, which Snakemake deletes before rerunning a killed job; the
        copy kept beside the checkpoints survives, so a resumed run still ends with its best model."""
        if not self.best_store.is_file():
            raise SegDistillError(f"{self.best_store} is missing: no evaluation ran (is iters >= 1?)")
        self.best_model.parent.mkdir(parents=True, exist_ok=True)
        with replacing(self.best_model) as tmp:
            _link_or_copy(self.best_store, tmp)
        _write_csv(self.dir / "train_log.csv", train_log)
        _write_csv(self.dir / "eval_log.csv", eval_log)
        write_json(self.dir / "train_summary.json", summary)
        write_json(self.finished, {"run_key": self.key, "iteration": iters})


def _link_or_copy(src: Path, dst: Path) -> None:
    """`dst` a hard link to `src` (no second write of the weights), a copy where links fail (another file
    system). Snakemake deleting best_model/ before a rerun unlinks its name only; the store keeps its file. The
    link's time is set to now: the job's output is as new as the job."""
    try:
        os.link(src, dst)
        os.utime(dst)
    except OSError:
        shutil.copyfile(src, dst)


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r)) or ["iter"]
    with replacing(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
