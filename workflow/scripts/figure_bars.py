from segdistill.jobs import log_to
from segdistill.report.figures import miou_bars

with log_to(snakemake.log[0]):
    miou_bars(snakemake.input[0], snakemake.output[0])
