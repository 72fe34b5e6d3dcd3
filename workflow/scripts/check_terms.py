# Every method's terms against both (untrained) models at the study's input size, before anything trains.
from segdistill.distill.check import check_terms
from segdistill.jobs import log_to

study = snakemake.params.study.value
with log_to(snakemake.log[0]):
    check_terms(
        snakemake.input.student,
        snakemake.input.teacher,
        study["methods"],
        snakemake.output[0],
        cache=study["cache"],
    )
