"""Trained models as the rest of the engine sees them: "config + weights -> model", and the input size.

Evaluation, export, the cost table, the report figures and the command line all need the model exactly as it was
evaluated, so they all build it here: the experiment's own YAML with every `pretrained:` dropped (the evaluated
weights cover the whole model, backbone included), then the weights loaded strictly.
"""

from __future__ import annotations

from segdistill.errors import SegDistillError
from segdistill.paddleseg_yaml import build_model, experiment_dict, load_weights


def trained_dict(config, data_root=None) -> dict:
    """The experiment dict of `config` as a trained model's: no pretrained weights to fetch or load."""
    dic = experiment_dict(config, data_root=data_root, pretrained_backbone=False)
    dic["model"]["pretrained"] = None
    return dic


def load_trained(config, weights=None, data_root=None):
    """(model in eval mode, experiment dict) of `config` with `weights` loaded strictly.

    `weights=None` gives the untrained model (its structure is enough for parameter and FLOP counts).
    `data_root` overrides the data sets' root in the returned dict (for building the val/test splits).
    """
    dic = trained_dict(config, data_root)
    model = build_model(dic, config)
    if weights:
        load_weights(model, weights, source=f"weights for {config}")
    model.eval()
    return model, dic


def input_size(dic: dict, source="<config>") -> tuple[int, int]:
    """(H, W) a model sees: the val transforms' Resize target, else a crop size (PaddleSeg writes (w, h))."""
    for ds_key, keys in (
        ("val_dataset", ("target_size", "crop_size")),
        ("train_dataset", ("crop_size", "target_size")),
    ):
        for t in (dic.get(ds_key) or {}).get("transforms") or []:
            for key in keys:
                if isinstance(t, dict) and t.get(key) is not None:
                    v = t[key]
                    if isinstance(v, int):
                        return v, v
                    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) for x in v):
                        return int(v[1]), int(v[0])
                    raise SegDistillError(
                        f"{source}: {ds_key}.transforms {t.get('type')}.{key} must be an int or [w, h], got {v!r}"
                    )
    raise SegDistillError(
        f"{source}: no input size: give val_dataset.transforms a Resize with target_size (or a crop_size)"
    )
