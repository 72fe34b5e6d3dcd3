# Latency depends on the threads and device the job gets: run it under a device lease like training.
from segdistill.jobs import run_on_devices
from segdistill.specs import CostSpec
from segdistill.study import test_config_override

i = snakemake.input
spec = CostSpec(
    teacher_config=i.teacher_config,
    teacher_model=i.teacher_model,
    student_config=i.student_config,
    student_model=i.student_model,
    runs=snakemake.params.runs,
    out=snakemake.output[0],
    # The study's protocol for every model, else each YAML's own.
    test_config=test_config_override(snakemake.params.evaluate),
)
run_on_devices(
    spec,
    snakemake.log[0],
    gpus=snakemake.resources.gpu,
    threads=snakemake.threads,
    launch_log_dir="logs/report/cost_launch",
)
