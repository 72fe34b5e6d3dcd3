"""Recorders: capture the outputs of named sublayers during a forward pass."""

from __future__ import annotations

import difflib

from segdistill.errors import SegDistillError

LOGITS = "logits"  # the model's first output, not a sublayer


def sublayer_names(model) -> list[str]:
    return [name for name, _ in model.named_sublayers()]


def check_names(model, names, role: str) -> None:
    """Every name must be a sublayer of `model` (or `logits`); else name it and suggest the closest real ones."""
    known = sublayer_names(model)
    known_set = set(known)
    for name in names:
        if name == LOGITS or name in known_set:
            continue
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise SegDistillError(
            f"{role} model ({type(model).__name__}) has no layer named '{name}'{hint}. "
            f"List them with `segdistill layers CONFIG`."
        )


class Recorder:
    """Keeps the latest output of each named sublayer; `logits` is filled in by the caller."""

    def __init__(self, model, names):
        self.outputs: dict = {}
        self._hooks = []
        layers = dict(model.named_sublayers())
        for name in dict.fromkeys(names):  # unique, order kept
            if name == LOGITS:
                continue
            self._hooks.append(layers[name].register_forward_post_hook(self._make_hook(name)))

    def _make_hook(self, name):
        def hook(layer, inputs, output):
            # Some layers return tuples/lists; distil the first tensor.
            self.outputs[name] = output[0] if isinstance(output, (list, tuple)) else output

        return hook

    def clear(self) -> None:
        self.outputs = {}

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
