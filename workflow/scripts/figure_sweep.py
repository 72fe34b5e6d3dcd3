from segdistill.jobs import log_to
from segdistill.report.arm_figures import sweep_grid

with log_to(snakemake.log[0]):
    sweep_grid(snakemake.input[0], snakemake.output[0])
