# Write the study's PaddleSeg YAMLs (the user's files are never edited), checked with PaddleSeg's registry.
from segdistill.jobs import log_to
from segdistill.study import write_configs

with log_to(snakemake.log[0]):
    write_configs(
        snakemake.params.data, snakemake.input.teacher, snakemake.input.student, dict(snakemake.output.items())
    )
