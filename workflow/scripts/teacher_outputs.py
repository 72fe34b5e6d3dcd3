# Teacher outputs of one seed, or on every distinct training input (the table the seeds' caches gather from): every
# tensor the study's methods take from the teacher, on a leased device.
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
    seed=p.seed,
    ranks=p.ranks,
    distinct=p.distinct,
    shared=i.get("shared"),
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
