"""A non-finite value stops a run at once, named (segdistill.finite): in the loss, a parameter, a BatchNorm
statistic, or the logits of an evaluation; the run keeps no best model."""

import re

from segdistill.paddle_env import paddle

import numpy as np
import pytest

from conftest import ROOT
from segdistill.finite import NonFinite
from segdistill.trainer import Trainer, TrainSpec

STUDENT = str(ROOT / "tests/configs/student_tiny.yml")


def trainer(data, run, messages, **kw):
    base = dict(iters=4, save_interval=2, log_iters=1, keep_checkpoint_max=3, do_eval=True, run_id="student/seed3")
    spec = TrainSpec(config=STUDENT, save_dir=str(run), data_root=str(data), seed=3, **{**base, **kw})
    return Trainer(spec, log=messages.append)


def corrupt_after(t: Trainer, at: int, corrupt) -> None:
    """Fault injection: after the real step of iteration `at`, `corrupt(model)` changes the weights in place (as a
    diverging optimizer step would), so the loss of that step was computed with the sound weights."""
    step = t.step

    def wrapped(images, labels, it=None):
        out = step(images, labels, it)
        if it == at:
            with paddle.no_grad():
                corrupt(t.model)
        return out

    t.step = wrapped


def logged_losses(messages) -> dict[int, float]:
    found = (re.match(r"\[train\] iter (\d+)/\d+ loss=(\S+)", m) for m in messages)
    return {int(m.group(1)): float(m.group(2)) for m in found if m}


def assert_stopped(run, messages, excinfo, what: str, it: int) -> None:
    """One message naming the run, what went non-finite and the iteration; finite losses up to it; no best model."""
    text = str(excinfo.value)
    assert text.startswith("run student/seed3: ") and f"went non-finite at iteration {it};" in text, text
    assert what in text, text
    losses = logged_losses(messages)
    assert max(losses) == it and all(np.isfinite(v) for v in losses.values()), losses
    assert not (run / "best_model").exists() and not (run / "checkpoints_best/model.pdparams").exists()
    assert not (run / "train_summary.json").exists()


def huge_weights(model) -> None:
    """The last BatchNorm's scale and the classifier's weights (the last convolution) times 1e30 (the issue's run
    had 6.5e30): finite weights whose product, 1e60 times the features, overflows float32 (largest 3.4e38) on any
    image. (Scaling every layer overflows early in the network, where a ReLU turns NaN into 0 on this CPU.)"""
    scale = [p for n, p in model.named_parameters() if n.endswith("_batch_norm.weight")][-1]
    classifier = [p for _, p in model.named_parameters() if len(p.shape) == 4][-1]
    for p in (scale, classifier):
        p.set_value(p.numpy() * np.float32(1e30))


def test_a_nan_weight_is_caught_at_the_next_evaluation_with_the_loss_finite(tiny_data, tmp_path):
    messages = []
    t = trainer(tiny_data, tmp_path / "run", messages)
    name = [n for n, p in t.model.named_parameters() if len(p.shape) == 4][0]

    def nan_weight(model):
        p = dict(model.named_parameters())[name]
        w = p.numpy()
        w.flat[0] = np.nan
        p.set_value(w)

    corrupt_after(t, 2, nan_weight)
    with pytest.raises(NonFinite) as excinfo:
        t.run()
    assert_stopped(tmp_path / "run", messages, excinfo, f"parameter '{name}'", 2)


def test_a_nan_batchnorm_statistic_is_caught_at_the_next_evaluation_though_training_never_sees_it(tiny_data, tmp_path):
    """Train mode normalises with the batch's statistics: steps 2-4 run on with finite losses; the evaluation
    at iteration 2 would use the NaN running variance, and the state check before it names the buffer."""
    messages = []
    t = trainer(tiny_data, tmp_path / "run", messages)
    name, var = next((n, b) for n, b in t.model.state_dict().items() if n.endswith("_variance"))
    corrupt_after(t, 1, lambda model: var.set_value(np.full(var.shape, np.nan, dtype="float32")))
    with pytest.raises(NonFinite) as excinfo:
        t.run()
    assert_stopped(tmp_path / "run", messages, excinfo, f"buffer '{name}'", 2)


