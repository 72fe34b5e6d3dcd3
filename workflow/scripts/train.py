# Teacher, student and distilled runs: one trainer, leased devices (see segdistill.devices).
from segdistill.jobs import run_on_devices
from segdistill.specs import TrainSpec

i, p = snakemake.input, snakemake.params
distill = {"teacher_config": i.teacher_config, "distill": i.terms} if "teacher_config" in i.keys() else {}
cached = {"teacher_outputs": i.teacher_outputs, "data_record": i.validation} if "teacher_outputs" in i.keys() else {}
spec = TrainSpec(
    config=i.config,
    save_dir=p.save_dir,
    data_root=i.data,
    seed=int(snakemake.wildcards.seed),
    do_eval=p.do_eval,
    class_names=list(p.class_names),
    pretrained_backbone=p.pretrained_backbones,
    evaluate_out=snakemake.output.evaluation,
    evaluate=dict(p.evaluate),
    run_id=p.run,
    final_checkpoint=False,  # a finished run is never resumed: its last checkpoint would only be written
    **p.train,
    **distill,
    **cached,
)
run_on_devices(
    spec,
    snakemake.log[0],
    gpus=snakemake.resources.gpu,
    threads=snakemake.threads,
    launch_log_dir=f"{p.save_dir}/launch_logs",
)
