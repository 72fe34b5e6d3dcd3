# Teacher, student and distilled runs: one trainer, leased devices (see segdistill.devices).
from segdistill.jobs import run_on_devices

i, p = snakemake.input, snakemake.params
argv = ["train", "--config", i.config, "--save_dir", p.save_dir, "--data_root", i.data,
        "--seed", snakemake.wildcards.seed, "--do_eval", "--class_names", *p.class_names]
for key in ("save_interval", "log_iters", "keep_checkpoint_max", "precision", "amp_level", "num_workers"):
    argv += [f"--{key}", p.train[key]]
if p.train["use_vdl"]:
    argv.append("--use_vdl")
if p.train.get("deterministic"):
    argv.append("--deterministic")
if not p.pretrained_backbones:
    argv.append("--no_pretrained_backbone")
if "teacher_config" in i.keys():
    argv += ["--teacher_config", i.teacher_config, "--distill", i.terms]
if "teacher_outputs" in i.keys():
    argv += ["--teacher_outputs", i.teacher_outputs, "--data_record", i.validation]
run_on_devices(argv, snakemake.log[0], gpus=snakemake.resources.gpu, threads=snakemake.threads,
               launch_log_dir=f"{p.save_dir}/launch_logs")
