"""Teacher outputs computed once: the teacher run over a seed's exact training stream, its tensors stored.

Why: a distill step costs a student step plus a teacher forward (docs/benchmark.md), and every distilled arm and
sweep point of a seed pays that forward again on the same augmented images. The data stream is keyed
(segdistill.data.stream): the batch at iteration `it` is a pure function of (data, transforms, data seed, it), so
one job can replay it through the teacher and store what every distilled run of that stream needs (the union of
the terms' `teacher:` names). The distill jobs then read their slice per iteration and never build the teacher.

Store: a folder with `manifest.json` and one `.npy` per tensor, shaped [iterations, global batch, C, H, W]. The
files are written and read with plain positional I/O at the row's offset (the `.npy` header is numpy's, so
`np.load(..., mmap_mode="r")` opens them too): a distill job reads one slice per step and maps nothing, so its
resident memory does not grow with the cache. The manifest records each file's size and SHA-256; opening the
cache checks both, so a truncated or altered file is refused by name before the first step.

`logits` are stored before the model's final upsampling when the teacher has PaddleSeg's `head` + bilinear
`F.interpolate` structure (DeepLabV3P and others built alike): the head's output is recorded and upsampled at read
time with the same call, which on the same float32 values gives the same bits as the online teacher. Whether
that holds is checked on the first batch (not assumed from the model's type); otherwise the full-size logits are
stored. The manifest records which.

The teacher's forward runs in fp32 outside any autocast here and online alike
(segdistill.distill.teachers.run_teacher; the manifest's `teacher.precision`), whatever the student trains in;
the dtype below is only how the result is stored.

Dtypes: float16 (default), bfloat16 (stored as uint16 bit patterns, numpy has no bfloat16; rounded to nearest
even), float32 (bit-identical to the online teacher).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from segdistill.config import DATA_PATH_KEYS
from segdistill.data.fetch import sha256_of
from segdistill.distill.recorder import LOGITS, Recorder, check_outputs, model_outputs, output_index
from segdistill.errors import SegDistillError
from segdistill.precision import TEACHER_PRECISION

FORMAT = 2  # 2: each tensor file's size and SHA-256 in the manifest
DTYPES = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32}
MANIFEST = "manifest.json"
HEAD = "head"  # PaddleSeg's segmentation head: its first output is the logits before the final upsampling


# -- what identifies a stream and its data --------------------------------------------------------------------

def data_digest(train_dataset: dict, dataset, validation=None) -> str:
    """SHA-256 of what decides the training images: the student config's train data set section (type, mode,
    transforms; not where it lies), its file list (relative to the data root) and the data validation record."""
    section = {k: v for k, v in train_dataset.items() if k not in DATA_PATH_KEYS}
    root = str(getattr(dataset, "dataset_root", None) or train_dataset.get("dataset_root") or "")
    files = [[os.path.relpath(str(p), root) if root else str(p) for p in entry]
             for entry in (getattr(dataset, "file_list", None) or [])]
    record = {"train_dataset": section, "files": files,
              "validation_sha256": sha256_of(validation) if validation else None}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def stream_key(stream, iterations: int) -> dict:
    """The stream a cache serves (see segdistill.data.stream.KeyedStream), as the manifest records it."""
    return {"data_seed": int(stream.seed), "batch_size": int(stream.batch_size), "ranks": int(stream.world),
            "global_batch": int(stream.global_batch), "iterations": int(iterations)}


def teacher_weights(teacher_dic: dict, teacher_config) -> Path:
    weights = teacher_dic["model"].get("pretrained")
    if not weights:
        raise SegDistillError(
            f"{teacher_config}: model.pretrained is not set; point it at the trained teacher "
            f"(`segdistill patch-teacher`) -- distilling from an untrained teacher is never what you want"
        )
    if not Path(weights).is_file():
        raise SegDistillError(f"{teacher_config}: model.pretrained: weights file not found: {weights}")
    return Path(weights)


# -- dtypes ---------------------------------------------------------------------------------------------------

def _encode(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
        rounded = bits + (np.uint32(0x7FFF) + ((bits >> 16) & 1))  # round to nearest, ties to even
        return (rounded >> 16).astype(np.uint16)
    return np.ascontiguousarray(x, dtype=DTYPES[dtype])


def _decode(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return (x.astype(np.uint32) << 16).view(np.float32)
    return x.astype(np.float32, copy=False)


# -- the teacher's logits: before or after the final upsampling -------------------------------------------------

def _upsample(logits, size, align_corners):
    """The call PaddleSeg's DeepLabV3P makes on its head's logits (models/deeplab.py)."""
    import paddle.nn.functional as F

    return F.interpolate(logits, size, mode="bilinear", align_corners=align_corners)


def logits_rule(model, images) -> dict | None:
    """{'layer': 'head', 'mode': 'bilinear', 'align_corners': ..} when the model's first output is exactly the
    bilinear upsampling of its head's first output (checked on `images`), else None (store full-size logits)."""
    names = {n for n, _ in model.named_sublayers()}
    if HEAD not in names or not hasattr(model, "align_corners") or getattr(model, "data_format", "NCHW") != "NCHW":
        return None
    from segdistill.distill.teachers import run_teacher

    rec, out = run_teacher(model, Recorder(model, [HEAD]), images)
    logits = out[0] if isinstance(out, (list, tuple)) else out
    head = rec.get(HEAD)
    if head is None or len(head.shape) != 4 or len(logits.shape) != 4:
        return None
    size = [int(s) for s in images.shape[2:]]
    again = _upsample(head, size, bool(model.align_corners))
    if list(again.shape) != list(logits.shape) or not np.array_equal(again.numpy(), logits.numpy()):
        return None
    return {"layer": HEAD, "mode": "bilinear", "align_corners": bool(model.align_corners), "size": size}


