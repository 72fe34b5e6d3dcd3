from segdistill.jobs import log_to
from segdistill.report.stats import write_stats

p = snakemake.params
with log_to(snakemake.log[0]):
    write_stats(snakemake.input.evals, snakemake.output[0], split=p.split, min_effect=p.min_effect)
