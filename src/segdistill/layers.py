"""`segdistill layers`: every sublayer with its output shape, and the model's outputs (`logits`, `logits.1`, ...) in
eval and train mode, so users pick distillation tensors by name."""

from __future__ import annotations

from segdistill.paddle_env import paddle

from segdistill.paddleseg_yaml import build_model, experiment_dict


def _input_size(dic: dict) -> tuple[int, int]:
    """The size the model is evaluated at, else 512x512 (PaddleSeg's usual crop): a listing needs some size."""
    from segdistill.errors import SegDistillError
    from segdistill.models import input_size

    try:
        return input_size(dic)
    except SegDistillError:
        return 512, 512


def layer_shapes(model, size: tuple[int, int]) -> list[tuple[str, str, list, int]]:
    """(name, type, output shape, parameter count incl. sublayers) for every sublayer, in definition order."""
    shapes, hooks = {}, []
    for name, layer in model.named_sublayers():

        def hook(layer, inputs, output, name=name):
            out = output[0] if isinstance(output, (list, tuple)) else output
            shapes[name] = list(out.shape) if hasattr(out, "shape") else []

        hooks.append(layer.register_forward_post_hook(hook))
    model.eval()
    with paddle.no_grad():
        logits = model(paddle.zeros([1, 3, *size]))
    for h in hooks:
        h.remove()
    rows = []
    for name, layer in model.named_sublayers():
        n_params = sum(int(p.size) for p in layer.parameters())
        rows.append((name, type(layer).__name__, shapes.get(name, "not called"), n_params))
    rows.extend(output_rows(model, size, logits))
    return rows


def output_rows(model, size, eval_out) -> list[tuple[str, str, list, int]]:
    """The model's outputs (`logits`, `logits.1`, ...) with shapes: in eval mode (what a teacher gives) and in
    train mode (a student's auxiliary heads too). The train-mode forward takes 2 images (batch norm needs more
    than one value per channel) and leaves the model in eval mode."""
    from segdistill.distill.recorder import model_outputs

    evals = model_outputs(eval_out)
    model.train()
    try:
        with paddle.no_grad():
            trains = model_outputs(model(paddle.zeros([2, 3, *size])))
    finally:
        model.eval()
    rows = []
    for name, t in trains.items():
        shape = [1, *t.shape[1:]]
        rows.append((name, "output (eval and train)" if name in evals else "output (train only)", shape, 0))
    rows.extend((n, "output (eval only)", list(t.shape), 0) for n, t in evals.items() if n not in trains)
    return rows


def list_layers(config: str, size: tuple[int, int] | None = None, depth: int | None = None) -> str:
    dic = experiment_dict(config)
    dic["model"]["pretrained"] = None
    if (dic["model"].get("backbone") or {}).get("pretrained"):
        dic["model"]["backbone"]["pretrained"] = None  # shapes do not need weights
    model = build_model(dic, config)
    size = size or _input_size(dic)
    rows = [
        r for r in layer_shapes(model, size) if depth is None or r[0].count(".") <= depth or r[1].startswith("output")
    ]
    width = max(len(r[0]) for r in rows)
    lines = [
        f"# {config}: {type(model).__name__}, input 1x3x{size[0]}x{size[1]}",
        f"{'name':<{width}}  {'type':<24} {'output shape':<22} params",
    ]
    for name, kind, shape, n in rows:
        lines.append(f"{name:<{width}}  {kind:<24} {str(shape):<22} {n}")
    return "\n".join(lines)
