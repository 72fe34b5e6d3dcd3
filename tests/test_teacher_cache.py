"""Teacher outputs computed once: a float32 cache trains exactly as the online teacher, float16 within its
rounding, and a cache made for another stream, teacher, data or terms is refused by the field that differs."""

import json

from segdistill.paddle_env import paddle

import numpy as np
import pytest

from conftest import ROOT, STUDENT, tiny_spec
from segdistill.data.digest import data_digest
from segdistill.data.fetch import sha256_of
from segdistill.distill import cache, teachers
from segdistill.errors import SegDistillError
from segdistill.specs import TeacherOutputsSpec
from segdistill.trainer import Trainer, TrainSpec

TERMS = [
    {"loss": "kl", "weight": 3},
    {
        "name": "cwd",
        "student": "head.aspp",
        "teacher": "head.aspp",
        "loss": "cwd",
        "weight": 3,
        "temperature": 4,
        "connector": "conv1x1_bn",
    },
]
SEED, ITERS = 3, 4


def weights(path):
    return {k: v.numpy() for k, v in paddle.load(str(path)).items()}


def terms_file(tmp_path, terms, name="terms.yml"):
    import yaml

    path = tmp_path / name
    path.write_text(yaml.safe_dump({"terms": terms}))
    return str(path)


def make_cache(tmp_path, patched_teacher, data, dtype, terms=TERMS, seed=SEED, name=None, **kw):
    out = tmp_path / (name or f"cache_{dtype}")
    spec = TeacherOutputsSpec(
        config=STUDENT,
        teacher_config=patched_teacher,
        distill=[terms_file(tmp_path, terms)],
        out=str(out),
        data_seed=seed,
        data_root=str(data),
        iters=ITERS,
        dtype=dtype,
        **kw,
    )
    cache.write_teacher_outputs(spec, log=lambda m: None)
    return out


def run(tmp_path, name, data, patched_teacher, terms=TERMS, **kw):
    spec = tiny_spec(
        data,
        tmp_path / name,
        seed=SEED,
        iters=ITERS,
        save_interval=2,
        log_iters=1,
        do_eval=True,
        teacher_config=patched_teacher,
        distill_terms=terms,
        **kw,
    )
    return Trainer(spec, log=lambda m: None)


def cached_spec(data, tmp_path, patched_teacher, cache, **kw):
    """A KL run of the tiny student (seed SEED, ITERS iterations) reading the teacher outputs in `cache`."""
    fields = {"seed": SEED, "iters": ITERS, "distill_terms": [{"loss": "kl", "weight": 3}], **kw}
    return tiny_spec(data, tmp_path / "run", teacher_config=patched_teacher, teacher_outputs=str(cache), **fields)


