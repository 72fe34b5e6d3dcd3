from segdistill.jobs import log_to
from segdistill.report.arm_figures import forest

with log_to(snakemake.log[0]):
    forest(snakemake.input[0], snakemake.output[0])
