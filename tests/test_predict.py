"""`segdistill predict`: the exported student and its weights give the same class ids as the evaluation, written
as PaddleSeg writes them; bad input is refused in one line with nothing written; the study's `predict.images`."""

import json
import shutil
import subprocess
import sys

from segdistill.paddle_env import paddle

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, job_counts, plan, run_snakemake, tiny_config
from segdistill import cli
from segdistill import predict as P
from segdistill.metrics import ConfusionMatrix

STUDENT = str(ROOT / "tests/configs/student_tiny.yml")
DATA = "resources/data/synthetic"


def ids_of(png) -> np.ndarray:
    img = Image.open(png)
    assert img.mode == "P"
    return np.asarray(img)


def run_cli(*args, cwd):
    """`python -m segdistill.cli predict ...` as a user runs it: (exit code, stderr)."""
    cmd = [sys.executable, "-m", "segdistill.cli", "predict", *map(str, args)]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stderr


def test_palette_png_and_overlay_are_paddleseg_s(tmp_path):
    """PaddleSeg's own visualize functions as the oracle: palette, palette PNG and the 0.6/0.4 overlay."""
    from paddleseg.utils import visualize

    colours = visualize.get_color_map_list(256)
    assert P.PALETTE.reshape(-1).tolist() == colours
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 21, size=(24, 40)).astype(np.uint8)
    image = rng.integers(0, 256, size=(24, 40, 3)).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    P.write_outputs(tmp_path / "out", P.Path("a.png"), image, ids)
    ours = Image.open(tmp_path / "out/pseudo_color_prediction/a.png")
    theirs = visualize.get_pseudo_color_map(ids, colours)
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))
    assert ours.getpalette() == theirs.getpalette()
    added = cv2.imread(str(tmp_path / "out/added_prediction/a.png"))
    assert np.array_equal(added, visualize.visualize(str(tmp_path / "a.png"), ids, colours, weight=0.6))


