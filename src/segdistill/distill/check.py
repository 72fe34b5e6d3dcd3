"""Every method's terms checked against both models before anything trains.

A misspelled layer, tensors of different sizes, or channels that need a connector are otherwise found by the
distill job, after the teacher and the students have trained (hours on a real study). Here both models are built
from the study's configs without any weights (shapes do not depend on them) and every method's terms are probed
on a zero batch at the study's input size, through the same Distiller set-up a distill job runs, so the errors
are the same ones (closest layer names, the connector to add).
"""

from __future__ import annotations

from segdistill.atomic import write_json


def _untrained(config, data_root=None):
    """(model, experiment dict) of `config` with every `pretrained:` dropped (no weights, no download)."""
    from segdistill.config import build_model, experiment_dict

    dic = experiment_dict(config, data_root=data_root, pretrained_backbone=False, resolve_backbone=False)
    dic["model"]["pretrained"] = None
    return build_model(dic, config), dic


def check_terms(student_config, teacher_config, terms_files, out, data_root=None, log=print) -> dict:
    """Probe the terms of each terms file (`segdistill.distill.read_terms_file`) on both untrained models at the
    student's input size; write {input_size, methods: {file: [term names]}} to `out`, or raise naming the term."""
    from pathlib import Path

    from segdistill.paddle_env import paddle

    from segdistill.config import ignore_index
    from segdistill.distill.distiller import Distiller
    from segdistill.distill.teachers import isolated_rng
    from segdistill.distill.terms import read_terms_file, resolve_terms
    from segdistill.models import input_size

    with isolated_rng():
        student, sdic = _untrained(student_config, data_root)
        teacher, _ = _untrained(teacher_config, data_root)
    height, width = input_size(sdic, student_config)
    images = paddle.zeros([2, 3, height, width])  # two images: a train-mode probe's batch norm needs more than one
    checked = {}
    for path in terms_files:
        terms = resolve_terms(read_terms_file(path), student_config, sdic, str(path))
        Distiller(student, teacher, terms, ignore_index(sdic)).setup(images)
        checked[Path(path).stem] = [t.name for t in terms]
        log(
            f"{path}: {', '.join(checked[Path(path).stem])}: layers, shapes and connectors fit both models at "
            f"{height}x{width}"
        )
    record = {
        "input_size": [height, width],
        "student": str(student_config),
        "teacher": str(teacher_config),
        "methods": checked,
    }
    write_json(out, record)
    return record