@pytest.fixture(scope="module")
def online(tiny_data, patched_teacher, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("online")
    summary = run(tmp, "run", tiny_data, patched_teacher).run()
    return tmp / "run", summary


def test_float32_cache_trains_byte_identical_to_online(online, tiny_data, patched_teacher, tmp_path):
    folder = make_cache(tmp_path, patched_teacher, tiny_data, "float32")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["stream"] == {
        "data_seed": SEED,
        "batch_size": 4,
        "ranks": 1,
        "global_batch": 4,
        "iterations": ITERS,
    }
    # DeepLabV3P: the head's logits are stored (1/4 of 32x32) and upsampled when read
    assert manifest["tensors"]["logits"]["shape"] == [ITERS, 4, 2, 8, 8]
    assert manifest["tensors"]["logits"]["upsample"] == {"mode": "bilinear", "align_corners": False, "size": [32, 32]}
    assert manifest["tensors"]["head.aspp"]["shape"] == [ITERS, 4, 256, 4, 4]
    trainer = run(tmp_path, "cached", tiny_data, patched_teacher, teacher_outputs=str(folder))
    assert trainer.distiller.teacher is None  # no teacher model in the distill job
    summary = trainer.run()
    ref, _ = online
    for f in ("train_log.csv", "eval_log.csv"):
        assert (tmp_path / "cached" / f).read_bytes() == (ref / f).read_bytes(), f
    # Bit for bit; not the file's bytes: a .pdparams pickles parameter names, which count every model this test
    # process built before (the workflow's jobs are separate processes).
    got, want = weights(tmp_path / "cached/best_model/model.pdparams"), weights(ref / "best_model/model.pdparams")
    assert list(got) == list(want)
    assert all(got[k].dtype == want[k].dtype and got[k].tobytes() == want[k].tobytes() for k in want)
    assert summary["teacher_outputs"]["mode"] == "cached"
    assert summary["teacher_outputs"]["manifest_sha256"] == sha256_of(folder / "manifest.json")
    assert json.loads((ref / "train_summary.json").read_text())["teacher_outputs"] == {
        "mode": "online",
        "teacher_precision": "fp32",
    }


# The field's methods (docs/methods.md), one term each; skd_pairwise across channel counts (256 -> 512).
METHOD_TERMS = [
    {"name": "dist", "loss": "dist"},
    {"name": "kl_std", "loss": "kl", "options": {"standardize": True, "temperature": 2}},
    {"name": "skd", "student": "backbone.bb_2_1", "teacher": "backbone.bb_3_1", "loss": "skd_pairwise"},
    {"name": "ifvd", "student": "head.aspp", "teacher": "head.aspp", "loss": "ifvd", "weight": 10},
    {"name": "cirkd", "student": "head.aspp", "teacher": "head.aspp", "loss": "cirkd_pixel"},
    {"name": "mgd", "student": "head.aspp", "teacher": "head.aspp", "loss": "mgd", "options": {"alpha": 1e-3}},
]


def test_float32_cache_trains_the_field_methods_byte_identical_to_online(tiny_data, patched_teacher, tmp_path):
    folder = make_cache(tmp_path, patched_teacher, tiny_data, "float32", terms=METHOD_TERMS)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["tensors"]) == {"logits", "backbone.bb_3_1", "head.aspp"}  # what the terms need
    online = run(tmp_path, "online", tiny_data, patched_teacher, terms=METHOD_TERMS)
    on = online.run()
    cached = run(tmp_path, "cached", tiny_data, patched_teacher, terms=METHOD_TERMS, teacher_outputs=str(folder))
    assert cached.distiller.teacher is None
    off = cached.run()
    logs = [(tmp_path / d / "train_log.csv").read_text() for d in ("online", "cached")]
    assert logs[0] == logs[1]
    import csv

    rows = list(csv.DictReader(logs[0].splitlines()))
    for name in ("dist", "kl_std", "skd", "ifvd", "cirkd", "mgd"):  # every term took part, with a finite value
        assert all(np.isfinite(float(r[name])) and float(r[name]) > 0 for r in rows), name
    got, want = (weights(tmp_path / d / "best_model/model.pdparams") for d in ("cached", "online"))
    assert list(got) == list(want) and all(got[k].tobytes() == want[k].tobytes() for k in want)
    # MGD's generator is in the checkpoint beside the student (it resumes), not in the student's weights
    state = weights(tmp_path / f"cached/iter_{ITERS}/model.pdparams")
    assert any(".connectors.module5.conv1.weight" in k for k in state), list(state)[-5:]
    assert not any("module5" in k for k in got)
    assert on["best_miou"] == off["best_miou"]


def test_float16_cache_within_rounding_and_miou(online, tiny_data, patched_teacher, tmp_path):
    folder = make_cache(tmp_path, patched_teacher, tiny_data, "float16")
    trainer = run(tmp_path, "online_probe", tiny_data, patched_teacher)  # an online source for the same stream
    stored = {n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in ("logits", "head.aspp")}
    from segdistill.distill.recorder import Recorder

    teacher = trainer.distiller.teacher
    for it in (1, ITERS):
        images, _ = trainer.stream.batch(it)
        with paddle.no_grad(), Recorder(teacher, ["head", "head.aspp"]) as rec:
            logits = teacher(paddle.to_tensor(images))[0]
        # stored = the online teacher's float32 tensors rounded to float16, exactly
        assert np.array_equal(stored["logits"][it - 1], rec["head"].numpy().astype(np.float16))
        assert np.array_equal(stored["head.aspp"][it - 1], rec["head.aspp"].numpy().astype(np.float16))
        read = cached_source(folder, trainer).features(None, it)
        want = logits.numpy()
        # bilinear weights sum to 1: the error stays within one float16 rounding of the largest input
        assert np.abs(read["logits"].numpy() - want).max() <= np.abs(want).max() * 2.0**-11 + 1e-6
    cached = run(tmp_path, "cached16", tiny_data, patched_teacher, teacher_outputs=str(folder)).run()
    _, ref = online
    assert abs(cached["best_miou"] - ref["best_miou"]) <= 0.005


