from segdistill.data import write_validation
from segdistill.jobs import log_to

with log_to(snakemake.log[0]):
    write_validation(snakemake.input[0], snakemake.params.num_classes, out=snakemake.output[0],
                     archive=snakemake.params.archive)
