# Every method's terms against both (untrained) models at the study's input size, before anything trains.
from segdistill.distill.check import check_terms
from segdistill.jobs import log_to

i = snakemake.input
with log_to(snakemake.log[0]):
    check_terms(i.student, i.teacher, list(i.terms), snakemake.output[0], cache=snakemake.params.cache)
