"""How often another machine should see "a gain": per-seed gains resampled at several numbers of seeds.

A short CPU study's per-seed gains move with floating-point rounding (kernels, thread scheduling, the cache's
dtype), so the digits of one machine do not come out again on another. What can be said is how often the
verdict does. This pools the per-seed gains (distilled minus student mIoU, in points, paired by seed) of one
or more finished studies of the same config under different roundings, draws `n` of them with replacement,
and counts how often the report's verdict would be "a gain": the two-sided paired t interval (95%) lies above 0,
the report's own rule for one arm (segdistill.report.stats). The t quantile is scipy's.

    .venv/bin/python bench/verdict_odds.py STUDY_DIR [STUDY_DIR ...] [--method kl] [--seeds 8 10 12 16]

A `.json` file in place of a study folder gives gains already measured, {"rounding": [gain, ...], ...}:
bench/data/default_roundings.json holds the default study's roundings that docs/study-design.md reports.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats


def gains(study: Path, method: str, split: str) -> list[float]:
    """Per-seed gains of a finished study, in mIoU points, from its results/eval/ records."""
    out = []
    for student in sorted((study / "results/eval/student").glob("seed*.json")):
        distilled = study / "results/eval/distilled" / method / student.name
        if distilled.is_file():
            s = json.loads(student.read_text())["splits"][split]["miou"]
            d = json.loads(distilled.read_text())["splits"][split]["miou"]
            out.append(100.0 * (d - s))
    if not out:
        raise SystemExit(f"{study}: no paired student and distilled/{method} records in results/eval/")
    return out


def gain_share(pool: np.ndarray, n: int, draws: int, seed: int = 0, confidence: float = 0.95) -> float:
    """Share of `draws` samples of `n` gains (with replacement) whose t interval lies above 0."""
    rng = np.random.default_rng(seed)
    sample = rng.choice(pool, size=(draws, n), replace=True)
    mean, sd = sample.mean(axis=1), sample.std(axis=1, ddof=1)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / np.sqrt(n)
    return float(np.mean(mean - half > 0))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="+", type=Path, help="finished studies' working directories")
    ap.add_argument("--method", default="kl")
    ap.add_argument("--split", default="test")
    ap.add_argument("--seeds", nargs="+", type=int, default=[8, 10, 12, 16])
    ap.add_argument("--draws", type=int, default=20000)
    args = ap.parse_args(argv)
    per_study = {}
    for s in args.studies:
        if s.suffix == ".json":
            measured = json.loads(s.read_text())  # keys starting with "_" describe the file
            per_study.update({f"{s.name}:{k}": [float(g) for g in v] for k, v in measured.items() if k[0] != "_"})
        else:
            per_study[str(s)] = gains(s, args.method, args.split)
    pool = np.array([g for gs in per_study.values() for g in gs])
    for study, gs in per_study.items():
        print(f"{study}: {len(gs)} seeds, mean {np.mean(gs):+.2f}, per seed {', '.join(f'{g:+.1f}' for g in gs)}")
    print(f"pooled: {len(pool)} gains, mean {pool.mean():+.2f}, sd {pool.std(ddof=1):.2f}")
    shares = {n: gain_share(pool, n, args.draws) for n in args.seeds}
    for n, share in shares.items():
        print(f"{n} seeds: 'a gain' in {share:.1%} of {args.draws} draws")
    return {"per_study": per_study, "shares": shares}


if __name__ == "__main__":
    main()
