"""The workflow's data stage with the optic disc source, against a real HTTP server on loopback, and config
errors caught before any job runs."""

import hashlib
import json
import socket

import pytest
import yaml

from conftest import classless_configs, run_snakemake, tiny_config
from data_helpers import serve, zip_dir
from segdistill.data import generate


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("www")
    generate(base / "src", num_images=8, size=32, seed=1)
    www = base / "www"
    www.mkdir()
    data = zip_dir(base / "src", www / "optic_disc_seg.zip").read_bytes()
    with serve(www) as url:
        yield f"{url}/optic_disc_seg.zip", hashlib.sha256(data).hexdigest()


def optic_config(workdir, url, sha256):
    return tiny_config(
        workdir,
        data={
            "source": "optic_disc",
            "class_names": ["background", "optic_disc"],
            "optic_disc": {"url": url, "sha256": sha256},
        },
    )


def test_download_rule_with_good_checksum(server, tmp_path):
    url, digest = server
    config = optic_config(tmp_path, url, digest)
    run_snakemake(tmp_path, "results/data/validation.json", "--cores", "1", "--configfile", config)
    record = json.loads((tmp_path / "results/data/validation.json").read_text())
    assert record["archive"]["sha256"] == digest
    assert record["splits"]["train"] > 0
    assert (tmp_path / "resources/data/optic_disc_seg/train_list.txt").is_file()


def test_download_rule_with_bad_checksum_fails_and_leaves_nothing(server, tmp_path):
    url, digest = server
    config = optic_config(tmp_path, url, "0" * 64)
    proc = run_snakemake(tmp_path, "results/data/validation.json", "--cores", "1", "--configfile", config, check=False)
    assert proc.returncode != 0
    log = (tmp_path / "logs/data/download_optic_disc.log").read_text()
    assert "0" * 64 in log and digest in log
    assert not (tmp_path / "resources/downloads/optic_disc_seg.zip").exists()


def test_unreachable_url_says_where_to_put_the_zip(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = optic_config(tmp_path, f"http://127.0.0.1:{port}/optic_disc_seg.zip", None)
    proc = run_snakemake(tmp_path, "results/data/validation.json", "--cores", "1", "--configfile", config, check=False)
    assert proc.returncode != 0
    log = (tmp_path / "logs/data/download_optic_disc.log").read_text()
    assert "resources/downloads/optic_disc_seg.zip" in log


def test_schema_violation_names_the_key(tmp_path):
    config = tiny_config(tmp_path, seeds=[-1])
    proc = run_snakemake(tmp_path, "-n", "--configfile", config, check=False)
    assert proc.returncode != 0
    assert "seeds" in proc.stderr + proc.stdout and "-1" in proc.stderr + proc.stdout


def test_study_error_stops_before_any_training(tmp_path):
    # Loss names are checked against the loss registry (paddle) in the distill_terms job, which every training
    # job waits for; parsing stays paddle-free.
    cfg = yaml.safe_load(tiny_config(tmp_path).read_text())
    cfg["distill"]["kl_cwd"]["terms"][1]["loss"] = "nope"
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(cfg))
    proc = run_snakemake(tmp_path, "--cores", "2", "--configfile", tmp_path / "study.yaml", check=False)
    assert proc.returncode != 0
    log = (tmp_path / "logs/distill_terms/kl_cwd.log").read_text()
    assert "distill.kl_cwd.terms[1].loss: unknown loss 'nope'" in log
    assert not (tmp_path / "results/runs").exists() and not (tmp_path / "logs/train").exists()


def test_url_data_set_in_generic_layout(tmp_path):
    """data.source: url: a tar.gz of a 3-class folder, downloaded with its checksum, extracted, validated."""
    import tarfile

    from data_helpers import make_generic_dataset

    www = tmp_path / "www"
    www.mkdir()
    src = make_generic_dataset(tmp_path / "src", ("sky", "road", "car"), counts={"train": 3, "val": 2, "test": 2})
    with tarfile.open(www / "mine.tar.gz", "w:gz") as tf:
        tf.add(src, arcname="mine")
    digest = hashlib.sha256((www / "mine.tar.gz").read_bytes()).hexdigest()
    configs = classless_configs(tmp_path / "configs")
    with serve(www) as base:
        config = tiny_config(
            tmp_path,
            data={
                "source": "url",
                "class_names": ["sky", "road", "car"],
                "url": {"url": f"{base}/mine.tar.gz", "sha256": digest},
            },
            teacher={"config": str(configs["teacher"])},
            student={"config": str(configs["student"])},
        )
        run_snakemake(tmp_path, "results/data/validation.json", "--cores", "1", "--configfile", config)
    record = json.loads((tmp_path / "results/data/validation.json").read_text())
    assert record["splits"] == {"train": 3, "val": 2, "test": 2} and record["num_classes"] == 3
    assert record["archive"]["sha256"] == digest
    assert record["root"].startswith("resources/data/url-")
