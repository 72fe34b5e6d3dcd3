from segdistill.jobs import log_to
from segdistill.report.stats import write_stats

with log_to(snakemake.log[0]):
    write_stats(snakemake.input.evals, snakemake.output[0], split=snakemake.params.split)
