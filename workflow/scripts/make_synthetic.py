from segdistill.jobs import run

p = snakemake.params
run(["make-synthetic", "--out", snakemake.output[0], "--num_images", p.num_images, "--size", p.size,
     "--seed", p.seed, "--split", *p.split], snakemake.log[0])