# -- writing --------------------------------------------------------------------------------------------------

def teacher_names(term_lists) -> list[str]:
    """The union of the terms' `teacher:` names, in first-seen order."""
    names = []
    for terms in term_lists:
        for t in terms:
            if t.teacher not in names:
                names.append(t.teacher)
    return names


def _row_offset(path: Path, shape, dtype) -> int:
    """Create the `.npy` file (numpy's header, full size, sparse) and return where its data starts."""
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=tuple(shape))
    offset = mm.offset
    del mm
    return offset


def write_teacher_outputs(student_config, teacher_config, terms_files, out, *, data_seed: int, data_root=None,
                          iters=None, batch_size=None, ranks: int = 1, dtype: str = "float16", max_gb: float = 8.0,
                          validation=None, pretrained_cache=None, log=print) -> dict:
    """Run the teacher of `teacher_config` (patched: model.pretrained = trained weights) over the training stream
    of `student_config` (data seed, per-rank batch x ranks, iterations as the distill job will have them) and
    store every tensor that the terms in `terms_files` take from the teacher. Returns the manifest.

    `terms_files`: terms files (`segdistill.distill.read_terms_file`); empty -> the student YAML's `distill_loss`.
    The folder `out` appears complete or not at all (written beside it, then renamed).
    """
    from segdistill.config import build, build_model, experiment_dict, ignore_index, num_classes
    from segdistill.data.stream import KeyedStream
    from segdistill.distill.terms import read_terms_file, resolve_terms
    from segdistill.doctor import check_devices
    from segdistill.paddle_env import paddle

    log(check_devices())  # a job that leased GPUs Paddle cannot use stops here, as training does
    if dtype not in DTYPES:
        raise SegDistillError(f"cache.dtype: '{dtype}' is not one of {', '.join(DTYPES)}")
    if ranks < 1:
        raise SegDistillError(f"ranks must be at least 1, got {ranks}")
    out = Path(out)
    sdic = experiment_dict(student_config, data_root=data_root, iters=iters, batch_size=batch_size,
                           pretrained_backbone=False, resolve_backbone=False)
    term_lists = [resolve_terms(read_terms_file(f), student_config, sdic, str(f)) for f in terms_files] or [
        resolve_terms(None, student_config, sdic)]
    names = teacher_names(term_lists)
    tdic = experiment_dict(teacher_config, data_root=data_root, pretrained_cache=pretrained_cache,
                           pretrained_backbone=False)
    weights = teacher_weights(tdic, teacher_config)
    if num_classes(tdic) != num_classes(sdic):
        raise SegDistillError(f"teacher {teacher_config} has num_classes {num_classes(tdic)} but student "
                              f"{student_config} has {num_classes(sdic)}")
    try:
        dataset = build(sdic, student_config).train_dataset
    except (AssertionError, FileNotFoundError, OSError) as exc:
        raise SegDistillError(f"{student_config}: cannot open the data set: {exc}") from None
    iterations, per_rank = int(sdic["iters"]), int(sdic["batch_size"])
    streams = [KeyedStream(dataset, per_rank, data_seed, r, ranks, num_classes=num_classes(sdic),
                           ignore_index=ignore_index(sdic)) for r in range(ranks)]
    key = stream_key(streams[0], iterations)
    teacher = build_model(tdic, teacher_config)
    from segdistill.distill.teachers import freeze, run_teacher
    from segdistill.distill.recorder import check_names

    check_names(teacher, names, "teacher")
    freeze(teacher)
    probe = paddle.to_tensor(streams[0].batch(1)[0])
    rule = logits_rule(teacher, probe) if LOGITS in names else None
    record = [n for n in names if output_index(n) is None] + ([HEAD] if rule and HEAD not in names else [])
    recorder = Recorder(teacher, record)

    def tensors(images) -> dict:
        feats, logits = run_teacher(teacher, recorder, images)
        outputs = model_outputs(logits)
        check_outputs(outputs, names, "teacher", "eval")
        feats.update({n: outputs[n] for n in names if n in outputs})
        if rule:
            feats[LOGITS] = feats[HEAD]
        return {n: feats[n] for n in names}

    first = tensors(probe)
    shapes = {n: [iterations, key["global_batch"], *[int(s) for s in t.shape[1:]]] for n, t in first.items()}
    itemsize = np.dtype(DTYPES[dtype]).itemsize
    need = sum(int(np.prod(s)) * itemsize for s in shapes.values())
    gb = need / 1e9
    per_sample = need // (iterations * key["global_batch"])
    log(f"teacher outputs: {', '.join(f'{n} {shapes[n][2:]}' for n in names)} x {iterations} iterations x "
        f"{key['global_batch']} images, {dtype}: {gb:.3f} GB ({per_sample} bytes per image)")
    if gb > max_gb:
        raise SegDistillError(
            f"the teacher outputs need {gb:.2f} GB ({per_sample} bytes per image x {key['global_batch']} images x "
            f"{iterations} iterations, {dtype}), over cache.max_gb {max_gb:g}. Options: fewer iterations, "
            f"cache.dtype float16 (or bfloat16), fewer or smaller teacher tensors in the terms, a larger "
            f"cache.max_gb if the disk has room, or teacher.outputs: online (no cache)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by a killed job writing this folder
        shutil.rmtree(stale)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.mkdir()
    try:
        files = {n: f"{n}.npy" for n in names}
        offsets = {n: _row_offset(tmp / files[n], shapes[n], DTYPES[dtype]) for n in names}
        row = {n: int(np.prod(shapes[n][2:])) * itemsize for n in names}
        handles = {n: open(tmp / files[n], "r+b") for n in names}
        try:
            for it in range(1, iterations + 1):
                for r, stream in enumerate(streams):
                    images = probe if (it == 1 and r == 0) else paddle.to_tensor(stream.batch(it)[0])
                    feats = first if (it == 1 and r == 0) else tensors(images)
                    for n in names:
                        arr = feats[n].numpy()
                        if [*arr.shape[1:]] != shapes[n][2:] or arr.shape[0] != per_rank:
                            raise SegDistillError(
                                f"teacher tensor '{n}' has shape {list(arr.shape)} at iteration {it} but "
                                f"{[per_rank, *shapes[n][2:]]} at iteration 1: a cache needs fixed-size batches "
                                f"(give the train transforms a fixed Resize or crop size)")
                        pos = ((it - 1) * key["global_batch"] + r * per_rank) * row[n]
                        os.pwrite(handles[n].fileno(), _encode(arr, dtype).tobytes(), offsets[n] + pos)
                if it % max(1, iterations // 10) == 0 or it == iterations:
                    log(f"[teacher outputs] iteration {it}/{iterations}")
        finally:
            for fh in handles.values():
                fh.close()
        manifest = {
            "format": FORMAT,
            "teacher": {"config": str(teacher_config), "weights": str(weights),
                        "weights_sha256": sha256_of(weights), "precision": TEACHER_PRECISION},
            "data": {"sha256": data_digest(sdic["train_dataset"], dataset, validation),
                     "student_config": str(student_config),
                     "validation_sha256": sha256_of(validation) if validation else None},
            "stream": key,
            "dtype": dtype,
            "storage": "uint16 bit patterns of bfloat16" if dtype == "bfloat16" else dtype,
            "bytes": need,
            "bytes_per_image": per_sample,
            "tensors": {n: {"file": files[n], "shape": shapes[n],
                            "upsample": ({k: rule[k] for k in ("mode", "align_corners", "size")}
                                         if n == LOGITS and rule else None),
                            "recorded": (f"{HEAD} (before the model's final upsampling)" if n == LOGITS and rule
                                         else "the model's first output" if n == LOGITS else n)}
                        for n in names},
        }
        for n in names:  # what opening the cache checks first: a truncated or altered file is named at once
            manifest["tensors"][n].update(file_record(tmp / files[n]))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log(f"wrote {out}: {need} bytes, manifest sha256 {sha256_of(out / MANIFEST)}")
    return manifest


# -- reading --------------------------------------------------------------------------------------------------

def file_record(path: Path) -> dict:
    """What the manifest records of a tensor file: its size in bytes and its SHA-256."""
    return {"size": path.stat().st_size, "sha256": sha256_of(path)}


def verify_files(folder, manifest: dict, names) -> None:
    """Each tensor file of `names` has the size and the SHA-256 its manifest records.

    The `.npy` header alone says nothing of the rows after it: a file cut short keeps its header and fails only
    when a read comes up short, mid-run; one altered in place never fails. Checked when the cache is opened, so
    either is one error naming the file before the first step. Costs one read of the files (docs/benchmark.md)."""
    for n in names:
        spec = manifest["tensors"][n]
        path = Path(folder) / spec["file"]
        redo = "recompute the teacher outputs (rerun the teacher_outputs job, e.g. with --forcerun teacher_outputs)"
        if not path.is_file():
            raise SegDistillError(f"{path}: missing (the manifest lists it for teacher tensor '{n}'); {redo}")
        size = path.stat().st_size
        if size != spec["size"]:
            raise SegDistillError(f"{path}: {size} bytes, the manifest records {spec['size']} (truncated or extended "
                                  f"after it was written); {redo}")
        digest = sha256_of(path)
        if digest != spec["sha256"]:
            raise SegDistillError(f"{path}: content differs from the manifest's SHA-256 (file {digest[:16]}..., "
                                  f"manifest {spec['sha256'][:16]}...): altered after it was written; {redo}")


def read_manifest(folder) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise SegDistillError(f"{folder}: no {MANIFEST}: not a complete teacher-outputs folder "
                              f"(`segdistill teacher-outputs` writes one)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SegDistillError(f"{path}: not valid JSON: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise SegDistillError(f"{path}: format {manifest.get('format')!r}, this segdistill reads format {FORMAT}")
    return manifest


def check_manifest(manifest: dict, expected: dict, names, source) -> None:
    """Refuse a cache that was not made for this run: name the first field that differs."""
    stream = manifest["stream"]
    for field in ("data_seed", "global_batch"):
        if stream[field] != expected["stream"][field]:
            raise SegDistillError(
                f"{source}: stream.{field} is {stream[field]} in the cache but {expected['stream'][field]} in this "
                f"run; recompute the teacher outputs for this run's stream (or use teacher.outputs: online)")
    if stream["iterations"] < expected["stream"]["iterations"]:
        raise SegDistillError(
            f"{source}: stream.iterations: the cache holds {stream['iterations']} iterations, this run needs "
            f"{expected['stream']['iterations']}")
    if manifest["teacher"]["weights_sha256"] != expected["weights_sha256"]:
        raise SegDistillError(
            f"{source}: teacher.weights_sha256 is {manifest['teacher']['weights_sha256']} in the cache but this run's "
            f"teacher ({expected['weights']}) has {expected['weights_sha256']}: the cache is of another teacher")
    # Caches written before the field existed were computed the same way (fp32, no autocast).
    precision = manifest["teacher"].get("precision", "fp32")
    if precision != TEACHER_PRECISION:
        raise SegDistillError(
            f"{source}: teacher.precision is {precision} in the cache but this segdistill runs the teacher in "
            f"{TEACHER_PRECISION}; recompute the teacher outputs")
    if manifest["data"]["sha256"] != expected["data_sha256"]:
        raise SegDistillError(
            f"{source}: data.sha256 differs: the cache was made from other data or train transforms than this "
            f"run's ({manifest['data']['sha256'][:12]} vs {expected['data_sha256'][:12]})")
    missing = [n for n in names if n not in manifest["tensors"]]
    if missing:
        raise SegDistillError(
            f"{source}: tensors: the cache has no teacher tensor(s) {missing} (it has "
            f"{', '.join(manifest['tensors'])}); recompute it with every method's terms")


class CachedTeacher:
    """Teacher tensors of this rank's slice at iteration `it`, read from a teacher-outputs folder.

    Same interface as `segdistill.distill.teachers.OnlineTeacher` (`features`, `probe`, `check_names`), but
    `features` needs the iteration, and nothing here holds a model.
    """

    cached = True

    def __init__(self, folder, expected: dict, rank: int = 0):
        self.folder = Path(folder)
        self.manifest = read_manifest(folder)
        self.manifest_sha256 = sha256_of(self.folder / MANIFEST)
        self.expected, self.rank = expected, rank
        self.batch_size = expected["stream"]["batch_size"]
        self.dtype = self.manifest["dtype"]
        self._files = {}

    def check_names(self, names) -> None:
        check_manifest(self.manifest, self.expected, names, self.folder / MANIFEST)
        self.names = list(dict.fromkeys(names))
        verify_files(self.folder, self.manifest, self.names)
        itemsize = np.dtype(DTYPES[self.dtype]).itemsize
        for n in self.names:
            spec = self.manifest["tensors"][n]
            path = self.folder / spec["file"]
            with open(path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(fh)
                offset = fh.tell()
            if list(shape) != spec["shape"] or dtype != np.dtype(DTYPES[self.dtype]):
                raise SegDistillError(f"{path}: holds {list(shape)} {dtype}, the manifest says {spec['shape']} "
                                      f"{self.dtype}")
            row = int(np.prod(shape[2:])) * itemsize
            self._files[n] = (os.open(path, os.O_RDONLY), offset, row, list(shape))

    def _read(self, name, it: int) -> np.ndarray:
        fd, offset, row, shape = self._files[name]
        first = (it - 1) * shape[1] + self.rank * self.batch_size
        raw = os.pread(fd, row * self.batch_size, offset + first * row)
        arr = np.frombuffer(raw, dtype=DTYPES[self.dtype]).reshape([self.batch_size, *shape[2:]])
        return _decode(arr, self.dtype)

    def features(self, images=None, it: int | None = None) -> dict:
        from segdistill.paddle_env import paddle

        if it is None:
            raise SegDistillError("cached teacher outputs are read by iteration; call features(images, it)")
        if not 1 <= it <= self.manifest["stream"]["iterations"]:
            raise SegDistillError(f"{self.folder}: iteration {it} is outside the cache's "
                                  f"1..{self.manifest['stream']['iterations']}")
        out = {}
        for n in self.names:
            t = paddle.to_tensor(self._read(n, it))
            up = self.manifest["tensors"][n]["upsample"]
            out[n] = _upsample(t, up["size"], up["align_corners"]) if up else t
        return out

    def probe(self, images=None) -> dict:
        out = {}
        for n in self.names:
            spec = self.manifest["tensors"][n]
            hw = spec["upsample"]["size"] if spec["upsample"] else spec["shape"][3:]
            out[n] = [self.batch_size, spec["shape"][2], *hw]
        return out

    def close(self) -> None:
        for fd, *_ in self._files.values():
            os.close(fd)
        self._files = {}

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
