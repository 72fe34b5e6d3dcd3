from segdistill.jobs import log_to
from segdistill.report.figures import paired_lines

with log_to(snakemake.log[0]):
    paired_lines(snakemake.input[0], snakemake.output[0], split=snakemake.params.split)
