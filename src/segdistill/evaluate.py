"""Evaluation: predictions over a split, a confusion matrix, metrics (PaddleSeg's own evaluate does not run)."""

from __future__ import annotations

import contextlib
import sys
from typing import NamedTuple

from segdistill.paddle_env import paddle

import numpy as np

from segdistill.finite import NonFinite, NonFiniteLogits
from segdistill.metrics import ConfusionMatrix

F = paddle.nn.functional


def build_split(builder, split: str):
    """The val dataset config applied to `split` (val or test): val transforms, labels at full resolution."""
    from segdistill.errors import SegDistillError

    cfg = builder.config.val_dataset_cfg
    cfg["mode"] = split
    if cfg.get("type") == "Dataset" and not cfg.get(f"{split}_path"):
        # PaddleSeg's generic Dataset reads the split's list from `<split>_path`; a YAML written for training
        # often names it only in train_dataset.
        other = builder.config.train_dataset_cfg.get(f"{split}_path")
        if not other:
            raise SegDistillError(f"cannot open the {split} split: val_dataset (type Dataset) has no {split}_path")
        cfg[f"{split}_path"] = other
    try:
        ds = builder.build_component(cfg)
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise SegDistillError(f"cannot open the {split} split: {exc}") from None
    ds.mode = "val"  # PaddleSeg's val path keeps labels at original resolution whatever the split
    return ds


def predict(model, images, label_hw):
    """Class ids at the label's resolution (logits resized bilinearly, as PaddleSeg's inference does)."""
    logits = model(images)
    return paddle.argmax(_to_label_size(logits[0] if isinstance(logits, (list, tuple)) else logits, label_hw), axis=1)


def evaluate(
    model,
    dataset,
    num_classes: int,
    ignore_index: int = 255,
    shard=(0, 1),
    autocast=contextlib.nullcontext,
    batch_size: int = 1,
    protocol=None,
    scores: list | None = None,
) -> ConfusionMatrix:
    """Confusion matrix over `dataset` (this rank's shard: every world-th sample from rank); the forward runs
    under `autocast()` (the trainer's, so O2's fp16/bf16 weights meet cast inputs).

    `protocol` (segdistill.protocol.Protocol, default plain): PaddleSeg's test_config; each image's logits come
    from `segdistill.protocol.batch_logits`, brought back to the label's size by undoing the dataset's
    transforms. `scores`: a list to which each image's (softmax probabilities P x K, labels P) are appended,
    for auc_roc.

    `batch_size` images (or windows, views) go through the model at once when they have the same size (1:
    PaddleSeg's way). In eval mode an image's prediction does not depend on the others in its batch; on a CPU,
    16 images of 64x64 at once take half the time per image of one at a time, and gave the same pixels
    (bench/study_time.py's notes, tests/test_trainer.py)."""
    from segdistill.protocol import Protocol, batch_logits

    protocol = protocol or Protocol()
    rank, world = shard
    cm = ConfusionMatrix(num_classes, ignore_index)
    cm.nonfinite = None  # the first image whose logits are not finite (reduce_matrix tells every rank)
    was_training = model.training
    model.eval()
    indices = list(range(rank, len(dataset), world))
    done = 0
    with paddle.no_grad():
        for batch in _same_size_batches(dataset, indices, max(1, int(batch_size))):
            images = paddle.to_tensor(np.stack([img for img, _, _ in batch]).astype("float32"))
            infos = [info for _, _, info in batch]
            logits = batch_logits(model, images, protocol, infos, batch_size, autocast)
            for k, (logit, (_, label, _)) in enumerate(zip(logits, batch)):
                if not bool(paddle.isfinite(logit).all()):  # never an argmax of NaN (segdistill.finite)
                    cm.nonfinite = indices[done + k]
                    break
                logit = _to_label_size(logit, label.shape)
                cm.update(paddle.argmax(logit, axis=1).numpy()[0], label)
                if scores is not None:
                    probs = F.softmax(logit, axis=1).numpy()[0]
                    scores.append((probs.reshape(probs.shape[0], -1).T, label.reshape(-1)))
            if cm.nonfinite is not None:
                if world == 1:
                    raise NonFiniteLogits(cm.nonfinite)
                break
            done += len(batch)
    if was_training:
        model.train()
    return cm


def _same_size_batches(dataset, indices, batch_size: int):
    """Lists of (image CHW, label HW, trans_info) of at most `batch_size` consecutive samples whose images have
    one shape."""
    batch = []
    for idx in indices:
        sample = dataset[idx]
        img = np.asarray(sample["img"])
        label = np.asarray(sample["label"]).astype("int64")
        label = label.reshape(label.shape[-2:])
        if batch and (len(batch) == batch_size or batch[0][0].shape != img.shape):
            yield batch
            batch = []
        batch.append((img, label, sample.get("trans_info") or []))
    if batch:
        yield batch


def _to_label_size(logits, label_hw):
    """Logits at the label's resolution: resized bilinearly when the dataset's transforms did not say how
    (a dataset without trans_info), as PaddleSeg's inference resizes them."""
    if list(logits.shape[2:]) != list(label_hw):
        logits = F.interpolate(logits, size=label_hw, mode="bilinear", align_corners=False)
    return logits


