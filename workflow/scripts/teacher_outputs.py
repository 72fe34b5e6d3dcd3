# Teacher outputs of one seed, or of every seed that shares the teacher (one process: one start-up), on a leased
# device.
from segdistill.jobs import run_on_devices
from segdistill.specs import TeacherOutputsSpec

i, p = snakemake.input, snakemake.params
specs = [
    TeacherOutputsSpec(
        config=i.config,
        teacher_config=i.teacher_config,
        distill=list(i.terms),
        out=out,
        data_root=i.data,
        seed=int(seed),
        ranks=p.ranks,
        data_record=i.validation,
        **p.cache,
    )
    for seed, out in zip(p.seeds, snakemake.output, strict=True)
]
run_on_devices(
    specs,
    snakemake.log[0],
    gpus=snakemake.resources.gpu,
    threads=snakemake.threads,
    launch_log_dir=p.launch_logs,
)
