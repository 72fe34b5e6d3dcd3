from segdistill.jobs import log_to
from segdistill.report.summary import write_summary

with log_to(snakemake.log[0]):
    write_summary(snakemake.input.evals, snakemake.output.csv, snakemake.output.md, split=snakemake.params.split)
