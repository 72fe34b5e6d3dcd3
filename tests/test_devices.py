"""GPU leases: one device never serves two jobs at once, dead holders give their devices back, no deadlock.

The pool is pretend ("0,1,2,3" via SEGDISTILL_GPU_IDS): leases only lock files, so they behave the same with or
without real GPUs. The launcher wrapping runs the real paddle.distributed.launch.
"""

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import ROOT
from segdistill import devices
from segdistill.errors import SegDistillError

PY = sys.executable
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
LEASE_WORKFLOW = ROOT / "tests" / "fixtures" / "lease_workflow" / "Snakefile"
POOL = ["0", "1", "2", "3"]

# Holds `n` devices of the pool in `pool_dir` until killed; prints the leased ids once it has them.
HOLDER = (
    "import sys, time\n"
    "from segdistill.devices import lease\n"
    "with lease(int(sys.argv[1]), ids=sys.argv[2].split(','), pool_dir=sys.argv[3]) as got:\n"
    "    print(','.join(got), flush=True)\n"
    "    time.sleep(120)\n"
)

# Leases 2 of the pool `rounds` times in a row, holding each lease briefly, recording every lease.
LOOPER = (
    "import sys, time\n"
    "from segdistill.devices import lease\n"
    "for _ in range(int(sys.argv[3])):\n"
    "    with lease(2, ids=['0', '1', '2'], pool_dir=sys.argv[1], poll=0.01, timeout=30, record=sys.argv[2]):\n"
    "        time.sleep(0.02)\n"
)


@pytest.fixture
def pool_env(tmp_path, monkeypatch):
    """A pretend pool of 4 devices with its own lease folder, in this process and in children."""
    lease_dir = tmp_path / "leases"
    monkeypatch.setenv("SEGDISTILL_GPU_IDS", ",".join(POOL))
    monkeypatch.setenv("SEGDISTILL_LEASE_DIR", str(lease_dir))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    return lease_dir


def read_records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def assert_no_shared_device(records):
    for a, b in itertools.combinations(records, 2):
        shared = set(a["ids"]) & set(b["ids"])
        if shared:
            assert a["end"] <= b["start"] or b["end"] <= a["start"], f"{shared} held twice: {a} {b}"


