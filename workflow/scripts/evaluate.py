from segdistill.evaluate import evaluate_run
from segdistill.jobs import log_to

i, p = snakemake.input, snakemake.params
with log_to(snakemake.log[0]):
    evaluate_run(i.config, i.model, p.splits, class_names=p.class_names, data_root=i.data,
                 run=snakemake.wildcards.run, out=snakemake.output[0])
