from segdistill.data import download
from segdistill.jobs import log_to

with log_to(snakemake.log[0]):
    download(snakemake.params.url, snakemake.output[0], sha256=snakemake.params.sha256 or None)
