import json
import os
import tempfile

from segdistill.jobs import run

i, p = snakemake.input, snakemake.params
# The study config as the workflow saw it (after schema defaults), hashed canonically.
fd, cfg = tempfile.mkstemp(suffix=".json")
with os.fdopen(fd, "w") as fh:
    json.dump(dict(p.config), fh, default=str)
try:
    files = [*p.configfiles, *i.configs, *i.patched, *i.terms]
    repo = ["--repo", p.repo] if p.repo else []  # a git checkout of the workflow, when it runs from one
    run(["provenance", "--config_json", cfg, "--files", *files, "--results", *i.results, *repo,
         "--out", snakemake.output[0]], snakemake.log[0])
finally:
    os.remove(cfg)
