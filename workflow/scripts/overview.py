from segdistill.jobs import log_to
from segdistill.report.figure_table import overview_figures
from segdistill.report.overview import write_overview

i, o = snakemake.input, snakemake.output
with log_to(snakemake.log[0]):
    write_overview(
        i.summary,
        i.stats,
        i.cost,
        o.rst,
        o.html,
        export_json=i.export,
        provenance_json=i.provenance,
        figures=overview_figures(i.figures),
    )