def test_images_from_a_file_a_folder_or_a_list(tmp_path):
    for rel in ("a.jpg", "sub/b.PNG", "sub/.hidden.png", "notes.txt"):
        (tmp_path / "imgs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "imgs" / rel).write_bytes(b"")
    images, base = P.image_list(tmp_path / "imgs")
    assert images == [tmp_path / "imgs/a.jpg", tmp_path / "imgs/sub/b.PNG"] and base == tmp_path / "imgs"
    assert [str(n) for n in P.output_names(images, base)] == ["a.jpg", "sub/b.PNG"]
    assert P.image_list(tmp_path / "imgs/a.jpg") == ([tmp_path / "imgs/a.jpg"], None)
    lst = tmp_path / "imgs/list.txt"
    lst.write_text("sub/b.PNG labels/b.png\n\na.jpg\n")
    images, base = P.image_list(lst)
    assert images == [tmp_path / "imgs/sub/b.PNG", tmp_path / "imgs/a.jpg"]
    assert [str(n) for n in P.output_names(images, base)] == ["sub/b.PNG", "a.jpg"]
    with pytest.raises(P.SegDistillError, match="its output name a.jpg is also"):
        P.output_names([tmp_path / "x/a.jpg", tmp_path / "y/a.jpg"], None)


@pytest.fixture(scope="module")
def study(tiny_study):
    """The finished tiny study's folder, its export record and the test images' list file."""
    workdir, config = tiny_study
    record = json.loads((workdir / "results/export/export.json").read_text())
    return workdir, config, record


def test_export_and_weights_give_the_evaluation_s_class_ids(study, tmp_path):
    """Both ways of giving the model, over the study's test images: every pixel the same; scored against the
    labels they reproduce the evaluation record's per-class IoU; and PaddleSeg's own inference (the oracle)
    gives the same ids."""
    workdir, _, record = study
    test_list = f"{DATA}/test_list.txt"
    a, b = tmp_path / "from_export", tmp_path / "from_weights"
    rc, err = run_cli("--model", "results/export/best_student", "--images", test_list, "--out", a, "--batch_size", 4,
                      "--threads", 1, cwd=workdir)  # fmt: skip
    assert rc == 0, err
    assert "oneDNN" in err and "predicted 6 image(s)" in err
    rc, err = run_cli("--config", record["config"], "--model", record["weights"], "--images", test_list, "--out", b,
                      "--threads", 1, cwd=workdir)  # fmt: skip
    assert rc == 0, err

    lines = [line.split() for line in (workdir / test_list).read_text().splitlines() if line.strip()]
    assert len(lines) == 6
    run = json.loads((workdir / f"results/eval/{record['run']}.json").read_text())["splits"]["test"]
    cm = ConfusionMatrix(2, 255)
    oracle = _paddleseg_inference(workdir / record["config"], workdir / record["weights"])
    for image, label in lines:
        png = P.Path(image).with_suffix(".png")
        ids = ids_of(a / "pseudo_color_prediction" / png)
        assert np.array_equal(ids, ids_of(b / "pseudo_color_prediction" / png)), image
        assert np.array_equal(ids, oracle(workdir / DATA / image)), image
        for out in (a, b):
            assert (out / "added_prediction" / image).is_file()
        cm.update(ids.astype("int64"), np.asarray(Image.open(workdir / DATA / label)).astype("int64"))
    m = cm.compute()
    assert int(m["num_pixels"]) == run["num_pixels"]
    assert list(m["class_iou"]) == pytest.approx(list(run["class_iou"].values()), abs=1e-12)
    assert not [p for p in a.rglob(".*")]  # no temporary file left


def _paddleseg_inference(config, weights):
    """Class ids of an image by PaddleSeg 2.8's own reading, val transforms and `core.infer.inference`."""
    from paddleseg.core import infer
    from paddleseg.transforms import Compose

    from segdistill.models import load_trained
    from segdistill.paddleseg_yaml import build

    model, dic = load_trained(config, weights)
    transforms = Compose(build(dic, config).val_transforms)

    def ids(path):
        data = transforms({"img": str(path)})
        with paddle.no_grad():
            pred, _ = infer.inference(model, paddle.to_tensor(data["img"][None]), trans_info=data["trans_info"])
        return pred.numpy().reshape(pred.shape[-2:])

    return ids


def test_a_test_config_predicts_as_paddleseg_s_aug_inference(study, tmp_path, capsys, monkeypatch):
    """Under multi-scale + flip (--test_config), the export and the weights still agree on every pixel, and
    equal PaddleSeg's own aug_inference (the oracle) on the same weights."""
    from paddleseg.core import infer
    from paddleseg.transforms import Compose

    from segdistill.models import load_trained
    from segdistill.paddleseg_yaml import build

    workdir, _, record = study
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    tc = "{aug_eval: true, scales: [0.75, 1.0], flip_horizontal: true}"
    images = workdir / DATA / "test_list.txt"
    a, b = tmp_path / "a", tmp_path / "b"
    model = ["--config", workdir / record["config"], "--model", workdir / record["weights"]]
    for out, given in ((a, ["--model", workdir / "results/export/best_student"]), (b, model)):
        argv = ["predict", *map(str, given), "--images", str(images), "--out", str(out), "--test_config", tc]
        assert cli.main(argv) == 0, capsys.readouterr().err
    net, dic = load_trained(workdir / record["config"], workdir / record["weights"])
    transforms = Compose(build(dic, record["config"]).val_transforms)
    for line in images.read_text().split("\n"):
        if not line.strip():
            continue
        image = line.split()[0]
        data = transforms({"img": str(workdir / DATA / image)})
        with paddle.no_grad():
            pred, _ = infer.aug_inference(
                net, paddle.to_tensor(data["img"][None]), data["trans_info"], scales=[0.75, 1.0], flip_horizontal=True
            )
        png = P.Path(image).with_suffix(".png")
        ids = ids_of(a / "pseudo_color_prediction" / png)
        assert np.array_equal(ids, ids_of(b / "pseudo_color_prediction" / png)), image
        assert np.array_equal(ids, pred.numpy().reshape(ids.shape)), image


def _refused(capsys, monkeypatch, out, *argv) -> str:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the command sets it for its paddle; keep this process's as it was
    assert cli.main(["predict", *map(str, argv), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("segdistill: error: ") and "\n" not in err, err
    assert not out.exists()
    return err


def test_bad_input_is_refused_in_one_line_writing_nothing(study, tmp_path, capsys, monkeypatch):
    workdir, _, record = study
    export_dir = workdir / "results/export/best_student"
    weights = ["--config", workdir / record["config"], "--model", workdir / record["weights"]]
    good = sorted((workdir / DATA / "JPEGImages").iterdir())[:2]
    out = tmp_path / "out"

    folder = tmp_path / "imgs"
    folder.mkdir()
    for img in good:
        shutil.copy(img, folder)
    (folder / "zz_broken.png").write_bytes(b"not an image")  # sorted after the good ones: still nothing written
    for model in (["--model", export_dir], weights):
        err = _refused(capsys, monkeypatch, out, *model, "--images", folder)
        assert f"{folder / 'zz_broken.png'}: cannot decode the image" in err

    listed = tmp_path / "list.txt"
    listed.write_text(f"{good[0]}\nmissing.jpg\n")
    assert f"{tmp_path / 'missing.jpg'}: image not found" in _refused(
        capsys, monkeypatch, out, *weights, "--images", listed
    )

    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub/readme.txt").write_text("no images here")
    assert f"{empty}: no images in the folder" in _refused(capsys, monkeypatch, out, *weights, "--images", empty)
    assert "nowhere: no such image, folder or list file" in _refused(
        capsys, monkeypatch, out, *weights, "--images", tmp_path / "nowhere"
    )

    no_deploy = tmp_path / "export_copy"
    shutil.copytree(export_dir, no_deploy)
    (no_deploy / "deploy.yaml").unlink()
    assert f"{no_deploy}: no deploy.yaml" in _refused(
        capsys, monkeypatch, out, "--model", no_deploy, "--images", folder
    )

    state = paddle.load(str(weights[3]))
    state["head.extra.weight"] = state.pop(next(iter(state)))  # one key renamed: not the YAML's model
    other = tmp_path / "other.pdparams"
    paddle.save(state, str(other))
    err = _refused(capsys, monkeypatch, out, "--config", weights[1], "--model", other, "--images", good[0])
    assert f"{other} does not match the model DeepLabV3P: 1 missing key(s)" in err and "head.extra.weight" in err
    err = _refused(capsys, monkeypatch, out, "--model", weights[3], "--images", good[0])
    assert "weights need --config" in err


def test_predict_images_key_plans_a_predict_job(tmp_path):
    images = tmp_path / "mine"
    images.mkdir()
    counts = job_counts(plan(tmp_path, tiny_config(tmp_path, predict={"images": str(images)})).stdout)
    assert counts["predict"] == 1
    assert "predict" not in job_counts(plan(tmp_path, tiny_config(tmp_path)).stdout)


def test_predict_images_key_on_a_finished_study(study, tmp_path):
    """A finished study given `predict.images` runs only the predict job, which writes what the command does."""
    reference, _, _ = study
    work = tmp_path / "study"
    shutil.copytree(reference, work, symlinks=True)
    config = tiny_config(work, predict={"images": f"{DATA}/JPEGImages"})
    proc = run_snakemake(work, "results/predict", "--cores", "1", "--configfile", config)
    assert job_counts(proc.stdout + proc.stderr) == {"predict": 1}
    names = sorted(p.stem for p in (work / DATA / "JPEGImages").iterdir())
    assert sorted(p.stem for p in (work / "results/predict/pseudo_color_prediction").iterdir()) == names
    assert sorted(p.stem for p in (work / "results/predict/added_prediction").iterdir()) == names
    assert "predicted 40 image(s)" in (work / "logs/report/predict.log").read_text()


def test_bench_runs_at_test_size(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "bench/predict.py"), "--config", STUDENT, "--sizes", "32", "--images", "2",
           "--rounds", "2", "--threads", "1", "--weights", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (r,) = json.loads(out.read_text())["results"]
    assert r["size"] == 32 and r["images"] == 2
    assert set(r["ratio_to_bare"]) == {"predict", "predict_weights"}
    assert all(len(v) == 2 and min(v) > 0 for v in r["per_image_s"].values())
    assert "| 32x32 | 2 |" in proc.stdout


def test_the_command_and_the_workflow_s_script_make_the_same_call(monkeypatch, tmp_path):
    import segdistill.predict
    from test_cli_steps import record, run_cli, run_script

    monkeypatch.chdir(tmp_path)
    calls = record(monkeypatch, segdistill.predict, "predict")
    run_script("predict.py", input={"model": "exp", "images": "imgs"}, output={"0": "out"}, params={"batch_size": 4})
    run_cli(["predict", "--model", "exp", "--images", "imgs", "--out", "out", "--batch_size", "4", "--device", "cpu"])
    assert len(calls.calls) == 2 and calls.calls[0] == calls.calls[1]
