from segdistill.jobs import log_to
from segdistill.predict import predict

i = snakemake.input
with log_to(snakemake.log[0]):
    predict(i.model, i.images, snakemake.output[0], batch_size=snakemake.params.batch_size, device="cpu")
