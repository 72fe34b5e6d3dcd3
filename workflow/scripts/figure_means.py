from segdistill.jobs import log_to
from segdistill.report.figures import arm_means

with log_to(snakemake.log[0]):
    arm_means(snakemake.input[0], snakemake.output[0], split=snakemake.params.split)
