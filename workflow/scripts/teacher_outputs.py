# One seed's teacher outputs: the teacher over the distilled runs' training stream, on a leased device.
from segdistill.jobs import run_on_devices

i, p = snakemake.input, snakemake.params
argv = ["teacher-outputs", "--config", i.config, "--teacher_config", i.teacher_config, "--distill", *i.terms,
        "--out", snakemake.output[0], "--data_root", i.data, "--seed", snakemake.wildcards.seed,
        "--ranks", p.ranks, "--dtype", p.cache["dtype"], "--max_gb", p.cache["max_gb"], "--data_record", i.validation]
run_on_devices(argv, snakemake.log[0], gpus=snakemake.resources.gpu, threads=snakemake.threads,
               launch_log_dir=f"logs/teacher_outputs/launch_seed{snakemake.wildcards.seed}")
