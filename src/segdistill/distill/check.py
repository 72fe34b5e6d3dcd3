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
    from segdistill.paddleseg_yaml import build_model, experiment_dict

    dic = experiment_dict(config, data_root=data_root, pretrained_backbone=False, resolve_backbone=False)
    dic["model"]["pretrained"] = None
    return build_model(dic, config), dic


def check_terms(student_config, teacher_config, methods, out, data_root=None, log=print, cache=None) -> dict:
    """Probe each method's terms ({name: raw terms, or None for the student YAML's `distill_loss`}, resolved as the
    distill_terms job resolves them) on both untrained models at the student's input size; write
    {input_size, methods: {name: [term names]}} to `out`, or raise naming the method and the term.

    With `cache` ({dtype, max_gb, ranks}: teacher.outputs cached), the size the teacher-output cache will take is
    computed from the teacher's tensors at that size and refused over max_gb here, before anything trains (a
    Cityscapes-size study needs terabytes and is told to run its teacher online)."""
    from segdistill.paddle_env import paddle

    from segdistill.distill.distiller import Distiller
    from segdistill.distill.teachers import isolated_rng
    from segdistill.distill.terms import resolve_terms
    from segdistill.models import input_size
    from segdistill.paddleseg_yaml import ignore_index

    with isolated_rng():
        student, sdic = _untrained(student_config, data_root)
        teacher, _ = _untrained(teacher_config, data_root)
    height, width = input_size(sdic, student_config)
    images = paddle.zeros([2, 3, height, width])  # two images: a train-mode probe's batch norm needs more than one
    checked, term_lists = {}, []
    for name, raw in methods.items():
        source = f"distill.{name}.terms"
        terms = resolve_terms(raw, student_config, sdic, source)
        term_lists.append(terms)
        Distiller(student, teacher, terms, ignore_index(sdic)).setup(images)
        checked[name] = [t.name for t in terms]
        log(f"{source}: {', '.join(checked[name])}: layers, shapes and connectors fit both models at {height}x{width}")
    if cache:
        record_cache_size(teacher, term_lists, (height, width), sdic, cache, student_config, log)
    record = {
        "input_size": [height, width],
        "student": str(student_config),
        "teacher": str(teacher_config),
        "methods": checked,
    }
    write_json(out, record)
    return record


def record_cache_size(teacher, term_lists, size, sdic: dict, cache: dict, source, log=print) -> None:
    """The teacher-output cache's size for the study's schedule (iterations x global batch), from the teacher's
    tensors on one random batch of the input size; raises over cache.max_gb, naming teacher.outputs: online."""
    from segdistill.paddle_env import paddle

    import numpy as np

    from segdistill.distill.cache import cache_recorder, size_problem, teacher_names, teacher_tensors
    from segdistill.errors import SegDistillError

    names = teacher_names(term_lists)
    # Random, not zero, images: the logits rule compares the head's upsampled output with the model's.
    images = paddle.to_tensor(np.random.RandomState(0).uniform(-1, 1, (2, 3, *size)).astype("float32"))
    teacher.eval()
    rule, recorder = cache_recorder(teacher, names, images)
    shapes = {n: list(t.shape[1:]) for n, t in teacher_tensors(teacher, recorder, names, rule, images).items()}
    batch = int(sdic["batch_size"]) * max(1, int(cache.get("ranks", 1)))
    what, why = size_problem(shapes, int(sdic["iters"]), batch, cache["dtype"], float(cache["max_gb"]))
    log(f"{source}: {what}")
    if why:
        raise SegDistillError(f"{source}: {why}")
