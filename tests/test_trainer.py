"""The trainer: determinism, resume after a kill equals an uninterrupted run, fail-fast on NaN, a lean teacher."""

import json
import os
import shutil
import subprocess
import sys

from segdistill.paddle_env import paddle

import numpy as np
import pandas as pd
import pytest

from conftest import STUDENT, TEACHER, distill_argv, tiny_spec
from segdistill import checkpoint
from segdistill.errors import SegDistillError
from segdistill.specs import EvaluateOptions
from segdistill.trainer import Trainer


def spec(data, save_dir, **kw):
    return tiny_spec(data, save_dir, **{"seed": 3, "save_interval": 2, "log_iters": 1, "keep_checkpoint_max": 3, **kw})


def weights(path):
    return {k: v.numpy() for k, v in paddle.load(str(path)).items()}


def test_same_seed_same_weights(tiny_data, tmp_path):
    a = Trainer(spec(tiny_data, tmp_path / "a", iters=3, do_eval=False)).run()
    b = Trainer(spec(tiny_data, tmp_path / "b", iters=3, do_eval=False)).run()
    wa, wb = weights(tmp_path / "a/best_model/model.pdparams"), weights(tmp_path / "b/best_model/model.pdparams")
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert a["iters"] == b["iters"] == 3


def test_resume_after_kill_equals_uninterrupted(tiny_data, tmp_path, patched_teacher):
    """Distillation (the most state: student, connectors, optimizer, scheduler, RNG) killed after a checkpoint."""
    terms = tmp_path / "terms.yml"
    terms.write_text(
        "terms:\n  - {loss: kl, weight: 3}\n"
        "  - {name: cwd, student: head.aspp, teacher: head.aspp, loss: cwd, weight: 3, temperature: 4,"
        " connector: conv1x1_bn}\n"
        # MGD: a trained generator and a random mask per iteration, both resumed exactly
        "  - {name: mgd, student: head.aspp, teacher: head.aspp, loss: mgd, options: {alpha: 0.001}}\n"
    )
    args = distill_argv(tiny_data, patched_teacher, terms, seed=5, save_interval=2, log_iters=1)
    cli = [sys.executable, "-m", "segdistill.cli"]
    full = subprocess.run(cli + args + ["--save_dir", str(tmp_path / "full")], capture_output=True, text=True)
    assert full.returncode == 0, full.stderr[-3000:]
    env = dict(os.environ, SEGDISTILL_DIE_AFTER_ITER="2")
    killed = subprocess.run(
        cli + args + ["--save_dir", str(tmp_path / "resumed")], capture_output=True, text=True, env=env
    )
    assert killed.returncode == 137
    assert not (tmp_path / "resumed/train_summary.json").exists()  # nothing looks complete
    again = subprocess.run(cli + args + ["--save_dir", str(tmp_path / "resumed")], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stderr
    wf = weights(tmp_path / "full/best_model/model.pdparams")
    wr = weights(tmp_path / "resumed/best_model/model.pdparams")
    assert all(np.array_equal(wf[k], wr[k]) for k in wf)
    lf = pd.read_csv(tmp_path / "full/train_log.csv")
    lr = pd.read_csv(tmp_path / "resumed/train_log.csv")
    pd.testing.assert_frame_equal(lf, lr)


def test_checkpoints_of_another_run_are_not_resumed(tiny_data, tmp_path, patched_teacher):
    """Snakemake reruns a job whose config or teacher changed in the same folder: the old run's checkpoints must
    not be resumed (that would hand back the old model), and the new run must equal one made in a fresh folder."""

    def train(save_dir, weight, seed=3):
        messages = []
        # Parameter names restart per trainer, as in the separate processes the workflow runs (the optimizer
        # state is keyed by them).
        with paddle.utils.unique_name.guard():
            Trainer(
                spec(
                    tiny_data,
                    save_dir,
                    iters=4,
                    seed=seed,
                    teacher_config=patched_teacher,
                    distill_terms=[{"loss": "kl", "weight": weight}],
                ),
                log=messages.append,
            ).run()
        return messages

    run = tmp_path / "run"
    train(run, 3)
    messages = train(run, 1)
    assert any("are of another run" in m for m in messages), messages
    assert not any(m.startswith("resumed from") for m in messages)
    train(tmp_path / "fresh", 1)
    wr, wf = weights(run / "best_model/model.pdparams"), weights(tmp_path / "fresh/best_model/model.pdparams")
    assert all(np.array_equal(wr[k], wf[k]) for k in wf)
    pd.testing.assert_frame_equal(pd.read_csv(run / "train_log.csv"), pd.read_csv(tmp_path / "fresh/train_log.csv"))
    # The folder now holds the new run's checkpoints only.
    assert all(json.loads((p / "state.json").read_text())["run_key"] for p in checkpoint.list_checkpoints(run))
    other = train(run, 1, seed=4)  # another seed is another run too
    assert any("are of another run" in m for m in other), other


def test_a_finished_run_is_trained_again_not_resumed(tiny_data, tmp_path):
    """A rerun of a finished run (Snakemake --forcerun, same config) trains from iteration 0 and says why; one
    stopped before its last iteration resumes."""
    run = tmp_path / "run"

    def train():
        messages = []
        with paddle.utils.unique_name.guard():  # parameter names as in the separate processes of the workflow
            Trainer(spec(tiny_data, run, iters=4, do_eval=False), log=messages.append).run()
        return messages

    train()
    first = weights(run / "best_model/model.pdparams")
    messages = train()
    assert any(
        "are of a run that finished (iteration 4 of 4)" in m and "training from iteration 0" in m for m in messages
    ), messages
    assert not any(m.startswith("resumed from") for m in messages)
    assert any(m.startswith("[train] iter 1/4") for m in messages)
    again = weights(run / "best_model/model.pdparams")
    assert all(np.array_equal(first[k], again[k]) for k in first)
    # As if killed after iteration 2's checkpoint: no last checkpoint, and no finished.json (written at the end).
    shutil.rmtree(run / "iter_4")
    (run / "finished.json").unlink()
    messages = train()
    assert any(m.startswith("resumed from") and "iteration 2" in m for m in messages), messages


def test_corrupt_newest_checkpoint_falls_back_to_previous(tiny_data, tmp_path):
    run = tmp_path / "run"
    Trainer(spec(tiny_data, run, iters=4, do_eval=False)).run()
    ckpts = checkpoint.list_checkpoints(run)
    assert [p.name for p in ckpts] == ["iter_4", "iter_2"]
    data = (ckpts[0] / "model.pdparams").read_bytes()
    (ckpts[0] / "model.pdparams").write_bytes(data[: len(data) // 2])  # truncated
    messages = []
    path, meta = checkpoint.latest_valid(run, messages.append)
    assert path.name == "iter_2" and meta["iteration"] == 2
    assert "iter_4" in messages[0] and "checksum" in messages[0]


def test_nan_loss_stops_with_iteration_and_checkpoint(tiny_data, tmp_path):
    trainer = Trainer(spec(tiny_data, tmp_path / "run", iters=6, learning_rate=1e12, save_interval=1, do_eval=False))
    with pytest.raises(
        SegDistillError,
        match=r"(total loss|parameter '\S+') went non-finite at iteration \d+; .*last good checkpoint: \S+iter_\d",
    ):
        trainer.run()
    assert not (tmp_path / "run/train_summary.json").exists()


def test_distill_step_trains_student_only(tiny_data, tmp_path, patched_teacher):
    trainer = Trainer(
        spec(
            tiny_data,
            tmp_path / "run",
            iters=1,
            teacher_config=patched_teacher,
            distill_terms=[{"loss": "kl", "weight": 3}],
            do_eval=False,
        )
    )
    teacher = trainer.distiller.teacher
    before = {k: v.numpy().copy() for k, v in teacher.state_dict().items()}
    s_before = {k: v.numpy().copy() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    after = teacher.state_dict()
    assert all(np.array_equal(before[k], after[k].numpy()) for k in before)  # incl. BN running stats
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.stop_gradient for p in teacher.parameters())
    changed = [k for k, v in trainer.model.state_dict().items() if not np.array_equal(s_before[k], v.numpy())]
    assert changed  # the student did learn


def test_unknown_layer_name_is_named_with_suggestions(tiny_data, tmp_path, patched_teacher):
    with pytest.raises(SegDistillError, match=r"no layer named 'head.asp'.*closest: head.aspp"):
        Trainer(
            spec(
                tiny_data,
                tmp_path / "run",
                iters=1,
                teacher_config=patched_teacher,
                distill_terms=[{"student": "head.asp", "teacher": "head.aspp", "loss": "mse"}],
            )
        )


def test_channel_mismatch_suggests_a_connector(tiny_data, tmp_path, patched_teacher):
    terms = [{"student": "backbone.bb_2_1", "teacher": "backbone.bb_3_1", "loss": "cwd", "temperature": 4}]
    with pytest.raises(SegDistillError, match=r"\[4, 256, 4, 4\].*\[4, 512, 4, 4\].*connector: conv1x1"):
        Trainer(spec(tiny_data, tmp_path / "run", iters=1, teacher_config=patched_teacher, distill_terms=terms))
    terms[0]["connector"] = "conv1x1"
    t = Trainer(
        spec(tiny_data, tmp_path / "run2", iters=1, teacher_config=patched_teacher, distill_terms=terms, do_eval=False)
    )
    summary = t.run()
    assert summary["distill_terms"][0]["connector"] == "conv1x1"


def test_untrained_teacher_is_refused(tiny_data, tmp_path):
    with pytest.raises(SegDistillError, match="model.pretrained is not set"):
        Trainer(spec(tiny_data, tmp_path / "run", iters=1, teacher_config=TEACHER))


def test_tutorial_command_line(tiny_data, tmp_path, patched_teacher):
    """`distill_train.py`'s flags as the tutorial prints them, including the `--teather_config` spelling."""
    cmd = [
        sys.executable,
        "-m",
        "segdistill.cli",
        "distill-train",
        "--teather_config",
        patched_teacher,
        "--student_config",
        STUDENT,
        "--do_eval",
        "--save_interval",
        "2",
        "--num_workers",
        "3",
        "--seed",
        "0",
        "--save_dir",
        str(tmp_path / "out"),
        "--iters",
        "2",
        "--batch_size",
        "2",
        "--learning_rate",
        "0.005",
        "--keep_checkpoint_max",
        "1",
        "--log_iters",
        "1",
        "--data_root",
        str(tiny_data),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out/train_summary.json").read_text())
    assert summary["iters"] == 2 and summary["batch_size"] == 2
    assert summary["distill_terms"][0]["loss"] == "kl" and summary["distill_terms"][0]["weight"] == 3.0
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path / "out")] == ["iter_2"]
    assert "kl:logits" in proc.stderr


def _first_step_change(trainer):
    """Global L2 norm of the trainable parameters' change over the first step, and of the parameters before it."""
    params = [p for p in trainer.trainable.parameters() if not p.stop_gradient]
    before = [p.numpy().copy() for p in params]
    images, labels = trainer.stream.batch(1)
    trainer.student_side.train()
    trainer.step(paddle.to_tensor(images), paddle.to_tensor(labels), 1)
    change = np.sqrt(sum(float(((p.numpy() - b) ** 2).sum()) for p, b in zip(params, before)))
    return change, np.sqrt(sum(float((b**2).sum()) for b in before))


def test_grad_clip_norm_bounds_the_first_step(tiny_data, tmp_path):
    """Momentum's first step moves the parameters by lr x (clipped gradient + weight decay x parameters): with the
    gradients' global norm clipped to c, by at most lr x (c + wd |params|). Unclipped, the step is far larger."""
    clip, wd = 1e-3, 4.0e-5  # wd: student_tiny.yml's optimizer.weight_decay
    clipped = Trainer(spec(tiny_data, tmp_path / "clip", iters=1, grad_clip_norm=clip), log=lambda m: None)
    lr = float(clipped.optimizer.get_lr())
    change, norm = _first_step_change(clipped)
    bound = lr * (clip + wd * norm)
    assert change <= bound * (1 + 1e-4), (change, bound)
    free = Trainer(spec(tiny_data, tmp_path / "free", iters=1), log=lambda m: None)
    assert _first_step_change(free)[0] > 10 * bound
    assert clipped.run_key != free.run_key  # a clipped run never resumes an unclipped one's checkpoints


def test_the_training_job_evaluates_its_best_model_as_an_evaluate_job_does(tiny_data, tmp_path, monkeypatch):
    """`evaluate_out`: the record the workflow's training jobs write instead of a separate evaluate job is the
    one `segdistill evaluate` writes for the same weights, byte for byte; the job's log says where its time went.
    The best model's val matrix from training is reused (only test gets a pass of its own), with the same bytes."""
    import segdistill.evaluate as evaluation

    passes, plain = [], evaluation.evaluate
    monkeypatch.setattr(
        evaluation,
        "evaluate",
        lambda m, ds, *a, **k: passes.append([f[1] for f in ds.file_list]) or plain(m, ds, *a, **k),
    )
    messages = []
    out = tmp_path / "eval" / "student" / "seed3.json"
    run = spec(
        tiny_data,
        tmp_path / "run",
        iters=4,
        evaluate_out=str(out),
        evaluate=EvaluateOptions(splits=["val", "test"], batch_size=4),
        run_id="student/seed3",
        class_names=["background", "disc"],
    )
    Trainer(run, log=messages.append).run()
    test_labels = [
        str(tiny_data / line.split()[1]) for line in (tiny_data / "test_list.txt").read_text().split("\n") if line
    ]
    assert passes == [test_labels]
    alone = tmp_path / "alone.json"
    subprocess.run(
        [
            *[sys.executable, "-m", "segdistill.cli", "evaluate", "--config", STUDENT],
            *["--model", str(tmp_path / "run/best_model/model.pdparams"), "--data_root", str(tiny_data)],
            *["--splits", "val", "test", "--class_names", "background", "disc", "--run", "student/seed3"],
            *["--batch_size", "4", "--out", str(alone)],
        ],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes() == alone.read_bytes()
    record = json.loads(out.read_text())
    # `python -m segdistill.cli` ends without the interpreter's teardown: what it printed to a pipe is whole.
    printed = subprocess.run(
        [
            *[sys.executable, "-m", "segdistill.cli", "evaluate", "--config", STUDENT],
            *["--model", str(tmp_path / "run/best_model/model.pdparams"), "--data_root", str(tiny_data)],
            *["--splits", "val", "test", "--class_names", "background", "disc", "--run", "student/seed3"],
            *["--batch_size", "4", "--out", "-"],
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    assert json.loads(printed.stdout)["splits"] == record["splits"]
    assert record["run"] == "student/seed3" and set(record["splits"]) == {"val", "test"}
    from segdistill.timing import parse_log

    parts = parse_log("\n".join(messages))
    assert parts["train_steps"] > 0 and parts["evaluate"] > 0 and parts["checkpoint"] > 0, parts


def test_evaluating_in_batches_gives_the_pixels_of_one_image_at_a_time(tiny_data, tmp_path):
    """evaluate(batch_size=k): same-size images go through the model together, and the confusion matrix is the
    one of PaddleSeg's one-at-a-time evaluation; images of another size start a new batch."""
    from segdistill.evaluate import _same_size_batches, build_split, evaluate
    from segdistill.models import load_trained
    from segdistill.paddleseg_yaml import build

    Trainer(spec(tiny_data, tmp_path / "run", iters=2, do_eval=False)).run()
    model, dic = load_trained(STUDENT, str(tmp_path / "run/best_model/model.pdparams"), str(tiny_data))
    ds = build_split(build(dic, STUDENT), "val")
    one = evaluate(model, ds, 2, batch_size=1).matrix
    assert one.sum() > 0
    for k in (3, 16):
        assert np.array_equal(evaluate(model, ds, 2, batch_size=k).matrix, one), k

    sizes = [(3, 8, 8), (3, 8, 8), (3, 4, 4), (3, 8, 8), (3, 8, 8), (3, 8, 8)]
    samples = [{"img": np.zeros(s), "label": np.zeros((1, *s[1:]))} for s in sizes]
    got = [[img.shape[1] for img, _, _ in b] for b in _same_size_batches(samples, range(len(samples)), 2)]
    assert got == [[8, 8], [4], [8, 8], [8]]


def test_workflow_runs_write_no_last_checkpoint_and_link_their_best_model(tiny_data, tmp_path):
    """final_checkpoint=False (the workflow's jobs): the run ends with the same best model and no checkpoint of
    its last iteration, which nothing would read (a finished run is trained again, not resumed); a job killed
    before the end still resumes from the one before. best_model/ is a link to the kept best weights."""
    full = Trainer(spec(tiny_data, tmp_path / "full", iters=4)).run()
    lean = Trainer(spec(tiny_data, tmp_path / "lean", iters=4, final_checkpoint=False)).run()
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path / "full")] == ["iter_4", "iter_2"]
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path / "lean")] == ["iter_2"]
    assert lean["best_iter"] == full["best_iter"] and lean["best_miou"] == full["best_miou"]
    wf, wl = weights(tmp_path / "full/best_model/model.pdparams"), weights(tmp_path / "lean/best_model/model.pdparams")
    assert all(np.array_equal(wf[k], wl[k]) for k in wf)
    best = tmp_path / "lean/best_model/model.pdparams"
    assert best.stat().st_ino == (tmp_path / "lean/checkpoints_best/model.pdparams").stat().st_ino
    # Run again (Snakemake reran the job): it finished, so it trains from iteration 0 although iter_2 is there.
    messages = []
    Trainer(spec(tiny_data, tmp_path / "lean", iters=4, final_checkpoint=False), log=messages.append).run()
    assert any("are of a run that finished (iteration 4 of 4)" in m for m in messages), messages
    assert not any(m.startswith("resumed from") for m in messages)


def test_val_is_not_evaluated_where_it_neither_chooses_nor_is_reported(tiny_data, tmp_path, monkeypatch):
    """A run evaluated once, at its end, keeps its last model whatever val says: without val in
    `evaluate.splits` it makes no val pass, and its test record is the bytes of the same run that evaluated val.
    With a second evaluation (val chooses) or val reported, val is evaluated as before."""
    import segdistill.evaluate as evaluation
    import segdistill.trainer as trainer_module

    lists = {
        split: [
            str(tiny_data / line.split()[1])
            for line in (tiny_data / f"{split}_list.txt").read_text().split("\n")
            if line
        ]
        for split in ("val", "test")
    }
    passes, plain = [], evaluation.evaluate

    def counted(m, ds, *a, **k):
        passes.append(next(s for s, f in lists.items() if f == [x[1] for x in ds.file_list]))
        return plain(m, ds, *a, **k)

    # In training (the trainer's name) and the run's final record (the module's).
    monkeypatch.setattr(evaluation, "evaluate", counted)
    monkeypatch.setattr(trainer_module, "evaluate", counted)

    def run(name, splits, save_interval):
        passes.clear()
        out = tmp_path / name / "eval.json"
        kw = dict(iters=4, save_interval=save_interval, evaluate_out=str(out), run_id="student/seed3")
        summary = Trainer(spec(tiny_data, tmp_path / name, evaluate=EvaluateOptions(splits=splits), **kw)).run()
        return list(passes), json.loads(out.read_text()), summary

    test_only, rec, summary = run("test_only", ["test"], 4)
    assert test_only == ["test"] and set(rec["splits"]) == {"test"} and summary["best_iter"] == 4
    assert pd.read_csv(tmp_path / "test_only/eval_log.csv").empty
    reported, rec_v, _ = run("reported", ["val", "test"], 4)
    assert reported == ["val", "test"] and rec_v["splits"]["test"] == rec["splits"]["test"]
    chooses, _, _ = run("chooses", ["test"], 2)
    assert chooses == ["val", "val", "test"]
