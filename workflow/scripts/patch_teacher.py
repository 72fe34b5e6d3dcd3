# The tutorial's step 2.5 on a copy, proven to load every teacher parameter before it is kept.
from segdistill.config import patch_teacher
from segdistill.jobs import log_to

with log_to(snakemake.log[0]):
    patch_teacher(snakemake.input.config, snakemake.input.weights, snakemake.output[0])
