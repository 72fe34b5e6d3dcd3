"""Model cost: parameters, multiply-accumulates at the configured input size, and measured latency.

FLOPs come from our own counter, not `paddle.flops`: on paddle 3.3.1 `paddle.flops` fails in its parameter
summary (it converts a 1-element tensor with `int()`). The counter hooks every Conv2D, Conv2DTranspose and
Linear and counts their multiply-accumulates (MACs) for one image; FLOPs are reported as 2 × MACs. Batch norm,
activations, pooling and resizing are left out (a few percent on these models), as most published counts do.
"""

from __future__ import annotations

import csv
import math
import statistics
import sys
import time

from segdistill.paddle_env import paddle

from segdistill.errors import SegDistillError
from segdistill.models import input_size, load_trained

nn = paddle.nn


def count_params(model) -> dict:
    """Trainable parameters, and all (incl. batch-norm running statistics)."""
    trainable = sum(int(math.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)
    total = sum(int(math.prod(v.shape)) for v in model.state_dict().values())
    return {"params": trainable, "params_all": total}


def _conv_macs(layer, out) -> int:
    w = layer.weight.shape  # [out_c, in_c / groups, kh, kw] (Conv2D) or [in_c, out_c / groups, kh, kw] (transpose)
    if isinstance(layer, nn.Conv2DTranspose):
        # Every input pixel is multiplied into a kh x kw patch of out_c / groups outputs.
        inp = layer._segdistill_in_shape
        return int(inp[0] * inp[2] * inp[3] * w[0] * w[1] * w[2] * w[3])
    return int(out.shape[0] * out.shape[2] * out.shape[3] * w[0] * w[1] * w[2] * w[3])


def count_macs(model, shape) -> dict:
    """Multiply-accumulates of one forward pass on a zero tensor of `shape` (N, C, H, W), per layer type."""
    per_type = {"conv": 0, "linear": 0}
    hooks = []

    def pre(layer, inputs):
        layer._segdistill_in_shape = list(inputs[0].shape)

    def post(layer, inputs, out):
        if isinstance(layer, nn.Linear):
            in_f, out_f = layer.weight.shape
            per_type["linear"] += int(math.prod(out.shape[:-1])) * in_f * out_f
        else:
            per_type["conv"] += _conv_macs(layer, out)

    for layer in model.sublayers(include_self=True):
        if isinstance(layer, (nn.Conv2D, nn.Conv2DTranspose, nn.Linear)):
            hooks.append(layer.register_forward_pre_hook(pre))
            hooks.append(layer.register_forward_post_hook(post))
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            model(paddle.zeros(list(shape), dtype="float32"))
    finally:
        for h in hooks:
            h.remove()
        if was_training:
            model.train()
    macs = per_type["conv"] + per_type["linear"]
    return {"macs": macs, "flops": 2 * macs, **{f"macs_{k}": v for k, v in per_type.items()}}


def _sync(device: str) -> None:
    if device.startswith("gpu"):
        paddle.device.synchronize()


def measure_latencies(models, runs: int = 20, warmup: int = 3, device: str = "cpu") -> list[dict]:
    """Wall time per image of each (model, input shape[, protocol]): `warmup` untimed passes, then `runs` timed
    ones. With a protocol (segdistill.protocol) an image's time is that of its logits under it, as evaluation
    computes them (windows, scales, flips); without, one forward.

    The models take turns within every round, so a burst of load from other processes slows them all alike
    instead of biasing whichever model happened to be measured at the time.
    """
    if runs < 1:
        raise SegDistillError(f"report.latency_runs must be at least 1, got {runs}")
    previous = paddle.get_device()
    paddle.set_device(device)
    times = [[] for _ in models]
    try:
        inputs, calls = [], []
        for model, shape, *protocol in models:
            model.to(device=device)
            model.eval()
            inputs.append(paddle.rand(list(shape), dtype="float32"))
            calls.append(_call(model, protocol[0] if protocol else None))
        with paddle.no_grad():
            for i in range(warmup + runs):
                for j, (_model, shape, *_rest) in enumerate(models):
                    _sync(device)
                    t0 = time.perf_counter()
                    calls[j](inputs[j])
                    _sync(device)
                    if i >= warmup:
                        times[j].append((time.perf_counter() - t0) * 1000.0 / shape[0])
    finally:
        paddle.set_device(previous)
    return [
        {"median_ms": statistics.median(t), "min_ms": min(t), "max_ms": max(t), "runs": runs, "warmup": warmup}
        for t in times
    ]


def _call(model, protocol):
    if protocol is None:
        return model
    from segdistill.protocol import batch_logits

    return lambda x: batch_logits(model, x, protocol, batch_size=int(x.shape[0]))


def measure_latency(model, shape, runs: int = 20, warmup: int = 3, device: str = "cpu") -> dict:
    """Median (and spread) of wall time per image of one model."""
    return measure_latencies([(model, shape)], runs, warmup, device)[0]


def gpu_available() -> bool:
    return paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


def cpu_threads() -> int:
    from segdistill import threads

    return threads.in_effect()


def load_for_cost(name: str, config: str, weights: str | None, test_config=None):
    """The model of `config` (weights loaded when given: the evaluated model), its input shape, its evaluation
    protocol (its YAML's test_config, or `test_config` for every model) and static cost."""
    from segdistill.protocol import of_experiment

    model, dic = load_trained(config, weights)
    h, w = input_size(dic, config)
    shape = (1, 3, h, w)
    protocol = of_experiment(dic, config, test_config)
    row = {
        "model": name,
        "config": str(config),
        # The model's type names what was measured when there is no backbone (BiSeNetV2, FastSCNN, UNet).
        "architecture": dic["model"].get("type", ""),
        "backbone": (dic["model"].get("backbone") or {}).get("type", ""),
        "input": f"{h}x{w}",
        "protocol": protocol.label(),
        **count_params(model),
    }
    macs = count_macs(model, shape)
    row.update(macs=macs["macs"], flops=macs["flops"])
    return model, shape, protocol, row


COLUMNS = [
    "model",
    "architecture",
    "backbone",
    "input",
    "protocol",
    "params",
    "params_all",
    "macs",
    "flops",
    "cpu_ms",
    "cpu_ms_min",
    "cpu_ms_max",
    "cpu_threads",
    "gpu_ms",
    "gpu_ms_min",
    "gpu_ms_max",
    "latency_runs",
    "warmup",
    "compression",
    "flops_ratio",
    "cpu_speedup",
    "gpu_speedup",
    "config",
]


def add_ratios(rows: list[dict], reference: str = "teacher") -> list[dict]:
    """Compression (reference params / params), FLOPs ratio and speedups (reference latency / latency)."""
    ref = next((r for r in rows if r["model"] == reference), None)
    if ref is None:
        raise SegDistillError(f"cost table: no '{reference}' row to compare against")

    def ratio(a, b):
        return a / b if b and not (math.isnan(a) or math.isnan(b)) else math.nan

    for r in rows:
        r["compression"] = ratio(ref["params"], r["params"])
        r["flops_ratio"] = ratio(ref["flops"], r["flops"])
        r["cpu_speedup"] = ratio(ref["cpu_ms"], r["cpu_ms"])
        r["gpu_speedup"] = ratio(ref["gpu_ms"], r["gpu_ms"])
    return rows


def write_cost(rows: list[dict], out_csv) -> None:
    from segdistill.atomic import replacing

    with replacing(out_csv) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def cost_table(
    models: list[tuple[str, str, str | None]], out_csv, runs: int, warmup: int = 3, test_config=None
) -> list[dict]:
    """`models`: (name, config, weights) with a 'teacher' among them; writes the CSV, returns the rows. The
    latency is an image's under its model's evaluation protocol (`protocol` column; `test_config`: the study's
    for every model, else each YAML's own)."""
    from segdistill.timing import Clock

    clock = Clock()
    loaded = [load_for_cost(*m, test_config=test_config) for m in models]
    rows = [r for *_, r in loaded]
    pairs = [(m, shape, protocol) for m, shape, protocol, _ in loaded]
    with clock("latency"):  # what this job computes: the timed forwards (bench/study_time.py)
        cpu = measure_latencies(pairs, runs, warmup, "cpu")
    for r, lat in zip(rows, cpu):
        r.update(
            cpu_ms=lat["median_ms"],
            cpu_ms_min=lat["min_ms"],
            cpu_ms_max=lat["max_ms"],
            cpu_threads=cpu_threads(),
            latency_runs=runs,
            warmup=warmup,
        )
    with clock("latency"):
        gpu = measure_latencies(pairs, runs, warmup, "gpu:0") if gpu_available() else [None] * len(rows)
    for r, lat in zip(rows, gpu):
        r.update(
            gpu_ms=lat["median_ms"] if lat else math.nan,
            gpu_ms_min=lat["min_ms"] if lat else math.nan,
            gpu_ms_max=lat["max_ms"] if lat else math.nan,
        )
    add_ratios(rows)
    write_cost(rows, out_csv)
    print(clock.line(), file=sys.stderr)
    return rows


def cost_job(spec, log=None) -> list[dict]:
    """The cost job of a `segdistill.specs.CostSpec` (the workflow's rule, on leased devices, and `segdistill
    cost`): a job that leased a GPU Paddle cannot use stops first; one line per model."""
    import sys

    from segdistill.doctor import check_devices

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    log(check_devices())
    models = [
        ("teacher", spec.teacher_config, spec.teacher_model),
        ("student", spec.student_config, spec.student_model),
    ]
    rows = cost_table(models, spec.out, runs=spec.runs, warmup=spec.warmup, test_config=spec.test_config)
    for row in rows:
        log(
            f"{row['model']}: {row['params']} params, {row['flops'] / 1e9:.3f} GFLOPs at {row['input']}, "
            f"CPU {row['cpu_ms']:.2f} ms/img ({row['protocol']}, {row['cpu_threads']} threads)"
        )
    return rows
