"""GPU leases: give every job its own devices, and launch multi-device jobs with their own log folder.

Snakemake's `--resources gpu=4` only counts: it never tells a job *which* GPU to use, so two jobs can land on
the same device. A lease fixes that. Every device of the pool has a lock file `<pool_dir>/device-<id>.lock`;
a job holds an exclusive `flock` on each of its devices. The kernel drops a flock when the last process that
holds the open file goes away, so a crashed or SIGKILLed job cannot leave a device locked forever.

A job takes all the devices it needs or none (it releases partial holdings and retries), so two jobs that
each hold half of what they need can never wait on each other.

The workflow's training and cost jobs lease through `run()` (via `segdistill.jobs.run_on_devices`); with no
GPU in the pool (or `SEGDISTILL_GPU_IDS=` empty) a job runs on CPU. The same from a shell::

    python -m segdistill.devices run --gpus 2 --threads 4 --log-dir logs/launch/x -- python -m ... args
    python -m segdistill.devices list
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from segdistill.errors import SegDistillError
from segdistill.threads import VARS as THREAD_VARS
from segdistill.threads import available_cores

ENV_IDS = "SEGDISTILL_GPU_IDS"
ENV_LEASE_DIR = "SEGDISTILL_LEASE_DIR"
CPU_MESSAGE = "no GPU leased: running on CPU"


def _split_ids(text: str) -> list[str]:
    ids: list[str] = []
    for part in text.split(","):
        part = part.strip()
        # "-1" and SLURM's "NoDevFiles" are the usual ways of saying "no GPU".
        if not part or part == "NoDevFiles" or part.startswith("-"):
            continue
        if part not in ids:
            ids.append(part)
    return ids


def _nvidia_smi_ids() -> list[str]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return [m.group(1) for m in re.finditer(r"^GPU (\d+):", out.stdout, flags=re.MULTILINE)]


def available_devices() -> list[str]:
    """Device ids of the pool: $SEGDISTILL_GPU_IDS, else $CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`, else []."""
    if ENV_IDS in os.environ:
        return _split_ids(os.environ[ENV_IDS])
    # Under SLURM (or any scheduler) CUDA_VISIBLE_DEVICES already is this job's allocation.
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return _split_ids(os.environ["CUDA_VISIBLE_DEVICES"])
    return _nvidia_smi_ids()


def default_pool_dir() -> Path:
    """$SEGDISTILL_LEASE_DIR, else a per-user folder under the system temp dir (per job inside SLURM)."""
    if os.environ.get(ENV_LEASE_DIR):
        return Path(os.environ[ENV_LEASE_DIR])
    base = Path(tempfile.gettempdir()) / f"segdistill-leases-{os.getuid()}"
    # SLURM already gave this job its devices exclusively, and with device cgroups two jobs on one node both
    # see theirs as "0": a shared folder would make them wait on each other's lock for nothing.
    if os.environ.get("SLURM_JOB_ID"):
        return base / f"slurm-job-{os.environ['SLURM_JOB_ID']}"
    return base


@dataclass
class _Holding:
    ids: list[str]
    fds: list[int] = field(default_factory=list)


def _lock_path(pool_dir: Path, dev: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", dev)
    return pool_dir / f"device-{safe}.lock"


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    # The holder's pid in the file only helps a human find who holds a device; the lock is the flock.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _release(fds: Sequence[int]) -> None:
    for fd in fds:
        # Never delete lock files: another process may have the same inode open and be about to lock it.
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(fd)


def _check_count(n: int, what: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise SegDistillError(f"{what} must be a whole number >= 0, got {n!r}")


def _acquire(n: int, pool: list[str], pool_dir: Path, poll: float, timeout: float | None) -> _Holding:
    try:
        pool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise SegDistillError(f"cannot create the GPU lease folder {pool_dir}: {exc}") from exc
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        fds: list[int] = []
        got: list[str] = []
        try:
            for dev in pool:
                fd = _try_lock(_lock_path(pool_dir, dev))
                if fd is None:
                    continue
                fds.append(fd)
                got.append(dev)
                if len(got) == n:
                    return _Holding(got, fds)
        except OSError as exc:
            _release(fds)
            raise SegDistillError(f"cannot use the GPU lease folder {pool_dir}: {exc}") from exc
        except BaseException:
            _release(fds)
            raise
        # All or nothing: holding some devices while waiting for others is how two jobs deadlock.
        _release(fds)
        if deadline is not None and time.monotonic() >= deadline:
            raise SegDistillError(
                f"timed out after {timeout:g} s waiting for {n} free GPU(s) of {pool} "
                f"(lease folder {pool_dir}); another job holds them"
            )
        # Jitter keeps jobs that retry together from colliding again and again.
        pause = poll * random.uniform(0.5, 1.5)
        if deadline is not None:
            pause = max(0.0, min(pause, deadline - time.monotonic()))
        time.sleep(pause)


def _write_record(record: str | os.PathLike, ids: list[str], start: float, end: float) -> None:
    line = json.dumps({"ids": ids, "start": start, "end": end, "pid": os.getpid()}) + "\n"
    Path(record).parent.mkdir(parents=True, exist_ok=True)
    # One write to an O_APPEND file: lines of concurrent jobs cannot interleave.
    fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@contextlib.contextmanager
def _held(
    n: int,
    ids: Sequence[str] | None,
    pool_dir: str | os.PathLike | None,
    poll: float,
    timeout: float | None,
    record: str | os.PathLike | None,
) -> Iterator[_Holding]:
    _check_count(n, "the number of GPUs")
    pool = available_devices() if ids is None else _split_ids(",".join(str(i) for i in ids))
    if n == 0 or not pool:
        yield _Holding([])
        return
    if n > len(pool):
        raise SegDistillError(
            f"{n} GPU(s) requested but the device pool has only {len(pool)} ({','.join(pool)}); "
            f"lower the rule's resources gpu= or set {ENV_IDS}"
        )
    holding = _acquire(n, pool, Path(pool_dir) if pool_dir else default_pool_dir(), poll, timeout)
    start = time.time()
    try:
        yield holding
    finally:
        if record is not None:
            _write_record(record, holding.ids, start, time.time())
        _release(holding.fds)


@contextlib.contextmanager
def lease(
    n: int,
    ids: Sequence[str] | None = None,
    pool_dir: str | os.PathLike | None = None,
    poll: float = 0.2,
    timeout: float | None = None,
    record: str | os.PathLike | None = None,
) -> Iterator[list[str]]:
    """Hold `n` devices of the pool (`ids`, default `available_devices()`) exclusively; yields their ids.

    Blocks until `n` are free at once (SegDistillError after `timeout` seconds). Yields [] when `n` is 0 or the
    pool is empty (CPU). With `record`, appends one JSON line {ids, start, end, pid} when the lease ends.
    """
    with _held(n, ids, pool_dir, poll, timeout, record) as holding:
        yield list(holding.ids)


def _default_threads(ranks: int) -> int:
    return max(1, available_cores() // max(1, ranks))


def _launcher(log_dir: str | os.PathLike | None, extra: list[str]) -> tuple[list[str], Path]:
    if log_dir is None:
        log_dir = tempfile.mkdtemp(prefix="segdistill-launch-")
        print(f"paddle launcher logs: {log_dir}", file=sys.stderr)
    path = Path(log_dir)
    path.mkdir(parents=True, exist_ok=True)
    # Every job needs its own folder: the launcher's default log folder is shared and jobs overwrite it.
    return [sys.executable, "-m", "paddle.distributed.launch", *extra, "--log_dir", str(path)], path


def run(
    n: int,
    cmd: Sequence[str],
    log_dir: str | os.PathLike | None,
    threads: int | None = None,
    *,
    nprocs: int | None = None,
    record: str | os.PathLike | None = None,
    ids: Sequence[str] | None = None,
    pool_dir: str | os.PathLike | None = None,
    poll: float = 0.2,
    timeout: float | None = None,
) -> int:
    """Lease `n` devices, run `cmd` on them and return its exit code.

    The child sees CUDA_VISIBLE_DEVICES = the leased ids ("" on CPU), CUDA_DEVICE_ORDER=PCI_BUS_ID (the order of
    the pool's `nvidia-smi` ids), SEGDISTILL_LEASED_GPUS = the leased ids and OMP/MKL/OpenBLAS threads =
    `threads` per rank. More than one leased device, or `nprocs` > 1 on CPU, runs `cmd` under
    `paddle.distributed.launch` with its log folder `log_dir`. SIGTERM/SIGINT are passed on to the command.
    """
    cmd = [str(c) for c in cmd]
    _check_run_args(cmd, n, nprocs, threads)
    with _held(n, ids, pool_dir, poll, timeout, record) as holding:
        env = dict(os.environ)
        # The command checks this against what Paddle can use (segdistill.doctor.check_devices).
        env["SEGDISTILL_LEASED_GPUS"] = ",".join(holding.ids)
        # Pool ids are nvidia-smi's, which numbers GPUs in PCI bus order; CUDA's default (FASTEST_FIRST) can
        # number a mixed box differently, and CUDA_VISIBLE_DEVICES would then name another card than leased.
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        cmd, ranks = _place(cmd, env, holding.ids, n, nprocs, log_dir)
        per_rank = threads if threads is not None else _default_threads(ranks)
        for var in THREAD_VARS:
            env[var] = str(per_rank)
        return _run_forwarding(cmd, env, holding.fds)


def _check_run_args(cmd: list[str], n, nprocs, threads) -> None:
    if not cmd:
        raise SegDistillError("no command given to run (put it after `--`)")
    _check_count(n, "--gpus")
    if nprocs is not None:
        _check_count(nprocs, "--nprocs")
        if nprocs == 0:
            raise SegDistillError("--nprocs must be at least 1")
    if threads is not None:
        _check_count(threads, "--threads")
        if threads == 0:
            raise SegDistillError("--threads must be at least 1")


def _place(cmd: list[str], env: dict, leased: list[str], n: int, nprocs, log_dir) -> tuple[list[str], int]:
    """(the command as it runs, number of ranks): one rank per leased GPU, under the launcher when several;
    on CPU `nprocs` ranks (launcher when > 1). Sets CUDA_VISIBLE_DEVICES in `env` to match."""
    if leased:
        if nprocs not in (None, len(leased)):
            raise SegDistillError(
                f"--nprocs {nprocs} does not match --gpus {n}: on GPUs the launcher starts one process "
                f"per leased device"
            )
        env["CUDA_VISIBLE_DEVICES"] = ",".join(leased)
        if len(leased) > 1:
            cmd = _launcher(log_dir, ["--devices", ",".join(leased)])[0] + cmd
        return cmd, len(leased)
    why = f" ({n} GPU(s) asked for, but the device pool is empty)" if n else ""
    print(CPU_MESSAGE + why, file=sys.stderr, flush=True)
    ranks = nprocs or 1
    if ranks == 1:
        env["CUDA_VISIBLE_DEVICES"] = ""
        return cmd, 1
    # Paddle's launcher reads any CUDA_VISIBLE_DEVICES (even "") as a GPU list and then fails to place CPU
    # ranks, so CPU multi-process runs go without it.
    if available_devices():
        raise SegDistillError(
            "--nprocs > 1 without GPUs is only possible on a machine without GPUs "
            f"(the pool here is {','.join(available_devices())}); lease GPUs with --gpus instead"
        )
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return _launcher(log_dir, ["--nproc_per_node", str(ranks)])[0] + cmd, ranks


def _run_forwarding(cmd: list[str], env: dict[str, str], keep_fds: list[int]) -> int:
    child: subprocess.Popen | None = None
    pending: list[int] = []

    def forward(signum, _frame):
        if child is None:
            pending.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    # Signal handlers can only be set from the main thread; elsewhere the caller owns signal handling.
    forwarding = threading.current_thread() is threading.main_thread()
    sigs = (signal.SIGTERM, signal.SIGINT) if forwarding else ()
    old = {sig: signal.signal(sig, forward) for sig in sigs}
    try:
        try:
            # Own process group, so a forwarded signal reaches the launcher's ranks too. The child inherits
            # the lock files: if this wrapper is SIGKILLed, the devices stay leased while the command still runs.
            child = subprocess.Popen(cmd, env=env, pass_fds=keep_fds, start_new_session=True)
        except OSError as exc:
            raise SegDistillError(f"cannot start {cmd[0]!r}: {exc}") from exc
        for signum in pending:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signum)
        while True:
            try:
                return child.wait()
            except InterruptedError:  # pragma: no cover - Python retries wait() itself
                continue
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m segdistill.devices", description="Lease GPUs for one job and run it on them."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="lease devices, then run a command on them")
    r.add_argument("--gpus", type=int, default=0, help="devices to lease (0: CPU)")
    r.add_argument("--nprocs", type=int, default=None, help="processes on CPU (gloo) when no GPU is leased")
    r.add_argument("--threads", type=int, default=None, help="OMP/MKL/OpenBLAS threads per process")
    r.add_argument("--log-dir", default=None, help="this job's own paddle launcher log folder")
    r.add_argument("--record", default=None, help="append one JSON line per lease to this file")
    r.add_argument("--timeout", type=float, default=None, help="give up after this many seconds of waiting")
    r.add_argument("cmd", nargs=argparse.REMAINDER, help="-- command and its arguments")
    sub.add_parser("list", help="print the device pool, one id a line")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status (the command's own for `run`)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            for dev in available_devices():
                print(dev)
            return 0
        cmd = list(args.cmd)
        if cmd and cmd[0] == "--":
            cmd = cmd[1:]
        code = run(
            args.gpus,
            cmd,
            args.log_dir,
            args.threads,
            nprocs=args.nprocs,
            record=args.record,
            timeout=args.timeout,
        )
    except SegDistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # A child killed by a signal reports -signum; shells report that as 128 + signum.
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
