from segdistill.jobs import log_to
from segdistill.report.provenance import write_provenance

i, p = snakemake.input, snakemake.params
with log_to(snakemake.log[0]):
    # The study config as the workflow saw it (after schema defaults), hashed canonically; the repository only
    # when the workflow runs from a git checkout.
    write_provenance(
        snakemake.output[0],
        config=p.config,
        config_files=[*p.configfiles, *i.configs, *i.patched, *i.terms],
        result_files=i.results,
        repo_dir=p.repo or None,
        train_summaries=i.summaries,
        backbones=i.backbones,
    )
