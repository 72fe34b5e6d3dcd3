from segdistill.jobs import log_to
from segdistill.report.figure_table import FIGURES

with log_to(snakemake.log[0]):
    FIGURES[snakemake.wildcards.figure].draw(snakemake.output[0], **snakemake.params.arguments)
