from segdistill.data import write_validation
from segdistill.jobs import log_to

p = snakemake.params
with log_to(snakemake.log[0]):
    write_validation(
        snakemake.input[0],
        p.num_classes,
        out=snakemake.output[0],
        archive=p.archive,
        ignore_index=p.ignore_index,
        required_splits=p.splits,
        list_names=dict(p.lists),
        allow_outside=p.allow_outside,
    )
