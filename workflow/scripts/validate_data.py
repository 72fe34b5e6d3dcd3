from segdistill.jobs import run

p = snakemake.params
argv = ["validate-data", snakemake.input[0], "--num_classes", p.num_classes, "--ignore_index", p.ignore_index,
        "--splits", *p.splits, "--lists", *(f"{s}={name}" for s, name in p.lists.items()),
        "--out", snakemake.output[0]]
if p.archive:
    argv += ["--archive", p.archive]
run(argv, snakemake.log[0])
