"""`segdistill predict`: a trained model's class ids over your images, written as PaddleSeg's predict writes them.

The model comes one of two ways, and predicts the same: an exported inference model folder (`deploy.yaml`, as
the study's export writes it), run through `paddle.inference`; or a PaddleSeg YAML with `.pdparams` weights, the
dygraph model as evaluation builds it. Either way an image gets the YAML's val transforms (the deploy.yaml's
`transforms` are those), and its class ids are taken as evaluation takes them: the logits from
`segdistill.protocol.batch_logits` under the model's test_config (the YAML's own; for an exported folder the one
its run was evaluated under, which the export records), the transforms undone to the image's size, the argmax.

Per image, named as PaddleSeg's tools/predict.py names them (the image's path relative to the folder or list
file given, else its file name):
- `pseudo_color_prediction/<name>.png`: the class ids as a palette PNG with PaddleSeg's palette;
- `added_prediction/<name>`: the image blended with its class colours (0.6 image, 0.4 colours), in the image's
  own format.

Every input is checked before anything is written (the model, and every image decoded once), and each output
file is written whole or not at all (segdistill.atomic), so a killed run leaves no half image that looks done.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

from segdistill.paddle_env import paddle

import cv2
import numpy as np

from segdistill.errors import SegDistillError
from segdistill.threads import describe, in_effect

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")  # PaddleSeg's, in either case
PSEUDO_DIR, ADDED_DIR = "pseudo_color_prediction", "added_prediction"
IMAGE_WEIGHT = 0.6  # PaddleSeg's overlay: 0.6 image + 0.4 class colour


def palette(n: int = 256) -> np.ndarray:
    """PaddleSeg's colours (n x 3 RGB uint8): class k gets the Pascal VOC bit pattern of k + 1, so class 0 is
    (128, 0, 0) and class 1 (0, 128, 0): bit 3j, 3j+1, 3j+2 of k + 1 sets bit 7-j of red, green, blue."""
    out = np.zeros((n, 3), dtype=np.uint8)
    for k in range(n):
        lab, j = k + 1, 0
        while lab:
            for c in range(3):
                out[k, c] |= ((lab >> c) & 1) << (7 - j)
            lab >>= 3
            j += 1
    return out


PALETTE = palette()


def image_list(path) -> tuple[list[Path], Path | None]:
    """(images, the folder names are taken relative to) as PaddleSeg's predict finds them: an image file; a
    folder searched recursively (hidden files and notebook checkpoints skipped), in sorted order; or a list
    file whose lines' first column is an image path relative to the list file's folder."""
    path = Path(path)
    if path.is_dir():
        found = [
            Path(root, f)
            for root, _, files in os.walk(path)
            if ".ipynb_checkpoints" not in root
            for f in files
            if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)
        ]
        if not found:
            raise SegDistillError(f"{path}: no images in the folder ({', '.join(IMAGE_SUFFIXES)})")
        return sorted(found), path
    if not path.is_file():
        raise SegDistillError(f"{path}: no such image, folder or list file")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return [path], None
    try:
        lines = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise SegDistillError(f"{path}: neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a list file") from None
    if not lines:
        raise SegDistillError(f"{path}: the list file names no images")
    return [path.parent / line for line in lines], path.parent


def output_names(images: list[Path], base: Path | None) -> list[Path]:
    """Each image's name under the output folders; two images may not share one."""
    names, seen = [], {}
    for img in images:
        name = Path(os.path.relpath(img, base)) if base is not None else Path(img.name)
        name = Path(img.name) if ".." in name.parts else name  # a list file may name images anywhere
        if name in seen:
            raise SegDistillError(f"{img}: its output name {name} is also {seen[name]}'s")
        seen[name] = img
        names.append(name)
    return names


def read_image(path: Path) -> np.ndarray:
    """The image as PaddleSeg's transforms read it (cv2, 3 channels, BGR); a missing or undecodable file is refused."""
    if not path.is_file():
        raise SegDistillError(f"{path}: image not found")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SegDistillError(f"{path}: cannot decode the image")
    return img


