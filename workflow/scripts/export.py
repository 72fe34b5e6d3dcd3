from segdistill.export import export_best
from segdistill.jobs import log_to

o, p = snakemake.output, snakemake.params
with log_to(snakemake.log[0]):
    export_best(snakemake.input.evals, o.model, o.json, data_root=snakemake.input.data, split=p.split)