def reduce_matrix(cm: ConfusionMatrix) -> ConfusionMatrix:
    """Sum a confusion matrix over all ranks (no-op in a single process)."""
    import paddle.distributed as dist

    if dist.get_world_size() > 1:
        nonfinite = getattr(cm, "nonfinite", None)  # any rank's non-finite logits stop every rank
        flag = paddle.to_tensor([-1 if nonfinite is None else nonfinite], dtype="int64")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if int(flag.numpy()[0]) >= 0:
            raise NonFiniteLogits(int(flag.numpy()[0]))
        t = paddle.to_tensor(cm.matrix.astype("int64"))
        dist.all_reduce(t)
        cm.matrix = t.numpy()
    return cm


def metrics_record(cm: ConfusionMatrix, class_names: list[str]) -> dict:
    """Metrics as a JSON-ready dict, per-class values keyed by class name (NaN -> None)."""
    m = cm.compute()

    def clean(v):
        v = float(v)
        return None if np.isnan(v) else v

    record = {k: clean(m[k]) for k in ("miou", "acc", "kappa", "dice")}
    record["num_pixels"] = int(m["num_pixels"])
    # The split's label histogram: what predicting one class everywhere would score (the report's degenerate runs).
    record["class_pixels"] = {name: int(v) for name, v in zip(class_names, cm.matrix.sum(axis=1))}
    for key in ("class_iou", "class_dice", "class_precision", "class_recall"):
        record[key] = {name: clean(v) for name, v in zip(class_names, m[key])}
    return record


class KnownSplit(NamedTuple):
    """A split's confusion matrix already computed by the caller with the same model: taken by evaluate_run when
    the split's files and the protocol are those it was computed with."""

    file_list: list | None
    protocol: dict
    matrix: ConfusionMatrix


def _known_matrix(given: KnownSplit | None, dataset, protocol: dict) -> ConfusionMatrix | None:
    """`given`'s matrix when it was computed on `dataset`'s files under `protocol`, else None."""
    files = getattr(dataset, "file_list", None)
    if given is None or given.protocol != protocol or files is None or given.file_list != files:
        return None
    return given.matrix


def evaluate_run(spec, clock=None, model=None, known: dict | None = None) -> dict:
    """Metrics of trained weights on each split (an `EvaluateSpec`): the evaluation record the report reads
    (written to `spec.out` when set). The same function whether a training job evaluates its best model or an
    evaluate job does, so both write the same record. `clock`: the caller's segdistill.timing.Clock (a training
    job's, which logs it); without one the forwards' time is logged here. `model`: `spec.model`'s weights already
    loaded into the model of `spec.config` (a training job's own model); else it is built and loaded here.

    `spec.run` (e.g. `distilled/kl/seed0`) is recorded with its arm, method and seed, so the report needs no paths.
    `known`: {split: KnownSplit} of `model` (a training job's last val evaluation of its best model), used instead
    of a pass over that split when its files and the protocol match and no auc_roc is asked for.
    """
    from segdistill.models import load_trained, trained_dict
    from segdistill.paddleseg_yaml import build, ignore_index, num_classes
    from segdistill.protocol import auc_roc, of_experiment

    if model is None:
        model, dic = load_trained(spec.config, spec.model, spec.data_root)
    else:
        dic = trained_dict(spec.config, spec.data_root)
    n = num_classes(dic)
    names = spec.class_names or [f"class_{i}" for i in range(n)]
    result = {"config": str(spec.config), "model": str(spec.model), "splits": {}}
    if spec.run:
        from segdistill.study import parse_run

        result.update(run=spec.run, **parse_run(spec.run))
    from segdistill.timing import Clock

    protocol = of_experiment(dic, spec.config, spec.test_config)
    result["protocol"] = protocol.record()
    builder, own_clock = build(dic, spec.config), clock is None
    clock = clock or Clock()
    for split in spec.splits:
        ds = build_split(builder, split)
        scores = [] if protocol.auc_roc else None
        cm = _known_matrix((known or {}).get(split), ds, result["protocol"]) if scores is None else None
        with clock("evaluate"):
            try:
                if cm is None:
                    cm = evaluate(
                        model, ds, n, ignore_index(dic), batch_size=spec.batch_size, protocol=protocol, scores=scores
                    )
            except NonFiniteLogits as exc:
                raise NonFinite(f"{spec.run or spec.model}: {spec.model} on the {split} split: {exc}") from None
        result["splits"][split] = dict(metrics_record(cm, names), num_images=len(ds))
        if scores is not None:
            result["splits"][split]["auc_roc"] = auc_roc(*zip(*scores), n, ignore_index(dic)) if scores else None
        print(f"{split}: mIoU={result['splits'][split]['miou']:.4f} on {len(ds)} images", file=sys.stderr)
    if spec.out is not None:
        from segdistill.atomic import write_json

        write_json(spec.out, result)
    if own_clock:
        print(clock.line(), file=sys.stderr)
    return result
