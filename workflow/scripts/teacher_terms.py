# The methods' terms reduced to what the teacher outputs must hold (segdistill.study.teacher_terms).
from segdistill.jobs import log_to
from segdistill.study import write_teacher_terms

with log_to(snakemake.log[0]):
    write_teacher_terms(snakemake.params.terms, snakemake.output[0])
