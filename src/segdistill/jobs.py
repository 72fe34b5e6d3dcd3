"""What the workflow's scripts share: logging to the rule's log, and running a job on leased devices.

Scripts stay thin: they read `snakemake.input/params/output` and call one engine function inside `log_to`.
Only jobs that must hold devices (training, teacher outputs, the cost table's latency) start a child process,
through `run_on_devices`: a multi-device job is several processes under `paddle.distributed.launch`, so it needs a
command line (`python -m segdistill.cli ...`). A job with a spec (segdistill.specs) gets it as a file, which every
rank reads: the command line is then `segdistill <kind> --spec <file>`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import traceback


@contextlib.contextmanager
def log_to(path):
    """Send this process's stdout and stderr -- and those of its children -- to `path`.

    An error raised in the block is written to the log too (where the job's reader looks): a SegDistillError as
    its one-line message, then the job exits non-zero with that line; anything else with its traceback.
    """
    from segdistill.errors import SegDistillError

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    failed = None
    with open(path, "a") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        except SegDistillError as exc:
            failed = f"segdistill: error: {exc}"
            print(failed, file=sys.stderr)
        except Exception:
            traceback.print_exc()
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
    if failed:
        sys.exit(f"{failed}\n(see {path})")


@dataclasses.dataclass(frozen=True)
class Unwatched:
    """A rule parameter that Snakemake does not compare between runs.

    Snakemake records a job's parameters and reruns the job when they change, but it records only parameters of
    plain types (numbers, strings, lists, dicts, ...); any other object is left out of the comparison. A job that
    must not run again when the study grows (rules/train.smk, check_terms) takes what it reads from the study in
    this wrapper: `snakemake.params.<name>.value`. That Snakemake leaves it out is behaviour of its persistence
    code, not a documented promise: tests/test_grown_study.py (a new method plans no check_terms) holds it to it."""

    value: object


def run_on_devices(job, log: str, gpus: int, threads: int, launch_log_dir: str) -> None:
    """Lease `gpus` devices, then run `segdistill <argv>` in a child (under paddle.distributed.launch if > 1).

    `job`: the argv list, or a job spec or a list of specs of one kind (written to `<launch_log_dir>/spec.json`
    and passed as `--spec`)."""
    from segdistill import devices
    from segdistill.specs import KINDS, kind_of, write_spec

    spec_types = tuple(KINDS.values())
    many = isinstance(job, (list, tuple)) and bool(job) and all(isinstance(j, spec_types) for j in job)
    if many or isinstance(job, spec_types):
        kind = kind_of(job[0] if many else job)
        job = [kind, "--spec", write_spec(list(job) if many else job, os.path.join(launch_log_dir, "spec.json"))]
    argv = list(map(str, job))
    cmd = [sys.executable, "-m", "segdistill.cli", *argv]
    with log_to(log):
        print("segdistill " + " ".join(argv), file=sys.stderr, flush=True)
        code = devices.run(int(gpus), cmd, log_dir=launch_log_dir, threads=threads)
    if code:
        sys.exit(f"segdistill {argv[0]} failed (exit {code}); see {log}")


def exit_without_teardown(code: int) -> None:
    """End `python -m segdistill.cli` (how `run_on_devices` runs a job) without the interpreter's teardown.

    Why: after a job's outputs are written and closed, tearing down paddle's C++ objects and modules takes about
    0.4 s of every job (`python -c "import segdistill.trainer"` 1.8 s, 1.4 s ending with `os._exit`), paid by
    each of a study's training and teacher-output jobs. Everything segdistill writes is closed before `main`
    returns (atomic replaces, closed logs), so nothing is left to flush but the standard streams. A process that
    still has children (data-loader workers) exits the normal way, which shuts them down."""
    import multiprocessing

    if multiprocessing.active_children():
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
