"""Export the best distilled student as a Paddle inference model, and prove it predicts what was evaluated.

The exported program returns the logits at the input size (PaddleSeg's `output_op: none`), so a deployment
can take the argmax or the softmax. Verification runs the saved files through `paddle.inference` (the
deployment path) on a batch of val images and compares with the dygraph model loaded from the evaluated
weights; the maximum absolute logit difference must be at most `tol`. Nothing is published unless it passes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from segdistill.paddle_env import paddle

import numpy as np

from segdistill.errors import SegDistillError
from segdistill.report.records import HEADLINE_SPLIT, SELECTION_SPLIT, read_record, rows_from_records

TOLERANCE = 1e-4


class LogitsOnly(paddle.nn.Layer):
    """PaddleSeg models return a list of logits (the first is the prediction); export just that tensor."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return out[0] if isinstance(out, (list, tuple)) else out


def pick_best(eval_paths, split: str = HEADLINE_SPLIT) -> dict:
    """The run to deploy, chosen on the selection split (val), as stats.json's `best_setting` / `best_run`: the
    distilled arm with the best mean val mIoU, then that arm's run with the best val mIoU. `split` (the headline
    split) takes no part in the choice; the run's number on it is reported. {run, miou, model, config, eval, ...}"""
    from segdistill.report.stats import best_run, best_setting

    eval_paths = list(eval_paths)
    recs = [read_record(p) for p in eval_paths]
    distilled = [(p, r) for p, r in zip(eval_paths, recs) if r.get("arm") == "distilled"]
    df = rows_from_records(r for _, r in distilled) if distilled else None
    setting = best_setting(df, split) if df is not None else None
    run = best_run(df, setting["method"], split) if setting else None
    if run is None:
        raise SegDistillError(
            f"no distilled run with a '{SELECTION_SPLIT}' mIoU among {len(eval_paths)} "
            f"record(s): the exported run is chosen on {SELECTION_SPLIT} (add it to "
            f"evaluate.splits)"
        )
    path, rec = next((p, r) for p, r in distilled if r["run"] == run["run"])
    return {
        "run": run["run"],
        "method": setting["method"],
        "chosen_on": SELECTION_SPLIT,
        "selection_miou": run["selection_value"],
        "split": split,
        "miou": run["value"],
        "model": rec["model"],
        "config": rec["config"],
        "eval": str(path),
    }


def val_batch(dic, config, split: str = "val", size: int = 4) -> np.ndarray:
    """The first `size` images of the split after the val transforms, as one N x C x H x W float32 array."""
    from segdistill.evaluate import build_split
    from segdistill.paddleseg_yaml import build

    ds = build_split(build(dic, config), split)
    if len(ds) == 0:
        raise SegDistillError(f"{config}: the {split} split is empty; nothing to verify the export on")
    return np.stack([np.asarray(ds[i]["img"], dtype="float32") for i in range(min(size, len(ds)))])


def save_inference_model(model, shape_hw, prefix) -> list[str]:
    """paddle.jit.save with an InputSpec [None, 3, H, W] (H, W None: any size); returns the files written."""
    from paddle.static import InputSpec

    h, w = shape_hw
    net = LogitsOnly(model)
    net.eval()
    prefix = Path(prefix)
    before = set(prefix.parent.iterdir()) if prefix.parent.exists() else set()
    paddle.jit.save(net, str(prefix), input_spec=[InputSpec([None, 3, h, w], "float32", name="x")])
    return sorted(p.name for p in set(prefix.parent.iterdir()) - before)


def model_file(directory) -> Path:
    """The program file of a saved inference model (`.json` under PIR, `.pdmodel` with the old IR)."""
    directory = Path(directory)
    for name in ("model.json", "model.pdmodel"):
        if (directory / name).is_file():
            return directory / name
    raise SegDistillError(f"{directory}: no model.json or model.pdmodel (not an exported inference model)")


def predictor(directory, onednn: bool = True, threads: int | None = None, gpu: bool = False):
    """A paddle.inference predictor of the saved files, without memory optimisation (paddle 3.3.1 refuses its
    pass on PIR `model.json` programs). CPU: oneDNN on or off, `threads` math threads; `gpu`: device 0."""
    from paddle import inference

    cfg = inference.Config(str(model_file(directory)), str(Path(directory) / "model.pdiparams"))
    cfg.disable_glog_info()
    if gpu:
        cfg.enable_use_gpu(256, 0)
        return inference.create_predictor(cfg)
    cfg.disable_gpu()
    if onednn:
        cfg.enable_onednn()
    else:
        cfg.disable_onednn()
    if threads:
        cfg.set_cpu_math_library_num_threads(threads)
    return inference.create_predictor(cfg)


def run_predictor(pred, batch: np.ndarray) -> np.ndarray:
    h = pred.get_input_handle(pred.get_input_names()[0])
    h.reshape(list(batch.shape))
    h.copy_from_cpu(np.ascontiguousarray(batch))
    pred.run()
    return pred.get_output_handle(pred.get_output_names()[0]).copy_to_cpu()


