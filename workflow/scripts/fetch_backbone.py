from pathlib import Path

from segdistill.jobs import log_to
from segdistill.pretrained import fetch_backbone

# The cache is the folder above `<name>/model.pdparams`, i.e. where the rule's output lives.
with log_to(snakemake.log[0]):
    fetch_backbone(snakemake.params.url, str(Path(snakemake.output.model).parents[1]), sha256=snakemake.params.sha256)
