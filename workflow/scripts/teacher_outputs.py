# One seed's teacher outputs: the teacher over the distilled runs' training stream, on a leased device.
from segdistill.jobs import run_on_devices
from segdistill.specs import TeacherOutputsSpec

i, p = snakemake.input, snakemake.params
spec = TeacherOutputsSpec(
    config=i.config,
    teacher_config=i.teacher_config,
    distill=list(i.terms),
    out=snakemake.output[0],
    data_root=i.data,
    seed=int(snakemake.wildcards.seed),
    ranks=p.ranks,
    data_record=i.validation,
    **p.cache,
)
run_on_devices(
    spec,
    snakemake.log[0],
    gpus=snakemake.resources.gpu,
    threads=snakemake.threads,
    launch_log_dir=f"logs/teacher_outputs/launch_seed{snakemake.wildcards.seed}",
)