def overlay(image_bgr: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The image blended with its class colours, as PaddleSeg's visualize does (BGR uint8)."""
    colours = PALETTE[ids.astype(np.uint8)][..., ::-1]
    return cv2.addWeighted(image_bgr, IMAGE_WEIGHT, np.ascontiguousarray(colours), 1 - IMAGE_WEIGHT, 0)


def pseudo_png(ids: np.ndarray) -> bytes:
    """The class ids as a palette PNG (one byte per pixel, PaddleSeg's palette)."""
    from PIL import Image

    img = Image.fromarray(ids.astype(np.uint8))
    img.putpalette(PALETTE.reshape(-1).tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _write_bytes(path: Path, data: bytes) -> None:
    from segdistill.atomic import replacing

    with replacing(path) as tmp:
        tmp.write_bytes(data)


def write_outputs(out: Path, name: Path, image_bgr: np.ndarray, ids: np.ndarray) -> None:
    """pseudo_color_prediction/<name>.png and added_prediction/<name> for one image, each written whole."""
    _write_bytes(out / PSEUDO_DIR / name.with_suffix(".png"), pseudo_png(ids))
    ok, encoded = cv2.imencode(name.suffix or ".png", overlay(image_bgr, ids))
    if not ok:
        raise SegDistillError(f"cannot encode {name} as {name.suffix}")
    _write_bytes(out / ADDED_DIR / name, encoded.tobytes())


def compose(transforms: list, source) -> object:
    """PaddleSeg's Compose of a transforms list (as a YAML or deploy.yaml writes it); errors name `source`."""
    from paddleseg.cvlibs import manager
    from paddleseg.transforms import Compose

    ops = []
    for item in transforms or []:
        kw = dict(item) if isinstance(item, dict) else {}
        name = kw.pop("type", None)
        if name not in manager.TRANSFORMS.components_dict:
            raise SegDistillError(f"{source}: unknown transform {name!r}")
        try:
            ops.append(manager.TRANSFORMS[name](**kw))
        except (TypeError, ValueError) as exc:
            raise SegDistillError(f"{source}: transform {name}: {exc}") from None
    return Compose(ops)


class ExportedModel:
    """An exported model folder run through paddle.inference, called as the dygraph model is (tensor in, logits
    out), with its val transforms and the protocol its run was evaluated under (deploy.yaml's `protocol`; plain
    when it has none), or `test_config` when given. Made and run once on zeros when built, so a broken folder
    is refused before anything is written.

    On CPU: no memory optimisation (Paddle 3.3.1 refuses its pass on PIR `model.json` programs, and PaddleSeg's
    deploy script turns it on); oneDNN when the program runs under it, else the plain CPU kernels (3.3.1's oneDNN
    executor rejects DeepLabV3P's interpolate attributes). The export's check records which in deploy.yaml
    (`cpu.onednn`); a folder without that record is tried with oneDNN first."""

    def __init__(self, directory, gpu: bool = False, threads: int | None = None, test_config="yaml"):
        from segdistill.export import PredictorModel, predictor
        from segdistill.protocol import Protocol, of_record

        self.directory = Path(directory)
        deploy, dic, known, recorded = _read_deploy(self.directory)
        self.transforms = compose(dic["transforms"], deploy)
        if test_config == "yaml":
            self.protocol = of_record({"protocol": recorded, "run": f"{deploy}"})
        else:
            self.protocol = Protocol.parse(test_config, "--test_config")
        shape = [1 if d is None or d < 0 else int(d) for d in dic.get("input_shape") or [1, 3, 64, 64]]
        shape[2:] = [s if s > 1 else 64 for s in shape[2:]]  # a dynamic size: any image runs it
        self.net, self.onednn = None, None
        for onednn in [False] if gpu else [known] if isinstance(known, bool) else [True, False]:
            try:
                self.net = PredictorModel(predictor(self.directory, onednn, threads=threads, gpu=gpu))
                self.net(paddle.zeros(shape, dtype="float32"))
                self.onednn = onednn
                break
            except (NotImplementedError, RuntimeError, ValueError) as exc:
                error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if self.onednn is None:
            raise SegDistillError(f"{self.directory}: the exported model does not run: {error}")
        self.what = f"{self.directory} (paddle.inference, oneDNN {'on' if self.onednn else 'off'})"

    def __call__(self, images):
        return self.net(images)


def _read_deploy(directory: Path):
    """(deploy.yaml's path, its Deploy section, cpu.onednn, protocol) of an exported folder."""
    import yaml

    deploy = directory / "deploy.yaml"
    if not deploy.is_file():
        raise SegDistillError(f"{directory}: no deploy.yaml (not an exported model folder; weights need --config)")
    try:
        whole = yaml.safe_load(deploy.read_text()) or {}
        dic = whole.get("Deploy") or {}
        known = (whole.get("cpu") or {}).get("onednn")  # what the export's check found, when it says
    except (yaml.YAMLError, AttributeError) as exc:
        raise SegDistillError(f"{deploy}: not a deploy.yaml: {exc}") from None
    if not isinstance(dic, dict) or "transforms" not in dic:
        raise SegDistillError(f"{deploy}: no Deploy.transforms (not a PaddleSeg deploy.yaml)")
    return deploy, dic, known, whole.get("protocol")


class TrainedModel:
    """A PaddleSeg YAML's model with trained weights loaded strictly, as evaluation builds it, with its val
    transforms and its evaluation protocol (the YAML's test_config, or `test_config` when given)."""

    def __init__(self, config, weights, test_config="yaml"):
        from segdistill.models import load_trained
        from segdistill.protocol import of_experiment

        self.model, dic = load_trained(config, weights)
        self.transforms = compose((dic.get("val_dataset") or {}).get("transforms"), config)
        self.protocol = of_experiment(dic, config, test_config)
        self.what = f"{weights} ({config})"

    def __call__(self, images):
        return self.model(images)


def load_model(model, config=None, test_config="yaml", gpu: bool = False):
    """The model to predict with: an exported folder (`model` a folder), or `config` YAML with `model` weights."""
    model = Path(model)
    if not model.exists():
        raise SegDistillError(f"{model}: no such exported model folder or weights file")
    if model.is_dir():
        if config:
            raise SegDistillError(f"{model}: a folder is an exported model and takes no --config")
        return ExportedModel(model, gpu=gpu, threads=in_effect(), test_config=test_config)
    if not config:
        raise SegDistillError(f"{model}: weights need --config (their PaddleSeg YAML), or give an exported folder")
    return TrainedModel(config, model, test_config)


def use_device(name: str) -> str:
    """Paddle's device for `--device` (auto: the GPU when this Paddle has one); returns cpu or gpu."""
    has_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if name == "auto":
        name = "gpu" if has_gpu else "cpu"
    if name == "gpu" and not has_gpu:
        raise SegDistillError("--device gpu: this Paddle has no GPU (a CPU build, or no device visible)")
    paddle.set_device(name)
    return name


def _batches(images, names, transforms, batch_size: int):
    """Lists of (name, image BGR, transformed CHW float32, trans_info) of at most `batch_size` consecutive images
    whose transformed shapes agree (evaluation's batching)."""
    batch = []
    for path, name in zip(images, names):
        bgr = read_image(path)
        data = transforms({"img": bgr.astype("float32"), "trans_info": []})
        if batch and (len(batch) == batch_size or batch[0][2].shape != data["img"].shape):
            yield batch
            batch = []
        batch.append((name, bgr, data["img"], data.get("trans_info") or []))
    if batch:
        yield batch


def predict(
    model, images, out, config=None, batch_size: int = 1, device: str = "auto", test_config="yaml", log=None
) -> dict:
    """Predict every image of `images` (a file, folder or list file) with `model` (an exported folder, or weights
    of the PaddleSeg YAML `config`) and write both outputs per image into `out`: `segdistill predict` and the
    workflow's predict rule. Returns {images, out, model, device}; `log` (default: stderr) gets the summary."""
    from segdistill.timing import Clock

    if batch_size < 1:
        raise SegDistillError(f"--batch_size must be at least 1, got {batch_size}")
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    paths, base = image_list(images)
    names = output_names(paths, base)
    device = use_device(device)
    net = load_model(model, config, test_config, gpu=device == "gpu")
    out, clock = Path(out), Clock()
    predict_all(net, paths, names, out, batch_size, clock)
    where = device if device == "gpu" else f"cpu ({describe(in_effect())})"
    log(
        f"predicted {len(paths)} image(s) with {net.what} ({net.protocol.label()}) on {where}: "
        f"{out / PSEUDO_DIR}, {out / ADDED_DIR}"
    )
    log(clock.line())
    return {"images": len(paths), "out": str(out), "model": net.what, "device": device}


def predict_all(model, images, names, out: Path, batch_size: int = 1, clock=None) -> None:
    """Every image decoded first (nothing is written if one cannot be), then predicted in batches and written.
    `model`: an ExportedModel or TrainedModel (load_model); `clock` times the forwards ("predict").

    An image's ids are taken as evaluation takes them (segdistill.evaluate.evaluate): its logits from
    `segdistill.protocol.batch_logits` under the model's protocol with the transforms undone, at the image's
    size, then the argmax."""
    import contextlib

    from segdistill.evaluate import _to_label_size
    from segdistill.protocol import batch_logits

    for path in images:
        read_image(path)
    with paddle.no_grad():
        for batch in _batches(images, names, model.transforms, batch_size):
            with clock("predict") if clock else contextlib.nullcontext():
                x = paddle.to_tensor(np.stack([chw for _, _, chw, _ in batch]).astype("float32"))
                logits = batch_logits(model, x, model.protocol, [info for *_, info in batch], batch_size)
                ids = [
                    paddle.argmax(_to_label_size(logit, bgr.shape[:2]), axis=1).numpy()[0]
                    for logit, (_, bgr, _, _) in zip(logits, batch)
                ]
            for (name, bgr, _, _), pred in zip(batch, ids):
                write_outputs(out, name, bgr, pred)
