from segdistill.jobs import log_to
from segdistill.report.overview import write_overview

i, o = snakemake.input, snakemake.output
figures = [("Gain per arm with its family-adjusted interval", i.forest)]
figures += [("Gain over the sweep grid", i.sweep)] if i.sweep else []
figures += [("Student vs distilled, paired by seed", i.paired), ("mIoU per arm with 95% intervals", i.means)]
with log_to(snakemake.log[0]):
    write_overview(
        i.summary, i.stats, i.cost, o.rst, o.html, export_json=i.export, provenance_json=i.provenance, figures=figures
    )
