from segdistill.jobs import log_to
from segdistill.report.figures import curves

with log_to(snakemake.log[0]):
    curves(snakemake.params.runs, snakemake.output[0])
