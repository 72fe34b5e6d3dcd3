from segdistill.jobs import log_to
from segdistill.report.figures import exported_samples

i, p = snakemake.input, snakemake.params
with log_to(snakemake.log[0]):
    exported_samples(
        i.export,
        snakemake.output[0],
        p.teacher_config,
        p.student_config,
        p.teacher_runs,
        p.run_models,
        data_root=i.data,
        num_images=p.num_images,
        split=p.split,
    )
