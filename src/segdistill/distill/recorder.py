"""Recorders: capture the outputs of named sublayers during a forward pass, and only inside a `with` block.

Hooks live only for the block (as mmrazor's recorders), so a forward pass outside one -- validation, a probe
that is not meant to record, another tool's hooks -- records nothing and keeps no tensor alive.
"""

from __future__ import annotations

import difflib

from segdistill.errors import SegDistillError

LOGITS = "logits"  # the model's first output, not a sublayer; `logits.1`, `logits.2`, ... are its other outputs


def output_name(i: int) -> str:
    """The name of the model's output i: `logits` (the main head's prediction), then `logits.1`, ..."""
    return LOGITS if i == 0 else f"{LOGITS}.{i}"


def output_index(name: str) -> int | None:
    """i for `logits` / `logits.i`, None for a sublayer name."""
    if name == LOGITS:
        return 0
    head, _, tail = name.partition(".")
    return int(tail) if head == LOGITS and tail.isdigit() and int(tail) > 0 else None


def model_outputs(out) -> dict:
    """{`logits`: output 0, `logits.1`: output 1, ...} of a model's return value (a list, or one tensor)."""
    outs = out if isinstance(out, (list, tuple)) else [out]
    return {output_name(i): t for i, t in enumerate(outs)}


def check_outputs(outputs: dict, names, role: str, mode: str) -> None:
    """Every output name among `names` must be in `outputs` (one forward's); else say which the model has."""
    for name in names:
        if output_index(name) is not None and name not in outputs:
            raise SegDistillError(
                f"{role} model has no output '{name}': in {mode} mode it returns {len(outputs)} output(s) "
                f"({', '.join(outputs)}). The teacher runs in eval mode (its main output only); the student in "
                f"train mode has its auxiliary heads too. List them with `segdistill layers CONFIG`."
            )


def sublayer_names(model) -> list[str]:
    return [name for name, _ in model.named_sublayers()]


def check_names(model, names, role: str) -> None:
    """Every name must be a sublayer of `model` or an output (`logits`, `logits.N`, checked on a forward later);
    else name it and suggest the closest real ones."""
    known = sublayer_names(model)
    known_set = set(known)
    for name in names:
        if output_index(name) is not None or name in known_set:
            continue
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise SegDistillError(
            f"{role} model ({type(model).__name__}) has no layer named '{name}'{hint}. "
            f"List them with `segdistill layers CONFIG`."
        )


class Recorder:
    """Records the output of each named sublayer while in use: `with recorder as outputs: model(x)`.

    Entering registers one forward hook per name and returns a fresh dict that the hooks fill; leaving removes
    the hooks. The dict belongs to the caller, so nothing recorded outlives the caller's use of it. Outputs
    (`logits`, `logits.N`) are not sublayers: the caller adds the model's outputs itself (`model_outputs`).
    """

    def __init__(self, model, names):
        layers = dict(model.named_sublayers())
        self._layers = {
            name: layers[name] for name in dict.fromkeys(names) if output_index(name) is None
        }  # unique, in order
        self._hooks = []

    def __enter__(self) -> dict:
        if self._hooks:
            raise RuntimeError("this recorder is already recording (nested `with`)")
        outputs: dict = {}
        self._hooks = [
            layer.register_forward_post_hook(self._make_hook(name, outputs)) for name, layer in self._layers.items()
        ]
        return outputs

    def __exit__(self, *exc) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    @staticmethod
    def _make_hook(name, outputs):
        def hook(layer, inputs, output):
            # Some layers return tuples/lists; distil the first tensor.
            outputs[name] = output[0] if isinstance(output, (list, tuple)) else output

        return hook