def max_concurrency(records):
    events = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def start_holder(n, ids, pool_dir):
    proc = subprocess.Popen([PY, "-c", HOLDER, str(n), ",".join(ids), str(pool_dir)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line, "holder exited before leasing"
    return proc, line.split(",")


# --- the pool ------------------------------------------------------------------------------------------------


def test_pool_comes_from_env_then_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("SEGDISTILL_GPU_IDS", "3, 1,3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert devices.available_devices() == ["3", "1"]
    monkeypatch.setenv("SEGDISTILL_GPU_IDS", "")  # explicitly no GPUs, whatever CUDA says
    assert devices.available_devices() == []
    monkeypatch.delenv("SEGDISTILL_GPU_IDS")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")  # e.g. a SLURM allocation
    assert devices.available_devices() == ["2", "5"]
    for hidden in ("", "-1", "NoDevFiles"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert devices.available_devices() == []


def test_pool_falls_back_to_nvidia_smi_then_cpu(tmp_path, monkeypatch):
    monkeypatch.delenv("SEGDISTILL_GPU_IDS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert devices.available_devices() == []  # no nvidia-smi: CPU
    # No GPU here to run the real tool: a stand-in printing its `-L` format.
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: Tesla V100 (UUID: GPU-aa)'\necho 'GPU 1: Tesla V100 (UUID: GPU-bb)'\n")
    smi.chmod(0o755)
    assert devices.available_devices() == ["0", "1"]


def test_lease_sizes_and_errors(pool_env):
    with devices.lease(0) as got:
        assert got == []
    with devices.lease(2, ids=[]) as got:  # empty pool: CPU
        assert got == []
    with pytest.raises(SegDistillError, match=r"5 GPU\(s\) requested.*only 4"):
        with devices.lease(5):
            pass
    with pytest.raises(SegDistillError, match="whole number"):
        with devices.lease(-1):
            pass
    with devices.lease(3) as got:
        assert len(set(got)) == 3 and set(got) <= set(POOL)
        with devices.lease(1) as other:
            assert other[0] not in got
        with pytest.raises(SegDistillError, match="timed out.*2 free GPU"):
            with devices.lease(2, timeout=0.3):
                pass
    assert {p.name for p in pool_env.iterdir()} >= {f"device-{i}.lock" for i in got}


# --- 8 Snakemake jobs on a pool of 4 -------------------------------------------------------------------------


def test_snakemake_jobs_never_share_a_device(tmp_path, pool_env):
    record = tmp_path / "leases.jsonl"
    gpus = [1, 2]
    proc = subprocess.run(
        [
            SNAKEMAKE,
            "--snakefile",
            str(LEASE_WORKFLOW),
            "--directory",
            str(tmp_path),
            "--workflow-profile",
            "none",
            "--cores",
            "8",
            "--resources",
            "gpu=4",
            "--config",
            "jobs=8",
            f"gpus={gpus}",
            f"record={record}",
            "hold=0.5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    seen_sets = []
    for i in range(8):
        lines = [json.loads(x) for x in (tmp_path / f"seen/job{i}.jsonl").read_text().splitlines()]
        want = gpus[i % 2]
        assert len(lines) == want, f"job{i}: {want} rank(s) expected, got {lines}"
        cvd = {line["cvd"] for line in lines}
        assert len(cvd) == 1, lines
        ids = cvd.pop().split(",")
        assert len(set(ids)) == want and set(ids) <= set(POOL), f"job{i} saw {ids}"
        assert {line["rank"] for line in lines} == {str(r) for r in range(want)}
        if want > 1:  # wrapped in paddle.distributed.launch: one rank per leased device
            assert sorted(line["selected"] for line in lines) == ["0", "1"]
            assert (tmp_path / f"launch/job{i}/workerlog.1").is_file()
        assert all(line["omp"] == "1" for line in lines)  # --threads 1, not inherited
        seen_sets.append(tuple(sorted(ids)))

    records = read_records(record)
    assert len(records) == 8
    assert Counter(tuple(sorted(r["ids"])) for r in records) == Counter(seen_sets)
    assert_no_shared_device(records)
    assert max_concurrency(records) >= 2, "jobs never overlapped: the test proves nothing"


# --- dead holders --------------------------------------------------------------------------------------------


def test_sigkilled_holder_gives_its_devices_back_at_once(pool_env):
    holder, held = start_holder(2, ["0", "1"], pool_env)
    try:
        assert held == ["0", "1"]
        with pytest.raises(SegDistillError, match="timed out"):
            with devices.lease(1, ids=["1"], timeout=0.3):
                pass
    finally:
        holder.kill()
        holder.wait()
    t0 = time.monotonic()
    with devices.lease(2, ids=["0", "1"], timeout=5) as got:
        assert got == ["0", "1"]
    assert time.monotonic() - t0 < 1.0


def test_devices_stay_leased_while_an_orphaned_command_runs(tmp_path, pool_env):
    """SIGKILL of the wrapper alone leaves its command running on the device: the lease must outlive it."""
    pidfile = tmp_path / "child.pid"
    wrapper = subprocess.Popen(
        [PY, "-m", "segdistill.devices", "run", "--gpus", "1", "--", "sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"]
    )
    child = None
    try:
        for _ in range(200):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            time.sleep(0.05)
        child = int(pidfile.read_text())
        wrapper.kill()
        wrapper.wait()
        with pytest.raises(SegDistillError, match="timed out"):
            with devices.lease(4, timeout=0.5):
                pass
    finally:
        if child is not None:
            os.kill(child, signal.SIGKILL)
        wrapper.kill()
    for _ in range(50):  # the orphan is reaped by init; its lock goes with its last open file
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    with devices.lease(4, timeout=2) as got:
        assert sorted(got) == POOL


# --- all or nothing ------------------------------------------------------------------------------------------


def test_waiting_lease_holds_nothing(pool_env):
    """A lease that cannot get all it needs must not sit on the devices it could get."""
    holder, held = start_holder(2, ["1", "2"], pool_env)
    result = {}

    def want_two():
        try:
            with devices.lease(2, ids=["0", "1", "2"], poll=0.02, timeout=3) as got:
                result["got"] = got
        except SegDistillError as exc:
            result["error"] = str(exc)

    waiter = threading.Thread(target=want_two)
    try:
        assert held == ["1", "2"]
        waiter.start()
        time.sleep(0.3)
        with devices.lease(1, ids=["0"], poll=0.01, timeout=1) as got:  # "0" is free although the waiter wants it
            assert got == ["0"]
            time.sleep(0.2)
    finally:
        holder.kill()
        holder.wait()
    waiter.join(10)
    assert not waiter.is_alive()
    assert len(result.get("got", [])) == 2, result


def test_two_leases_of_two_on_three_devices_never_deadlock(tmp_path, pool_env):
    record = tmp_path / "leases.jsonl"
    rounds = 15
    procs = [subprocess.Popen([PY, "-c", LOOPER, str(pool_env), str(record), str(rounds)]) for _ in range(2)]

    def loop():
        for _ in range(rounds):
            with devices.lease(2, ids=["0", "1", "2"], poll=0.01, timeout=30, record=record):
                time.sleep(0.02)

    threads = [threading.Thread(target=loop) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert [p.wait(60) for p in procs] == [0, 0]
    records = read_records(record)
    assert len(records) == 4 * rounds
    assert all(len(set(r["ids"])) == 2 for r in records)
    assert_no_shared_device(records)


# --- the wrapper ---------------------------------------------------------------------------------------------

PROBE = (
    "import os; print(repr(os.environ.get('CUDA_VISIBLE_DEVICES')), os.environ['OMP_NUM_THREADS'], "
    "os.environ['MKL_NUM_THREADS'], os.environ['OPENBLAS_NUM_THREADS'])"
)


def test_cpu_fallback_runs_with_no_visible_device(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGDISTILL_GPU_IDS", "")
    monkeypatch.setenv("SEGDISTILL_LEASE_DIR", str(tmp_path))
    env = dict(os.environ, OMP_NUM_THREADS="7", CUDA_VISIBLE_DEVICES="0")
    proc = subprocess.run(
        [PY, "-m", "segdistill.devices", "run", "--gpus", "1", "--threads", "3", "--", PY, "-c", PROBE],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no GPU leased: running on CPU" in proc.stderr
    assert proc.stdout.split() == ["''", "3", "3", "3"]


def test_leased_ids_are_visible_and_exit_code_returned(pool_env, tmp_path):
    record = tmp_path / "r.jsonl"
    proc = subprocess.run(
        [
            PY,
            "-m",
            "segdistill.devices",
            "run",
            "--gpus",
            "1",
            "--record",
            str(record),
            "--",
            PY,
            "-c",
            PROBE + "; raise SystemExit(7)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 7, proc.stderr
    (rec,) = read_records(record)
    assert proc.stdout.split()[0] == repr(rec["ids"][0])
    assert rec["start"] <= rec["end"]


def test_too_many_gpus_is_a_clear_error(pool_env):
    proc = subprocess.run(
        [PY, "-m", "segdistill.devices", "run", "--gpus", "6", "--", "true"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "6 GPU(s) requested" in proc.stderr and "only 4" in proc.stderr


def test_sigterm_is_forwarded_to_the_command(pool_env, tmp_path):
    marker = tmp_path / "got-term"
    child = (
        "import signal, sys, time\n"
        f"def on_term(*_):\n    open({str(marker)!r}, 'w').write('TERM')\n    sys.exit(5)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    wrapper = subprocess.Popen(
        [PY, "-m", "segdistill.devices", "run", "--gpus", "1", "--", PY, "-c", child], stdout=subprocess.PIPE, text=True
    )
    try:
        assert wrapper.stdout.readline().strip() == "ready"
        wrapper.send_signal(signal.SIGTERM)
        assert wrapper.wait(20) == 5
    finally:
        wrapper.kill()
    assert marker.read_text() == "TERM"


def test_cpu_multiprocess_run_uses_the_launcher_with_its_own_log_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGDISTILL_GPU_IDS", "")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    out = tmp_path / "ranks.txt"
    log_dir = tmp_path / "launch"
    rank = (
        f"import os; fd = os.open({str(out)!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND); "
        "os.write(fd, (os.environ['PADDLE_TRAINER_ID'] + ' ' + os.environ['PADDLE_TRAINERS_NUM'] + ' ' "
        "+ os.environ['OMP_NUM_THREADS'] + chr(10)).encode())"
    )
    proc = subprocess.run(
        [
            PY,
            "-m",
            "segdistill.devices",
            "run",
            "--nprocs",
            "2",
            "--threads",
            "1",
            "--log-dir",
            str(log_dir),
            "--",
            PY,
            "-c",
            rank,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(out.read_text().splitlines()) == ["0 2 1", "1 2 1"]
    assert (log_dir / "workerlog.0").is_file() and (log_dir / "workerlog.1").is_file()


def test_nprocs_must_match_leased_gpus(pool_env):
    with pytest.raises(SegDistillError, match="--nprocs 3 does not match --gpus 2"):
        devices.run(2, ["true"], log_dir=None, nprocs=3)
    with pytest.raises(SegDistillError, match="no command"):
        devices.run(1, [], log_dir=None)


ENV_PROBE = (
    "import os; print('|'.join(os.environ.get(k, '<unset>') for k in ('CUDA_VISIBLE_DEVICES', "
    "'CUDA_DEVICE_ORDER', 'SEGDISTILL_LEASED_GPUS', 'OMP_NUM_THREADS')))"
)


def _leased_env(threads: int) -> list[str]:
    """What a job leasing one GPU sees: CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER, its lease, OMP_NUM_THREADS."""
    cmd = [PY, "-m", "segdistill.devices", "run", "--gpus", "1", "--threads", str(threads), "--", PY, "-c", ENV_PROBE]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split("|")


def test_a_leased_job_gets_pci_order_and_its_ids_whatever_the_shell_set(pool_env, monkeypatch):
    """CUDA_VISIBLE_DEVICES names the leased ids in nvidia-smi's (PCI bus) numbering only if CUDA numbers the
    same way: CUDA_DEVICE_ORDER=PCI_BUS_ID, set over whatever the caller's shell had."""
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST")
    visible, order, leased, threads = _leased_env(threads=2)
    assert (order, threads) == ("PCI_BUS_ID", "2")
    assert visible == leased and visible in POOL
    # No GPU in the pool: CPU, nothing visible, nothing leased, the same order.
    monkeypatch.setenv("SEGDISTILL_GPU_IDS", "")
    assert _leased_env(threads=1) == ["", "PCI_BUS_ID", "", "1"]
