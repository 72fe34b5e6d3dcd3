"""Where a finished study's time went: per rule, Snakemake's wall time against the compute its jobs did.

Reads a study folder (the working directory of a finished `snakemake` run): every `benchmarks/<rule>/...tsv`
(Snakemake's `benchmark:` files; `s` is the job's wall time) and the log beside it, `logs/<rule>/...log`, whose
last `[time]` line (segdistill.timing) says how long the job computed: training steps, forwards (evaluations,
the teacher over the training stream). The rest of a job's wall time is start-up (interpreter, paddle and
paddleseg imports, model builds, data sets) and I/O (checkpoints, weights, caches), shown apart where the job
timed its checkpoint writes. Prints a Markdown table per rule and the study's start-up share: the rest over the
wall time of all benchmarked jobs.

    .venv/bin/python bench/study_time.py STUDY_DIR [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from segdistill.timing import COMPUTE, parse_log

IO = ("checkpoint", "results")


def job_times(study: Path) -> list[dict]:
    """One row per benchmarked job: rule, job, wall, compute (the COMPUTE parts) and timed I/O, in seconds."""
    rows = []
    for tsv in sorted((study / "benchmarks").rglob("*.tsv")):
        rel = tsv.relative_to(study / "benchmarks").with_suffix("")
        with open(tsv) as fh:
            wall = float(next(csv.DictReader(fh, delimiter="\t"))["s"])
        log = study / "logs" / rel.with_suffix(".log")
        parts = parse_log(log.read_text()) if log.is_file() else {}
        rows.append(
            {
                # The rule and all wildcards but the last: train/teacher, train/student, distill/kl, evaluate/student.
                "rule": "/".join(rel.parts[:-1]) or rel.name,
                "job": str(rel),
                "wall": wall,
                "compute": sum(parts.get(k, 0.0) for k in COMPUTE),
                "io": sum(parts.get(k, 0.0) for k in IO),
                "timed": bool(parts),
            }
        )
    return rows


def by_rule(rows: list[dict]) -> list[dict]:
    """Rows summed per rule, in order of wall time; `rest` = wall - compute (start-up and I/O)."""
    rules: dict[str, dict] = {}
    for r in rows:
        agg = rules.setdefault(r["rule"], {"rule": r["rule"], "jobs": 0, "wall": 0.0, "compute": 0.0, "io": 0.0})
        agg["jobs"] += 1
        for k in ("wall", "compute", "io"):
            agg[k] += r[k]
    out = sorted(rules.values(), key=lambda a: -a["wall"])
    for a in out:
        a["rest"] = a["wall"] - a["compute"]
        a["rest_share"] = a["rest"] / a["wall"] if a["wall"] else 0.0
    return out


def totals(rows: list[dict]) -> dict:
    wall = sum(r["wall"] for r in rows)
    compute = sum(r["compute"] for r in rows)
    return {"jobs": len(rows), "wall": wall, "compute": compute, "rest": wall - compute, "share": 1 - compute / wall}


def table(rules: list[dict], total: dict) -> str:
    lines = [
        "| rule (and arm) | jobs | wall s (sum) | wall s per job | compute s | rest s (start-up, I/O) | "
        "of which checkpoint writes s | rest share |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for a in rules:
        lines.append(
            f"| {a['rule']} | {a['jobs']} | {a['wall']:.0f} | {a['wall'] / a['jobs']:.1f} | {a['compute']:.0f} | "
            f"{a['rest']:.0f} | {a['io']:.0f} | {a['rest_share']:.0%} |"
        )
    lines.append(
        f"| all benchmarked jobs | {total['jobs']} | {total['wall']:.0f} | | {total['compute']:.0f} | "
        f"{total['rest']:.0f} | | **{total['share']:.0%}** |"
    )
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path, help="the study's working directory (has benchmarks/ and logs/)")
    ap.add_argument("--json", type=Path, help="also write the per-job and per-rule numbers here")
    args = ap.parse_args(argv)
    rows = job_times(args.study)
    if not rows:
        raise SystemExit(f"{args.study}: no benchmarks/*.tsv (is it a finished study's folder?)")
    rules, total = by_rule(rows), totals(rows)
    print(table(rules, total))
    untimed = sorted({r["rule"] for r in rows if not r["timed"]})
    if untimed:
        print(f"\nno [time] line in the logs of: {', '.join(untimed)} (all of their wall time counts as rest)")
    result = {"jobs": rows, "rules": rules, "total": total}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
