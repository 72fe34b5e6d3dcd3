from segdistill.data import generate
from segdistill.jobs import log_to

p = snakemake.params
with log_to(snakemake.log[0]):
    generate(
        snakemake.output[0],
        num_images=p.num_images,
        size=p.size,
        seed=p.seed,
        split=tuple(p.split),
        class_names=p.class_names,
        disc_radius=tuple(p.disc_radius),
    )
