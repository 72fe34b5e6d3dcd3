"""Export of the best distilled student: the right run is chosen, the saved inference model predicts what the
evaluated weights predict, and a failed check publishes nothing."""

import json

from segdistill.paddle_env import paddle

import numpy as np
import pytest

from conftest import STUDENT
from segdistill import checkpoint, export
from segdistill.errors import SegDistillError
from segdistill.models import load_trained
from segdistill.paddleseg_yaml import build_model, experiment_dict


def _m(miou):
    return {"miou": miou, "acc": 0.9, "kappa": 0.5, "dice": 0.6, "class_iou": {}, "class_dice": {}}


def rec(path, run, val, test=None, model="m.pdparams", arm="distilled"):
    """An evaluation record with its val mIoU (which chooses) and test mIoU (default: val)."""
    method = run.split("/")[1] if arm == "distilled" else "none"
    splits = {"val": _m(val), "test": _m(val if test is None else test)}
    path.write_text(
        json.dumps(
            {
                "run": run,
                "arm": arm,
                "method": method,
                "seed": int(run.rsplit("seed", 1)[1]),
                "config": STUDENT,
                "model": str(model),
                "splits": splits,
            }
        )
    )
    return path


def test_pick_best_chooses_on_val_ties_by_name(tmp_path):
    # val: kl has the best mean (0.7), its seeds tie -> seed0; cwd/seed1 is the best test run and is not chosen.
    paths = [
        rec(tmp_path / "a.json", "distilled/kl/seed1", 0.7, 0.5),
        rec(tmp_path / "b.json", "distilled/kl/seed0", 0.7, 0.6),
        rec(tmp_path / "c.json", "distilled/cwd/seed0", 0.6, 0.7),
        rec(tmp_path / "e.json", "distilled/cwd/seed1", 0.65, 0.95),
        rec(tmp_path / "d.json", "student/seed0", 0.9, arm="student"),
    ]
    best = export.pick_best(paths)
    assert best["run"] == "distilled/kl/seed0" and best["eval"] == str(paths[1])
    assert best["chosen_on"] == "val" and best["selection_miou"] == 0.7
    assert best["split"] == "test" and best["miou"] == 0.6
    with pytest.raises(SegDistillError, match="no distilled run with a 'val' mIoU"):
        export.pick_best(paths[4:])


@pytest.fixture(scope="module")
def two_students(tmp_path_factory):
    """Two differently initialised tiny students saved as evaluated weights, with evaluation records."""
    d = tmp_path_factory.mktemp("export")
    out = []
    for seed in (1, 2):
        paddle.seed(seed)
        dic = experiment_dict(STUDENT, pretrained_backbone=False)
        model = build_model(dic, STUDENT)
        path = d / f"seed{seed}.pdparams"
        checkpoint.save_weights(model, path)
        out.append(path)
    evals = [
        rec(d / "e1.json", "distilled/kl/seed1", 0.55, model=out[0]),
        rec(d / "e2.json", "distilled/kl/seed2", 0.61, model=out[1]),
    ]
    return d, out, evals


def test_export_matches_evaluated_model(two_students, tiny_data, tmp_path):
    _, weights, evals = two_students
    out_dir, out_json = tmp_path / "export/best_student", tmp_path / "export/export.json"
    res = export.export_best(evals, out_dir, out_json, data_root=tiny_data)
    assert res["run"] == "distilled/kl/seed2" and res["weights"] == str(weights[1]) and res["chosen_on"] == "val"
    assert json.loads(out_json.read_text()) == res
    assert res["max_abs_diff"] <= 1e-4 and res["label_agreement"] == 1.0
    assert res["input_spec"] == [None, 3, 32, 32] and res["batch_shape"] == [4, 3, 32, 32]
    assert {"model.pdiparams", "deploy.yaml"} <= set(res["files"])
    assert sorted(p.name for p in out_dir.iterdir()) == res["files"]
    assert not [p for p in out_dir.parent.iterdir() if p.name.startswith(".")]  # no temp folder left

    # Independently of the rule's own check: on new inputs (another batch size) the files reproduce the chosen
    # weights and not the other run's, so the comparison can tell models apart.
    x = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype("float32")
    pred = export.predictor(out_dir, onednn=False)
    got = export.run_predictor(pred, x)
    chosen, _ = load_trained(STUDENT, weights[1])
    other, _ = load_trained(STUDENT, weights[0])
    with paddle.no_grad():
        ref = export.LogitsOnly(chosen)(paddle.to_tensor(x)).numpy()
        wrong = export.LogitsOnly(other)(paddle.to_tensor(x)).numpy()
    assert got.shape == (3, 2, 32, 32)
    assert np.max(np.abs(got - ref)) <= 1e-4
    assert np.max(np.abs(got - wrong)) > 1e-2
    mismatch = export.compare(other, out_dir, x)
    assert mismatch["max_abs_diff"] > 1e-2


def test_failed_check_publishes_nothing(two_students, tiny_data, tmp_path):
    _, _, evals = two_students
    out_dir, out_json = tmp_path / "export/best_student", tmp_path / "export/export.json"
    # A negative tolerance cannot be met: the real check runs and must refuse to publish.
    with pytest.raises(SegDistillError, match=r"distilled/kl/seed2 differs from the evaluated model"):
        export.export_best(evals, out_dir, out_json, data_root=tiny_data, tol=-1.0)
    assert not out_dir.exists() and not out_json.exists()
    assert list((tmp_path / "export").iterdir()) == []
