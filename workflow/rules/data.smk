rule make_synthetic:
    output:
        directory("resources/data/synthetic"),
    log:
        "logs/data/make_synthetic.log",
    localrule: True
    conda:
        "../envs/segdistill.yaml"
    params:
        **JOB_CONFIG["data"]["synthetic"],
        class_names=config["data"]["class_names"],
    script:
        "../scripts/make_synthetic.py"


rule download_optic_disc:
    output:
        "resources/downloads/optic_disc_seg.zip",
    log:
        "logs/data/download_optic_disc.log",
    localrule: True
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


# A data set in PaddleSeg's generic layout, as an archive (zip or tar.gz) at a URL.
if config["data"]["source"] == "url":

    rule download_dataset:
        output:
            DATA_ARCHIVE,
        log:
            "logs/data/download_dataset.log",
        localrule: True
        conda:
            "../envs/segdistill.yaml"
        params:
            url=config["data"]["url"]["url"],
            sha256=config["data"]["url"]["sha256"],
        script:
            "../scripts/download.py"

    rule extract_dataset:
        input:
            DATA_ARCHIVE,
        output:
            directory(DATA_ROOT),
        log:
            "logs/data/extract_dataset.log",
        conda:
            "../envs/segdistill.yaml"
        script:
            "../scripts/extract.py"


if config["data"]["source"] == "paddleseg":

    # The data set the student YAML names by type: listed by name, split (test = its val_dataset, val = drawn
    # out of train), every pair checked, the split lists written; the other jobs read only these lists.
    rule validate_data:
        input:
            data=DATA_ROOT,
            config=config["student"]["config"],
            bases=base_files(config["student"]["config"]),
        output:
            validation="results/data/validation.json",
            splits=list(SPLIT_FILES.values()),
        log:
            "logs/data/validate_data.log",
        conda:
            "../envs/segdistill.yaml"
        params:
            selection=JOB_CONFIG["data"]["paddleseg"],
            lists=SPLIT_FILES,
        script:
            "../scripts/paddleseg_splits.py"

else:

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
            archive=DATA_ARCHIVE,
            lists=study.list_files(config),
            allow_outside=study.allow_outside_paths(config),
            splits=study.required_splits(config),
            ignore_index=study.ignore_index(config),
        script:
            "../scripts/validate_data.py"


# Offline, the error names resources/pretrained/{name}/download/<file>: a file put there is what the rerun reads.
rule fetch_backbone:
    output:
        model="resources/pretrained/{name}/model.pdparams",
        source="resources/pretrained/{name}/source.json",
    log:
        "logs/data/fetch_backbone_{name}.log",
    localrule: True
    conda:
        "../envs/segdistill.yaml"
    params:
        url=lambda wc: backbone_url(wc.name),
        sha256=lambda wc: config["pretrained_sha256"].get(backbone_url(wc.name)),
    script:
        "../scripts/fetch_backbone.py"
