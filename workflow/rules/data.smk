rule make_synthetic:
    output:
        directory("resources/data/synthetic"),
    log:
        "logs/data/make_synthetic.log",
    conda:
        "../envs/segdistill.yaml"
    params:
        **config["data"]["synthetic"],
    script:
        "../scripts/make_synthetic.py"


rule download_optic_disc:
    output:
        "resources/downloads/optic_disc_seg.zip",
    log:
        "logs/data/download_optic_disc.log",
    conda:
        "../envs/segdistill.yaml"
    params:
        url=config["data"]["optic_disc"]["url"],
        sha256=config["data"]["optic_disc"]["sha256"],
    script:
        "../scripts/download.py"


rule extract_optic_disc:
    input:
        "resources/downloads/optic_disc_seg.zip",
    output:
        directory("resources/data/optic_disc_seg"),
    log:
        "logs/data/extract_optic_disc.log",
    conda:
        "../envs/segdistill.yaml"
    script:
        "../scripts/extract.py"


rule validate_data:
    input:
        DATA_ROOT,
    output:
        "results/data/validation.json",
    log:
        "logs/data/validate_data.log",
    conda:
        "../envs/segdistill.yaml"
    params:
        num_classes=len(config["data"]["class_names"]),
        archive=(
            "resources/downloads/optic_disc_seg.zip"
            if config["data"]["source"] == "optic_disc"
            else None
        ),
    script:
        "../scripts/validate_data.py"


rule fetch_backbone:
    output:
        "resources/pretrained/{name}/model.pdparams",
    log:
        "logs/data/fetch_backbone_{name}.log",
    conda:
        "../envs/segdistill.yaml"
    params:
        url=lambda wc: next(
            u
            for u, p in BACKBONES.items()
            if p.startswith(f"resources/pretrained/{wc.name}/")
        ),
    script:
        "../scripts/fetch_backbone.py"
