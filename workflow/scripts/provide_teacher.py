# The user's trained teacher: fetched (URL, pinned SHA-256) or taken (path), loaded strictly, copied into the run.
from segdistill.jobs import log_to
from segdistill.provided_teacher import provide_teacher

p = snakemake.params
with log_to(snakemake.log[0]):
    provide_teacher(p.weights, p.sha256, snakemake.input.config, snakemake.output.model, snakemake.output.record)