def cached_source(folder, trainer):
    """The cache read as a distill job of `trainer`'s stream reads it."""
    from segdistill.paddleseg_yaml import read_yaml

    weights = teachers.teacher_weights(read_yaml(trainer.spec.teacher_config), trainer.spec.teacher_config)
    expected = {
        "stream": cache.stream_key(trainer.stream, trainer.iters),
        "weights": str(weights),
        "weights_sha256": sha256_of(weights),
        "data_sha256": data_digest(trainer.dic["train_dataset"], trainer.train_ds),
    }
    source = cache.CachedTeacher(folder, expected)
    source.check_names(["logits", "head.aspp"])
    return source


def test_bfloat16_round_trip():
    x = np.array([1.0, -2.5, 3.14159, 1e-3, 65504.0, 1.00390625, 1.01171875], dtype=np.float32)
    back = cache._decode(cache._encode(x, "bfloat16"), "bfloat16")
    assert np.all(np.abs(back - x) <= np.abs(x) * 2.0**-8)
    # ties round to even: 1 + 2^-8 -> 1, 1 + 3*2^-8 -> 1 + 2^-6
    assert back[5] == 1.0 and back[6] == np.float32(1.015625)


@pytest.fixture(scope="module")
def f16_cache(tiny_data, patched_teacher, tmp_path_factory):
    return make_cache(
        tmp_path_factory.mktemp("f16"), patched_teacher, tiny_data, "float16", terms=[{"loss": "kl", "weight": 3}]
    )


@pytest.mark.parametrize(
    "change, field",
    [
        ({"seed": SEED + 1}, "stream.data_seed"),
        ({"batch_size": 2}, "stream.global_batch"),
        ({"terms": TERMS}, r"tensors: the cache has no teacher tensor\(s\) \['head.aspp'\]"),
        ({"iters": ITERS + 2}, "stream.iterations"),
    ],
)
def test_mismatch_is_refused_by_field(f16_cache, tiny_data, patched_teacher, tmp_path, change, field):
    change = {k if k != "terms" else "distill_terms": v for k, v in change.items()}
    with pytest.raises(SegDistillError, match=field):
        Trainer(cached_spec(tiny_data, tmp_path, patched_teacher, f16_cache, **change), log=lambda m: None)


