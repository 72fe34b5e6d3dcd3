#!/usr/bin/env python
"""A study's wall time on more cores, projected: Snakemake's job graph, each job's measured time, a thread speed-up.

The job graph is Snakemake's own: a dry run (`snakemake -n --forceall`) lists every job with its inputs, outputs,
priority and benchmark file; a job depends on the jobs whose outputs it reads. Each job's time comes from a finished
study's `benchmarks/` (wall time) and its log's `[time]` line (compute; bench/study_time.py), or from
`--seconds RULE/ARM=WALL,COMPUTE` (e.g. docs/benchmark.md's per-job numbers); jobs with neither take `--small` s.

At t threads a job takes (wall - compute) + compute / s(t): start-up and I/O do not speed up. s(t) is Amdahl's law
fitted to the speed-up measured at 2 threads (bench/threads_step.py): s(2) = 1 / (1 - p + p/2) gives the parallel
share p, and s(t) = 1 / (1 - p + p/t). Nothing here has more than 2 cores, so every count above 2 is an
extrapolation.

The schedule imitates Snakemake's local scheduler: whenever a job ends, the ready jobs are started by priority (then
in dry-run order) while their threads fit the free cores; a rule's threads are min(its threads, --cores). Jobs
running side by side are assumed not to slow each other (measured: two one-thread jobs on 2 cores, docs/scaling.md).

    python bench/schedule.py --cores 8 16 --speedup teacher=1.2 teacher_outputs=1.2 train=1.2 \\
        --seconds train/teacher=194,186 train/student=26,23.5 distill=24.7,22.2 teacher_outputs=106,98
    python bench/schedule.py --study STUDY_DIR --configfile STUDY_DIR/study.yaml --cores 8 16 --speedup ...
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

# The study key's parts, and the jobs each one sets the threads of.
KINDS = ("teacher", "teacher_outputs", "train")


@dataclass
class Job:
    rule: str
    jobid: int
    inputs: list[str]
    outputs: list[str]
    priority: int = 0
    benchmark: str | None = None
    wildcards: str = ""
    deps: set[int] = field(default_factory=set)

    @property
    def kind(self) -> str | None:
        """Which `threads` key sets this job's threads (None: one thread, not part of the key)."""
        if self.rule == "teacher_outputs":
            return "teacher_outputs"
        if self.rule == "train":
            return "teacher" if "arm=teacher" in self.wildcards else "train"
        return "train" if self.rule == "distill" else None

    @property
    def name(self) -> str:
        """rule/arm (or rule/method): the key `--seconds` and the benchmark files use."""
        if self.benchmark:
            return str(Path(self.benchmark).relative_to("benchmarks").with_suffix(""))
        return self.rule


