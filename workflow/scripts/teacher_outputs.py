# Teacher outputs of one seed, every tensor the study's methods take from the teacher, on a leased device.
from segdistill.jobs import run_on_devices
from segdistill.specs import TeacherOutputsSpec
from segdistill.study import read_teacher_terms

i, p = snakemake.input, snakemake.params
spec = TeacherOutputsSpec(
    config=i.config,
    teacher_config=i.teacher_config,
    distill_terms=read_teacher_terms(i.terms),
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
    launch_log_dir=p.launch_logs,
)
