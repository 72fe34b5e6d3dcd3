from segdistill.jobs import run

argv = ["download", "--url", snakemake.params.url, "--zip", snakemake.output[0]]
if snakemake.params.sha256:
    argv += ["--sha256", snakemake.params.sha256]
run(argv, snakemake.log[0])