def dry_run(configfile: str | None, directory: Path) -> str:
    """Snakemake's dry run of the whole study (every job, whatever is already done)."""
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-n", "--forceall", "--cores", "1"]
    cmd += [
        "--workflow-profile",
        "none",
        "--snakefile",
        str(ROOT / "workflow/Snakefile"),
        "--directory",
        str(directory),
    ]
    cmd += ["--configfile", configfile] if configfile else []
    proc = subprocess.run(cmd, cwd=directory, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"the dry run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def parse_jobs(text: str) -> list[Job]:
    """Every job block (`rule NAME:` / `localrule NAME:` and its indented fields) of a dry run, with its deps."""
    jobs = []
    for m in re.finditer(r"^(?:local)?rule (\w+):\n((?:[ \t]+\S.*\n?)+)", text, re.M):
        fields = dict(re.findall(r"^\s+(\w+): (.*)$", m.group(2), re.M))

        def paths(key, fields=fields):
            return [p.strip() for p in fields.get(key, "").split(",") if p.strip()]

        jobs.append(
            Job(
                rule=m.group(1),
                jobid=int(fields["jobid"]),
                inputs=paths("input"),
                outputs=paths("output"),
                priority=int(fields.get("priority", 0)),
                benchmark=fields.get("benchmark"),
                wildcards=fields.get("wildcards", ""),
            )
        )
    made_by = {out: job.jobid for job in jobs for out in job.outputs}
    for job in jobs:
        job.deps = {made_by[i] for i in job.inputs if i in made_by and made_by[i] != job.jobid}
    return jobs


def study_seconds(study: Path) -> dict[str, tuple[float, float]]:
    """Benchmark name -> (wall, compute) of a finished study (bench/study_time.py's reading)."""
    from study_time import job_times

    return {r["job"]: (r["wall"], r["compute"] if r["timed"] else 0.0) for r in job_times(study)}


def amdahl(s2: float, t: int) -> float:
    """The speed-up at `t` threads of a job measured `s2` times faster at 2 threads than at 1."""
    p = min(1.0, max(0.0, 2.0 * (1.0 - 1.0 / s2)))
    return 1.0 / (1.0 - p + p / t)


def job_seconds(job: Job, times: dict, small: float) -> tuple[float, float]:
    """(wall, compute) at one thread: the job's own benchmark, else the longest matching --seconds key."""
    if not job.outputs:  # a target rule (`all`): nothing runs
        return 0.0, 0.0
    if job.name in times:
        return times[job.name]
    keys = [k for k in times if job.name == k or job.name.startswith(k + "/")]
    return times[max(keys, key=len)] if keys else (small, 0.0)


def simulate(jobs: list[Job], times: dict, cores: int, threads: dict, speedup: dict, small: float) -> dict:
    """The projected wall time of the study on `cores` with the study key `threads`; and the jobs' start/end."""
    order = {job.jobid: i for i, job in enumerate(jobs)}
    by_id = {job.jobid: job for job in jobs}
    need = {job.jobid: min(cores, threads.get(job.kind, 1)) for job in jobs}
    length = {}
    for job in jobs:
        wall, compute = job_seconds(job, times, small)
        n = need[job.jobid]
        length[job.jobid] = wall - compute + compute / (amdahl(speedup.get(job.kind, 1.0), n) if n > 1 else 1.0)
    waiting = {job.jobid: set(job.deps) for job in jobs}
    now, free, running, done, spans = 0.0, cores, [], set(), {}
    counter = itertools.count()
    while len(done) < len(jobs):
        ready = sorted(
            (j for j, deps in waiting.items() if not deps and j not in spans),
            key=lambda j: (-by_id[j].priority, order[j]),
        )
        for j in ready:
            if need[j] <= free:
                free -= need[j]
                spans[j] = (now, now + length[j])
                heapq.heappush(running, (now + length[j], next(counter), j))
        if not running:
            raise RuntimeError("no job can start: a dependency cycle, or a job needs more cores than there are")
        now, _, j = heapq.heappop(running)
        free += need[j]
        done.add(j)
        for deps in waiting.values():
            deps.discard(j)
    return {"wall": now, "spans": {by_id[j].name + f" ({j})": s for j, s in spans.items()}}


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"{what}: expected KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def settings(cores: int, grid: list[int]) -> list[dict]:
    """Today's setting (one thread everywhere) and every teacher / teacher_outputs count of `grid` up to `cores`."""
    counts = sorted({min(cores, n) for n in grid})
    return [{"teacher": a, "teacher_outputs": b, "train": 1} for a in counts for b in counts]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cores", type=int, nargs="+", default=[2, 8, 16])
    ap.add_argument("--study", default=None, help="a finished study's folder (benchmarks/, logs/)")
    ap.add_argument("--configfile", default=None, help="the study file of the dry run (default: config/config.yaml)")
    ap.add_argument("--seconds", nargs="*", default=[], help="NAME=WALL,COMPUTE at one thread, per job of NAME")
    ap.add_argument("--speedup", nargs="*", default=[], help="KIND=S: measured speed-up at 2 threads per kind")
    ap.add_argument("--grid", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="thread counts to try")
    ap.add_argument("--small", type=float, default=2.0, help="seconds of a job without a benchmark")
    args = ap.parse_args(argv)
    study = Path(args.study) if args.study else ROOT
    jobs = parse_jobs(dry_run(args.configfile, study))
    times = study_seconds(study) if args.study else {}
    times.update({k: tuple(float(x) for x in v.split(",")) for k, v in _pairs(args.seconds, "--seconds").items()})
    speedup = {k: float(v) for k, v in _pairs(args.speedup, "--speedup").items()}
    print(f"{len(jobs)} jobs; speed-up at 2 threads: {speedup}")
    print("| cores | threads (teacher, teacher_outputs, train) | projected wall s | vs today's |")
    print("| --- | --- | --- | --- |")
    for cores in args.cores:
        today = simulate(jobs, times, cores, dict.fromkeys(KINDS, 1), speedup, args.small)["wall"]
        results = [
            (simulate(jobs, times, cores, s, speedup, args.small)["wall"], s) for s in settings(cores, args.grid)
        ]
        best, key = min(results, key=lambda r: (round(r[0], 6), r[1]["teacher"] + r[1]["teacher_outputs"]))
        print(f"| {cores} | 1, 1, 1 (today) | {today:.0f} | 1.00 |")
        print(
            f"| {cores} | {key['teacher']}, {key['teacher_outputs']}, 1 (best of the grid) | {best:.0f} | "
            f"{best / today:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
