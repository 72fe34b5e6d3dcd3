from segdistill.jobs import run

o, p = snakemake.output, snakemake.params
run(["export", *snakemake.input.evals, "--data_root", snakemake.input.data, "--tol", p.tol, "--split", p.split, "--out_dir", o.model,
     "--out_json", o.json], snakemake.log[0])