class PredictorModel:
    """The exported files as a model `segdistill.protocol.batch_logits` can run: tensor in, [logits] out."""

    def __init__(self, pred):
        self.pred = pred

    def __call__(self, x):
        return [paddle.to_tensor(run_predictor(self.pred, x.numpy()))]


def compare(model, directory, batch: np.ndarray, protocol=None) -> dict:
    """Logits of the dygraph model and of the exported files on `batch`, each under the evaluation's
    `protocol` (segdistill.protocol; default plain): max |diff| and argmax agreement."""
    from segdistill.protocol import Protocol, batch_logits

    protocol = protocol or Protocol()
    x = paddle.to_tensor(batch)

    def logits(net):
        with paddle.no_grad():
            return np.concatenate([t.numpy() for t in batch_logits(net, x, protocol)])

    ref = logits(LogitsOnly(model))
    info = {"predictor": "paddle.inference CPU, oneDNN on"}
    try:
        got = logits(PredictorModel(predictor(directory, onednn=True)))
    except (NotImplementedError, RuntimeError) as exc:
        # paddle 3.3.1's oneDNN executor rejects some PIR attributes of DeepLabV3P (interpolate's scale list);
        # the plain CPU kernels run the same program. Record it: a deployment must turn oneDNN off too.
        info = {"predictor": "paddle.inference CPU, oneDNN off", "onednn_error": str(exc).strip().splitlines()[0]}
        got = logits(PredictorModel(predictor(directory, onednn=False)))
    if got.shape != ref.shape:
        raise SegDistillError(
            f"{directory}: exported model returns shape {list(got.shape)}, the evaluated model {list(ref.shape)}"
        )
    return {
        "max_abs_diff": float(np.max(np.abs(got - ref))),
        "label_agreement": float(np.mean(got.argmax(1) == ref.argmax(1))),
        "batch_shape": list(batch.shape),
        "protocol": protocol.label(),
        **info,
    }


def deploy_yaml(dic, files, shape_hw, onednn: bool | None = None, protocol=None) -> dict:
    """PaddleSeg's deploy.yaml layout, so its deployment tools can read the folder. Beside `Deploy` (PaddleSeg's
    tools read only that), for `segdistill predict`: `cpu.onednn`, whether the check ran the program under oneDNN
    (so no failing oneDNN predictor is built: several seconds on DeepLabV3P), and `protocol`, the evaluation
    protocol the run was evaluated and checked under (segdistill.protocol's record)."""
    prog = next(f for f in files if f.endswith((".json", ".pdmodel")))
    out = {
        "Deploy": {
            "model": prog,
            "params": "model.pdiparams",
            "transforms": dic["val_dataset"].get("transforms", []),
            "input_shape": [-1, 3, *(-1 if v is None else v for v in shape_hw)],
            "output_op": "none",
            "output_dtype": "float32",
        }
    }
    if onednn is not None:
        out["cpu"] = {"onednn": onednn}
    if protocol is not None:
        out["protocol"] = protocol.record()
    return out


def export_best(
    eval_paths,
    out_dir,
    out_json,
    data_root=None,
    split: str = HEADLINE_SPLIT,
    batch_size: int = 4,
    tol: float = TOLERANCE,
) -> dict:
    """Pick the best distilled run, export it to `out_dir`, verify it and write `out_json`."""
    import yaml

    from segdistill.models import input_size, load_trained
    from segdistill.protocol import of_record

    paddle.set_device("cpu")
    best = pick_best(eval_paths, split)
    model, dic = load_trained(best["config"], best["model"], data_root)
    # The parity check runs the protocol the run was evaluated under; one that resizes or slides needs
    # inputs of other sizes than the YAML's.
    protocol = of_record(read_record(best["eval"]))
    hw = input_size(dic, best["config"]) if not (protocol.aug_eval or protocol.is_slide) else (None, None)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the published folder gets the usual mode
    try:
        files = save_inference_model(model, hw, tmp / "model")
        batch = val_batch(dic, best["config"], split, batch_size)
        parity = compare(model, tmp, batch, protocol)
        if not parity["max_abs_diff"] <= tol:
            raise SegDistillError(
                f"exported {best['run']} differs from the evaluated model {best['model']}: max |logit diff| "
                f"{parity['max_abs_diff']:.3g} > {tol:g} on {len(batch)} {split} images; nothing exported"
            )
        deploy = deploy_yaml(dic, files, hw, onednn="onednn_error" not in parity, protocol=protocol)
        (tmp / "deploy.yaml").write_text(yaml.safe_dump(deploy, sort_keys=False))
        files = sorted(p.name for p in tmp.iterdir())
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    record = {
        "run": best["run"],
        "method": best["method"],
        "chosen_on": best["chosen_on"],
        "selection_miou": best["selection_miou"],
        "split": split,
        "miou": best["miou"],
        "weights": best["model"],
        "config": best["config"],
        "export_dir": str(out_dir),
        "files": files,
        "input_spec": [None, 3, *hw],
        "tolerance": tol,
        "paddle": paddle.__version__,
        **parity,
    }
    path = Path(out_json)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = path.with_name(f".{path.name}.tmp")
    t.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(t, path)
    return record
