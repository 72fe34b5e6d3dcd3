from segdistill.jobs import run

p = snakemake.params
run(["evaluate", "--config", snakemake.input.config, "--model", snakemake.input.model, "--data_root", snakemake.input.data,
     "--run", snakemake.wildcards.run, "--split", *p.splits, "--class_names", *p.class_names,
     "--out", snakemake.output[0]], snakemake.log[0])
