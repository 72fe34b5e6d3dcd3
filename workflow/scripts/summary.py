from segdistill.jobs import log_to
from segdistill.report.summary import write_summary

o = snakemake.output
with log_to(snakemake.log[0]):
    write_summary(snakemake.input.evals, o.csv, o.md, split=snakemake.params.split)
