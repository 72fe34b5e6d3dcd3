from segdistill.data import extract_to
from segdistill.jobs import log_to

with log_to(snakemake.log[0]):
    extract_to(snakemake.input[0], snakemake.output[0])
