# One script for the curves and samples figure rules; the rule name says which figure.
import json

from segdistill.jobs import run
from segdistill.study import parse_run

rule, out, p = snakemake.rule, snakemake.output[0], snakemake.params
if rule == "figure_curves":
    argv = ["figure", "curves"] + [a for r, d in p.runs.items() for a in ("--run", r, d)]
else:
    best = json.load(open(snakemake.input.export))["run"]
    info = parse_run(best)
    seed = info["seed"]
    cols = [("teacher", p.teacher_config, p.run_models[p.teacher_runs[seed]]),
            (f"student (seed {seed})", p.student_config, p.run_models[f"student/seed{seed}"]),
            (f"distilled {info['method']} (seed {seed})", p.student_config, p.run_models[best])]
    argv = ["figure", "samples", "--data_root", snakemake.input.data, "--num_images", p.num_images,
            "--split", p.split]
    argv += [a for c in cols for a in ("--model", *c)]
run(argv + ["--out", out], snakemake.log[0])
