from segdistill.jobs import log_to
from segdistill.report.summary import write_summary

i, o = snakemake.input, snakemake.output
with log_to(snakemake.log[0]):
    write_summary(
        i.evals, i.stats, o.csv, o.md, split=snakemake.params.split, final_weights=snakemake.params.final_weights
    )
