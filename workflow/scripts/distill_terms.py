# Write the method's terms out in full (the student YAML's `distill_loss` when the study gives none),
# so every distilled run records exactly what it optimised.
from segdistill.distill.terms import write_terms_file
from segdistill.jobs import log_to

with log_to(snakemake.log[0]):
    write_terms_file(
        snakemake.params.spec["terms"],
        snakemake.input.student_config,
        snakemake.output[0],
        source=f"distill.{snakemake.wildcards.method}.terms",
    )
