"""Name -> loss function registry, and the input checks every loss shares.

A distillation loss is a plain function

    fn(student, teacher, label=None, ignore_index=255, *, <options with defaults>) -> 0-D paddle Tensor

on NCHW float tensors (equal shapes, or equal N, H, W for a loss registered with `any_channels`). Its keyword
parameters with defaults, other than `label`, `ignore_index` and the context below, are its *options*: what a
distillation term's `options:` may set (`options`, `check_options`), so a new loss with its own hyperparameters
is one file. Configs name losses by their registered name; `get_loss` turns a name into the function and
explains unknown names.

Context the distiller supplies (never options): `module=` the loss's trainable part, the connector named by
`register(name, module=...)` (segdistill.distill.connectors), built for (student channels, teacher channels) and
trained with the student like a connector (MGD's generator); `keys=` one list of ints per image of the batch,
from the keyed data stream and the iteration, for a loss registered `keyed=True` that draws random numbers
(MGD's mask), so a run is reproducible and resumable.
"""

import difflib
import inspect

from segdistill.paddle_env import paddle

from segdistill.errors import SegDistillError

_REGISTRY = {}
NOT_OPTIONS = ("label", "ignore_index", "module", "keys")


def register(name, *, module=None, keyed=False, any_channels=False):
    """Decorator: make the function available as `get_loss(name)`.

    `module`: connector name of the loss's trainable part (passed back as `module=`); `keyed`: the loss takes
    `keys=` (random draws); `any_channels`: student and teacher may differ in channels (relation-based losses).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"loss name must be a non-empty string, got {name!r}")

    def deco(fn):
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"loss name {name!r} is registered twice")
        fn.module_factory, fn.keyed, fn.any_channels = module, keyed, any_channels
        _REGISTRY[name] = fn
        return fn

    return deco


def options(name) -> dict:
    """{option: default} of the loss `name`: its keyword parameters with defaults, context excluded."""
    params = list(inspect.signature(get_loss(name)).parameters.values())[2:]  # after student, teacher
    return {p.name: p.default for p in params if p.name not in NOT_OPTIONS and p.default is not inspect.Parameter.empty}


def _type_ok(value, default) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return default is None or isinstance(value, type(default))


def check_options(name, given: dict, where: str) -> dict:
    """`given` checked against the options loss `name` declares: unknown names are refused with the known ones
    listed (and the closest suggested), a value of another type than the default's too. Returns a copy."""
    if not isinstance(given, dict):
        raise SegDistillError(f"{where}: options must be a mapping of option names to values, got {given!r}")
    known = options(name)
    given = dict(given)
    for key, value in given.items():
        if isinstance(value, str) and isinstance(known.get(key), float):
            # YAML 1.1 (PyYAML) reads `2e-5` (no dot) as a string; a number was meant
            try:
                given[key] = value = float(value)
            except ValueError:
                pass
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            listed = ", ".join(f"{k} (default {v!r})" for k, v in known.items()) or "none"
            raise SegDistillError(f"{where}: loss '{name}' has no option '{key}'{hint} Its options: {listed}")
        if not _type_ok(value, known[key]):
            raise SegDistillError(
                f"{where}: option '{key}' of loss '{name}' must be a {type(known[key]).__name__} "
                f"like its default {known[key]!r}, got {value!r}"
            )
    return given


def get_loss(name):
    """The loss function registered as `name`; SegDistillError listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        known = ", ".join(available())
        raise SegDistillError(f"unknown loss {name!r}; known losses: {known}") from None


def available():
    """Sorted names of all registered losses."""
    return sorted(_REGISTRY)


# ---- shared input checks -------------------------------------------------------------------------------------


def check_pair(loss_name, student, teacher, any_channels=False):
    """Both tensors NCHW floating point with equal shapes (equal N, H, W with `any_channels`); returns the
    detached teacher."""
    s_shape, t_shape = list(student.shape), list(teacher.shape)
    if len(s_shape) != 4 or len(t_shape) != 4:
        raise SegDistillError(
            f"loss {loss_name!r} needs NCHW tensors; the student tensor has shape {s_shape}, the teacher's {t_shape}"
        )
    if (s_shape[:1] + s_shape[2:] != t_shape[:1] + t_shape[2:]) if any_channels else s_shape != t_shape:
        raise SegDistillError(
            f"loss {loss_name!r}: student shape {s_shape} differs from teacher shape {t_shape}; "
            "pick layers of equal shape or add a connector"
        )
    if not student.is_floating_point() or not teacher.is_floating_point():
        raise SegDistillError(
            f"loss {loss_name!r} needs floating point tensors, got {student.dtype} and {teacher.dtype}"
        )
    if teacher.dtype != student.dtype:
        teacher = teacher.astype(student.dtype)
    # The teacher is a fixed target: no gradient may flow back into it.
    return teacher.detach()


def check_temperature(loss_name, temperature):
    t = float(temperature)
    if not t > 0:
        raise SegDistillError(f"loss {loss_name!r}: temperature must be > 0, got {temperature!r}")
    return t


def require_unit_temperature(loss_name, temperature):
    # Silently ignoring a configured temperature would make a run differ from what its config says.
    if float(temperature) != 1.0:
        raise SegDistillError(f"loss {loss_name!r} has no temperature; set temperature to 1 (got {temperature!r})")


def prepare_label(loss_name, label, shape):
    """Label as N x H x W int64 matching the NCHW `shape`; nearest-neighbour resize when H, W differ.

    Nearest neighbour maps output index i to input index floor(i * in / out), per axis, so class ids are
    never blended.
    """
    if not isinstance(label, paddle.Tensor):
        label = paddle.to_tensor(label)
    lab_shape = list(label.shape)
    if len(lab_shape) == 4 and lab_shape[1] == 1:
        label = label.squeeze(1)
    elif len(lab_shape) != 3:
        raise SegDistillError(f"loss {loss_name!r}: label must be N x H x W or N x 1 x H x W, got shape {lab_shape}")
    if label.dtype != paddle.int64:
        label = label.astype("int64")
    if int(label.shape[0]) != int(shape[0]):
        raise SegDistillError(
            f"loss {loss_name!r}: label batch size {int(label.shape[0])} differs from the tensors' {int(shape[0])}"
        )
    in_h, in_w = int(label.shape[1]), int(label.shape[2])
    out_h, out_w = int(shape[2]), int(shape[3])
    if (in_h, in_w) != (out_h, out_w):
        rows = paddle.to_tensor([i * in_h // out_h for i in range(out_h)], dtype="int64")
        cols = paddle.to_tensor([j * in_w // out_w for j in range(out_w)], dtype="int64")
        label = paddle.index_select(label, rows, axis=1)
        label = paddle.index_select(label, cols, axis=2)
    label.stop_gradient = True
    return label
