# The study's split lists of a data set PaddleSeg names by type, and its validation record (data.source paddleseg).
from segdistill.data.splits import write_splits
from segdistill.jobs import log_to

p = snakemake.params
with log_to(snakemake.log[0]):
    write_splits(
        snakemake.input.config,
        p.selection["selection_images"],
        p.selection.get("selection_seed", 0),
        out=dict(p.lists),
        record=snakemake.output.validation,
    )