def test_other_teacher_or_data_is_refused(f16_cache, tiny_data, patched_teacher, tmp_path):
    import yaml

    other = tmp_path / "other.pdparams"
    state = paddle.load(yaml.safe_load(open(patched_teacher))["model"]["pretrained"])
    key = next(iter(state))
    state[key] = state[key] + 1
    paddle.save(state, str(other))
    from segdistill.paddleseg_yaml import patch_teacher

    patch_teacher(str(ROOT / "tests/configs/teacher_tiny.yml"), other, tmp_path / "other.yml")
    base = dict(
        config=STUDENT,
        save_dir=str(tmp_path / "run"),
        data_root=str(tiny_data),
        seed=SEED,
        iters=ITERS,
        distill_terms=[{"loss": "kl", "weight": 3}],
        teacher_outputs=str(f16_cache),
    )
    with pytest.raises(SegDistillError, match="teacher.weights_sha256"):
        Trainer(TrainSpec(teacher_config=str(tmp_path / "other.yml"), **base), log=lambda m: None)
    record = tmp_path / "validation.json"
    record.write_text("{}")
    with pytest.raises(SegDistillError, match="data.sha256 differs"):
        Trainer(TrainSpec(teacher_config=patched_teacher, data_record=str(record), **base), log=lambda m: None)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[: len(b) // 2], r"logits.npy: \d+ bytes, the manifest records \d+ \(truncated"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), r"logits.npy: content differs from the manifest's SHA-256"),
    ],
)
def test_a_truncated_or_altered_cache_file_is_named_before_the_first_step(
    f16_cache, tiny_data, patched_teacher, tmp_path, damage, message
):
    """Half a file (its .npy header intact) or one changed bit: one error naming the file when the cache is opened,
    not a reshape error deep in the run."""
    import shutil

    folder = tmp_path / "cache"
    shutil.copytree(f16_cache, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["tensors"]["logits"]["sha256"] == sha256_of(folder / "logits.npy")
    data = (folder / "logits.npy").read_bytes()
    (folder / "logits.npy").write_bytes(damage(data))
    with pytest.raises(SegDistillError, match=message):
        Trainer(cached_spec(tiny_data, tmp_path, patched_teacher, folder), log=lambda m: None)
    assert not (tmp_path / "run").exists()  # refused before anything was trained or written


def test_over_max_gb_stops_before_writing(tiny_data, patched_teacher, tmp_path):
    with pytest.raises(SegDistillError, match=r"need 0\.\d+ GB .* over cache.max_gb 1e-06.*online"):
        make_cache(tmp_path, patched_teacher, tiny_data, "float32", name="big", max_gb=1e-6)
    assert not any(tmp_path.glob("*big*"))  # nothing that looks like a cache, no temporary left


def test_one_job_writes_every_seeds_cache_as_one_job_per_seed_would(tiny_data, patched_teacher, tmp_path):
    """The workflow's teacher-outputs job for the seeds sharing a teacher: a spec file with one spec per seed,
    run by `segdistill teacher-outputs --spec` in one process, writes each seed's cache byte for byte as a job
    for that seed alone; the job logs one [time] line for all of them."""
    import subprocess
    import sys

    from segdistill.specs import write_spec
    from segdistill.timing import parse_log

    terms = terms_file(tmp_path, TERMS)

    def spec(seed, out):
        return TeacherOutputsSpec(
            config=STUDENT,
            teacher_config=patched_teacher,
            distill=[terms],
            out=str(out),
            seed=seed,
            data_root=str(tiny_data),
            iters=ITERS,
        )

    alone = tmp_path / "alone_seed5"
    cache.write_teacher_outputs(spec(5, alone), log=lambda m: None)
    job = write_spec([spec(4, tmp_path / "job/seed4"), spec(5, tmp_path / "job/seed5")], tmp_path / "spec.json")
    proc = subprocess.run(
        [sys.executable, "-m", "segdistill.cli", "teacher-outputs", "--spec", str(job)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = sorted(p.name for p in alone.iterdir())
    assert files == sorted(p.name for p in (tmp_path / "job/seed5").iterdir()) and "manifest.json" in files
    for name in files:
        assert (alone / name).read_bytes() == (tmp_path / "job/seed5" / name).read_bytes(), name
    seed4 = json.loads((tmp_path / "job/seed4/manifest.json").read_text())
    assert seed4["stream"] != json.loads((alone / "manifest.json").read_text())["stream"]  # its own stream
    assert proc.stderr.count("[time] ") == 1 and parse_log(proc.stderr)["teacher_forward"] > 0


def test_a_spec_file_of_several_specs_is_refused_by_a_one_spec_command(tmp_path, capsys):
    from segdistill.cli import main
    from segdistill.specs import EvaluateSpec, write_spec

    job = write_spec([EvaluateSpec(config="a.yml", model="m"), EvaluateSpec(config="b.yml", model="m")], tmp_path / "s")
    assert main(["evaluate", "--spec", str(job)]) == 2
    assert f"segdistill: error: {job}: holds 2 specs; `evaluate` runs one" in capsys.readouterr().err
    with pytest.raises(SegDistillError, match="one job runs specs of one kind"):
        write_spec([EvaluateSpec(config="a.yml", model="m"), TeacherOutputsSpec("s", "t", "o")], tmp_path / "t")


def test_the_cache_size_is_known_and_refused_before_anything_trains(tiny_data, patched_teacher, tmp_path):
    """check_terms (which every training job waits for) computes the size the cache job will take, the same line
    it logs, and refuses a cache over cache.max_gb, naming teacher.outputs: online."""
    from segdistill.distill.check import check_terms
    from segdistill.distill.terms import read_terms_file

    job, early = [], []
    spec = TeacherOutputsSpec(
        config=STUDENT,
        teacher_config=patched_teacher,
        distill=[terms_file(tmp_path, TERMS)],
        out=str(tmp_path / "cache"),
        data_seed=SEED,
        data_root=str(tiny_data),
        dtype="float16",
    )
    cache.write_teacher_outputs(spec, log=job.append)
    sizes = {"dtype": "float16", "max_gb": 8, "ranks": 1}
    methods = {"m": read_terms_file(spec.distill[0])}
    check_terms(STUDENT, patched_teacher, methods, tmp_path / "c.json", tiny_data, early.append, sizes)
    line = next(m for m in early if "teacher outputs:" in m)
    assert line == f"{STUDENT}: {next(m for m in job if m.startswith('teacher outputs:'))}"
    with pytest.raises(SegDistillError, match=r"need 0\.\d+ GB .* over cache.max_gb 1e-06\. .*teacher.outputs: online"):
        check_terms(STUDENT, patched_teacher, methods, tmp_path / "d.json", tiny_data, print, dict(sizes, max_gb=1e-6))
    assert not (tmp_path / "d.json").exists()
