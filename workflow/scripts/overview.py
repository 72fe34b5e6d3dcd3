from segdistill.jobs import run

i, o = snakemake.input, snakemake.output
run(["overview", "--summary", i.summary, "--stats", i.stats, "--cost", i.cost, "--export", i.export,
     "--provenance", i.provenance, "--out_rst", o.rst, "--out_html", o.html], snakemake.log[0])