def test_finite_weights_whose_forward_overflows_are_refused_by_evaluation(tiny_data, tmp_path):
    """Every weight finite, the logits not: the evaluation refuses them instead of counting the NaN pixels as
    class 0 (the issue's diverged run: finite weights, finite training losses, NaN logits)."""
    messages = []
    t = trainer(tiny_data, tmp_path / "run", messages)

    corrupt_after(t, 2, huge_weights)
    with pytest.raises(NonFinite) as excinfo:
        t.run()
    assert all(np.isfinite(p.numpy()).all() for p in t.model.parameters()), str(excinfo.value)
    assert_stopped(tmp_path / "run", messages, excinfo, "logits of val image 0", 2)


def test_a_diverging_loss_names_the_first_non_finite_iteration(tiny_data, tmp_path):
    """The loss is read at log rows only (log_iters 3 here): the iteration named is the first non-finite one
    (kept on the device), not the one of the read, and no checkpoint was written after it."""
    messages = []
    t = trainer(tiny_data, tmp_path / "run", messages, learning_rate=1e12, iters=6, save_interval=6, log_iters=3)
    seen = []
    step = t.step

    def record(images, labels, it=None):
        loss, parts = step(images, labels, it)
        seen.append((it, float(loss)))
        return loss, parts

    t.step = record
    with pytest.raises(NonFinite, match=r"run student/seed3: total loss went non-finite at iteration (\d+);") as e:
        t.run()
    first = next(it for it, v in seen if not np.isfinite(v))
    assert f"at iteration {first};" in str(e.value) and "last good checkpoint: none" in str(e.value)
    assert not (tmp_path / "run/best_model").exists()


def test_evaluate_refuses_non_finite_logits_naming_the_model_and_split(tiny_data, tmp_path):
    from segdistill.checkpoint import save_weights
    from segdistill.evaluate import evaluate_run
    from segdistill.models import load_trained
    from segdistill.specs import EvaluateSpec

    Trainer(TrainSpec(config=STUDENT, save_dir=str(tmp_path / "run"), data_root=str(tiny_data), iters=1)).run()
    weights = tmp_path / "run/best_model/model.pdparams"
    model, _ = load_trained(STUDENT, str(weights), str(tiny_data))
    huge_weights(model)
    save_weights(model, tmp_path / "huge.pdparams")
    spec = EvaluateSpec(
        config=STUDENT, model=str(tmp_path / "huge.pdparams"), data_root=str(tiny_data), splits=["test"]
    )
    with pytest.raises(NonFinite, match=r"huge.pdparams on the test split: non-finite logits for image 0"):
        evaluate_run(spec)


def test_a_diverging_study_stops_with_the_message_and_writes_no_report(tmp_path):
    """The tiny study with a student YAML at learning_rate 1e8: a training job stops naming its run, the
    iteration and what went non-finite; Snakemake exits non-zero; no summary.csv or summary.md is written."""
    import yaml

    from conftest import run_snakemake, tiny_config

    student = yaml.safe_load((ROOT / "tests/configs/student_tiny.yml").read_text())
    student["lr_scheduler"]["learning_rate"] = 1e8
    (tmp_path / "student_diverges.yml").write_text(yaml.safe_dump(student))
    config = tiny_config(tmp_path)
    study = yaml.safe_load(config.read_text())
    study["student"]["config"] = str(tmp_path / "student_diverges.yml")
    config.write_text(yaml.safe_dump(study))
    proc = run_snakemake(tmp_path, "--cores", "2", "--configfile", config, check=False)
    assert proc.returncode != 0
    logs = {
        p: p.read_text() for p in (tmp_path / "logs").rglob("*.log") if p.parent.name in ("student", "kl", "kl_cwd")
    }
    stopped = [t for t in logs.values() if "went non-finite at iteration" in t]
    assert stopped, {str(p): t[-1500:] for p, t in logs.items()}
    line = next(ln for ln in stopped[0].splitlines() if "went non-finite" in ln)
    assert re.search(
        r"segdistill: error: run (student|distilled/\w+)/seed\d: .+ went non-finite at iteration \d+;", line
    )
    assert not (tmp_path / "results/report/summary.csv").exists()
    assert not (tmp_path / "results/report/summary.md").exists()
    best = [p.relative_to(tmp_path / "results/runs") for p in (tmp_path / "results/runs").rglob("best_model/*")]
    assert all(p.parts[0] == "teacher" for p in best), best
    print(line)
