from segdistill.evaluate import evaluate_run
from segdistill.jobs import log_to
from segdistill.specs import EvaluateSpec

i, p = snakemake.input, snakemake.params
with log_to(snakemake.log[0]):
    evaluate_run(
        EvaluateSpec(
            config=i.config,
            model=i.model,
            **p.evaluate,
            class_names=list(p.class_names),
            data_root=i.data,
            run=snakemake.wildcards.run,
            out=snakemake.output[0],
        )
    )
