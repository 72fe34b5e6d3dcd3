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

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from segdistill import threads
from segdistill.data.digest import data_digest
from segdistill.data.fetch import sha256_of
from segdistill.distill.distinct_inputs import BATCH, TABLE, DistinctTable, batches, distinct_datasets, inputs
from segdistill.distill.recorder import LOGITS, Recorder, check_outputs, model_outputs, output_index
from segdistill.errors import SegDistillError
from segdistill.precision import TEACHER_PRECISION
from segdistill.timing import Clock

FORMAT = 2  # 2: each tensor file's size and SHA-256 in the manifest
DTYPES = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32}
MANIFEST = "manifest.json"
HEAD = "head"  # PaddleSeg's segmentation head: its first output is the logits before the final upsampling


# -- what identifies a stream and its data --------------------------------------------------------------------


def stream_key(stream, iterations: int) -> dict:
    """The stream a cache serves (see segdistill.data.stream.KeyedStream), as the manifest records it."""
    return {
        "data_seed": int(stream.seed),
        "batch_size": int(stream.batch_size),
        "ranks": int(stream.world),
        "global_batch": int(stream.global_batch),
        "iterations": int(iterations),
    }


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


def cache_recorder(teacher, names, probe):
    """(logits rule, recorder) of a teacher whose tensors `names` a cache stores (see logits_rule)."""
    rule = logits_rule(teacher, probe) if LOGITS in names else None
    record = [n for n in names if output_index(n) is None] + ([HEAD] if rule and HEAD not in names else [])
    return rule, Recorder(teacher, record)


def teacher_tensors(teacher, recorder, names, rule, images) -> dict:
    """The teacher's tensors of one batch, by name (`logits` before the final upsampling when `rule` says)."""
    from segdistill.distill.teachers import run_teacher

    feats, logits = run_teacher(teacher, recorder, images)
    outputs = model_outputs(logits)
    check_outputs(outputs, names, "teacher", "eval")
    feats.update({n: outputs[n] for n in names if n in outputs})
    if rule:
        feats[LOGITS] = feats[HEAD]
    return {n: feats[n] for n in names}


def size_problem(shapes: dict, iterations: int, images: int, dtype: str, max_gb: float) -> tuple[str, str | None]:
    """(what the cache takes, why it is refused or None) for tensors of `shapes` per image ({name: [C, H, W]})."""
    per_sample = sum(int(np.prod(s)) for s in shapes.values()) * np.dtype(DTYPES[dtype]).itemsize
    gb = per_sample * images * iterations / 1e9
    what = (
        f"teacher outputs: {', '.join(f'{n} {list(s)}' for n, s in shapes.items())} x {iterations} iterations x "
        f"{images} images, {dtype}: {gb:.3f} GB ({per_sample} bytes per image)"
    )
    if gb <= max_gb:
        return what, None
    return what, (
        f"the teacher outputs need {gb:.2f} GB ({per_sample} bytes per image x {images} images x {iterations} "
        f"iterations, {dtype}), over cache.max_gb {max_gb:g}. Options: teacher.outputs: online (no cache; the "
        f"teacher runs in every distill job, as in PaddleSeg), fewer iterations, cache.dtype float16 (or bfloat16), "
        f"fewer or smaller teacher tensors in the terms, or a larger cache.max_gb if the disk has room"
    )


def _row_offset(path: Path, shape, dtype) -> int:
    """Create the `.npy` file (numpy's header, full size, sparse) and return where its data starts."""
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=tuple(shape))
    offset = mm.offset
    del mm
    return offset


# A job may write the caches of several seeds that share a teacher (`segdistill teacher-outputs` given several
# specs): the teacher is built, loaded and hashed once in the process, not once per seed.
_TEACHERS: dict = {}


def _teacher(tdic: dict, teacher_config, weights):
    """(frozen teacher model, SHA-256 of its weights), built once per process for the same config and file."""
    from segdistill.distill.teachers import freeze
    from segdistill.paddleseg_yaml import build_model

    stat = os.stat(weights)
    key = (str(teacher_config), json.dumps(tdic["model"], sort_keys=True, default=str), str(weights))
    key += (stat.st_size, stat.st_mtime_ns)
    if key not in _TEACHERS:
        model = build_model(tdic, teacher_config)
        freeze(model)
        _TEACHERS.clear()  # one teacher at a time: a job's specs share theirs
        _TEACHERS[key] = (model, sha256_of(weights))
    return _TEACHERS[key]


class _Plan:
    """What a teacher-outputs job will write, known before writing: the resolved student experiment, the teacher
    (frozen, recorded), one keyed stream per rank, the tensors' names and full shapes, and the bytes they take."""

    def __init__(self, spec, clock):
        from segdistill.paddle_env import paddle

        from segdistill.data.stream import training_stream
        from segdistill.distill.recorder import check_names
        from segdistill.distill.teachers import trained_teacher
        from segdistill.distill.terms import read_terms_file, resolve_terms

        if spec.dtype not in DTYPES:
            raise SegDistillError(f"cache.dtype: '{spec.dtype}' is not one of {', '.join(DTYPES)}")
        if spec.ranks < 1:
            raise SegDistillError(f"ranks must be at least 1, got {spec.ranks}")
        self.spec, self.clock = spec, clock
        config = spec.config
        # Every rank's slice of the distilled runs' stream, built as their trainer builds it.
        self.streams = [training_stream(spec, r, spec.ranks) for r in range(spec.ranks)]
        sdic, self.dataset = self.streams[0].experiment, self.streams[0].dataset
        if spec.distill_terms is not None:
            term_lists = [resolve_terms(t, config, sdic, "distill_terms") for t in spec.distill_terms]
        else:
            term_lists = [resolve_terms(read_terms_file(f), config, sdic, str(f)) for f in spec.distill] or [
                resolve_terms(None, config, sdic)
            ]
        self.names = teacher_names(term_lists)
        tdic, self.weights = trained_teacher(spec.teacher_config, config, sdic, spec.data_root, spec.pretrained_cache)
        self.sdic = sdic
        self.iterations, self.per_rank = int(sdic["iters"]), int(sdic["batch_size"])
        self.key = stream_key(self.streams[0], self.iterations)
        self.teacher, self.weights_sha256 = _teacher(tdic, spec.teacher_config, self.weights)
        check_names(self.teacher, self.names, "teacher")
        self.probe = paddle.to_tensor(self.streams[0].batch(1)[0])
        self.rule, self.recorder = cache_recorder(self.teacher, self.names, self.probe)
        self.first = self.tensors(self.probe)
        global_batch = self.key["global_batch"]
        self.shapes = {
            n: [self.iterations, global_batch, *[int(s) for s in t.shape[1:]]] for n, t in self.first.items()
        }
        self.itemsize = np.dtype(DTYPES[spec.dtype]).itemsize
        self.bytes = sum(int(np.prod(s)) * self.itemsize for s in self.shapes.values())
        self.per_sample = self.bytes // (self.iterations * global_batch)
        self.table, self.gathered = None, 0
        if spec.shared:
            self.table = DistinctTable(spec.shared, read_manifest(spec.shared))
            self.table.check(self.manifest(), self.names)

    def tensors(self, images) -> dict:
        """The teacher's tensors of one batch, by name (see teacher_tensors)."""
        with self.clock("teacher_forward"):
            return teacher_tensors(self.teacher, self.recorder, self.names, self.rule, images)

    def batches(self):
        """(iteration, rank, {name: array}) over the whole stream, every rank's slice of each iteration."""
        from segdistill.paddle_env import paddle

        for it in range(1, self.iterations + 1):
            for r, stream in enumerate(self.streams):
                images = stream.batch(it)[0]
                rows = self.table.gather(images, self.names) if self.table else None
                if rows is not None:
                    self.gathered += len(images)
                    yield it, r, rows
                    continue
                feats = self.first if (it == 1 and r == 0) else self.tensors(paddle.to_tensor(images))
                yield it, r, {n: t.numpy() for n, t in feats.items()}

    def check_size(self, log) -> None:
        """Say what will be written; refuse, before writing anything, a cache larger than `max_gb`."""
        shapes = {n: self.shapes[n][2:] for n in self.names}
        what, why = size_problem(shapes, self.iterations, self.key["global_batch"], self.spec.dtype, self.spec.max_gb)
        log(what)
        if why:
            raise SegDistillError(why)

    def verify(self, name: str, arr: np.ndarray, it: int) -> None:
        """Every batch has the shapes of the first (a cache stores fixed-size rows)."""
        if [*arr.shape[1:]] != self.shapes[name][2:] or arr.shape[0] != self.per_rank:
            raise SegDistillError(
                f"teacher tensor '{name}' has shape {list(arr.shape)} at iteration {it} but "
                f"{[self.per_rank, *self.shapes[name][2:]]} at iteration 1: a cache needs fixed-size batches "
                f"(give the train transforms a fixed Resize or crop size)"
            )

    def manifest(self) -> dict:
        spec, rule = self.spec, self.rule
        validation = spec.data_record

        def recorded(n):
            if n != LOGITS:
                return n
            return f"{HEAD} (before the model's final upsampling)" if rule else "the model's first output"

        upsample = {k: rule[k] for k in ("mode", "align_corners", "size")} if rule else None
        return {
            "format": FORMAT,
            "teacher": {
                "config": str(spec.teacher_config),
                "weights": str(self.weights),
                "weights_sha256": self.weights_sha256,
                "precision": TEACHER_PRECISION,
            },
            "data": {
                "sha256": data_digest(self.sdic["train_dataset"], self.dataset, validation),
                "student_config": str(spec.config),
                "validation_sha256": sha256_of(validation) if validation else None,
            },
            "stream": self.key,
            # The count changes the tensors' rounding; named only when not 1, so one-thread caches keep their hash.
            **({"threads": threads.in_effect()} if threads.in_effect() != 1 else {}),
            "dtype": spec.dtype,
            "storage": "uint16 bit patterns of bfloat16" if spec.dtype == "bfloat16" else spec.dtype,
            "bytes": self.bytes,
            "bytes_per_image": self.per_sample,
            "tensors": {
                n: {
                    "file": f"{n}.npy",
                    "shape": self.shapes[n],
                    "upsample": upsample if n == LOGITS else None,
                    "recorded": recorded(n),
                }
                for n in self.names
            },
        }


def _write_rows(plan: _Plan, folder: Path, log) -> None:
    """Every rank's slice of every iteration, at its row's offset in the tensor's `.npy` file."""
    names, dtype, key = plan.names, plan.spec.dtype, plan.key
    offsets = {n: _row_offset(folder / f"{n}.npy", plan.shapes[n], DTYPES[dtype]) for n in names}
    row = {n: int(np.prod(plan.shapes[n][2:])) * plan.itemsize for n in names}
    handles = {n: open(folder / f"{n}.npy", "r+b") for n in names}
    try:
        for it, r, feats in plan.batches():
            for n in names:
                plan.verify(n, feats[n], it)
                pos = ((it - 1) * key["global_batch"] + r * plan.per_rank) * row[n]
                os.pwrite(handles[n].fileno(), _encode(feats[n], dtype).tobytes(), offsets[n] + pos)
            if r == len(plan.streams) - 1 and (it % max(1, plan.iterations // 10) == 0 or it == plan.iterations):
                log(f"[teacher outputs] iteration {it}/{plan.iterations}")
    finally:
        for fh in handles.values():
            fh.close()


@contextlib.contextmanager
def _staged(out: Path):
    """A hidden sibling folder to write into, renamed onto `out` when the block ends without error: `out`
    appears complete or not at all. Folders left by a killed job writing `out` are removed first."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):
        shutil.rmtree(stale)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_teacher_outputs(spec, log=print, clock=None) -> dict:
    """Run the teacher of `spec.teacher_config` (patched: model.pretrained = trained weights) over the training
    stream of `spec.config` (data seed, per-rank batch x ranks, iterations as the distill job will have them) and
    store every tensor that the terms in `spec.distill` take from the teacher. Returns the manifest.

    `spec`: a `segdistill.specs.TeacherOutputsSpec`; `spec.distill` lists terms files
    (`segdistill.distill.read_terms_file`), empty -> the student YAML's `distill_loss`.
    Steps: plan (shapes and size, refused over `max_gb` before anything is written), write (each batch checked
    against the plan), then the manifest; the folder `spec.out` appears complete or not at all.
    `clock`: the job's segdistill.timing.Clock when it writes several caches (the job logs it); else logged here.
    """
    from segdistill.doctor import check_devices

    log(check_devices())  # a job that leased GPUs Paddle cannot use stops here, as training does
    own_clock = clock is None
    plan = _Plan(spec, clock or Clock())
    if spec.distinct:
        return _write_distinct(plan, Path(spec.out), log, own_clock)
    plan.check_size(log)
    out = Path(spec.out)
    with _staged(out) as tmp:
        _write_rows(plan, tmp, log)
        if plan.table is not None:
            total = plan.iterations * plan.key["global_batch"]
            why = f" ({plan.table.why_empty})" if plan.table.why_empty else ""
            log(f"teacher outputs: {plan.gathered} of {total} samples gathered from {plan.table.folder}{why}")
        manifest = plan.manifest()
        for n in plan.names:  # what opening the cache checks first: a truncated or altered file is named at once
            manifest["tensors"][n].update(file_record(tmp / f"{n}.npy"))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"wrote {out}: {plan.bytes} bytes, manifest sha256 {sha256_of(out / MANIFEST)}")
    if own_clock:
        log(plan.clock.line())
    return manifest


def _write_distinct(plan: _Plan, out: Path, log, own_clock: bool) -> dict:
    """The teacher's tensors on every distinct training input (segdistill.distill.distinct_inputs), float32, in
    batches of BATCH; an empty table saying why when the train transforms draw more than flips or the table would
    be larger than `max_gb`. Returns the manifest."""
    from segdistill.paddle_env import paddle

    datasets, why = distinct_datasets(plan.sdic, plan.spec.config)
    # First pass: the digests only (no forward), so the table's size is known before anything is computed.
    digests = [d for d, _ in inputs(datasets)] if why is None else []
    per_sample = sum(int(np.prod(plan.shapes[n][2:])) for n in plan.names) * 4
    if len(digests) * per_sample / 1e9 > plan.spec.max_gb:
        why = f"{len(digests)} distinct inputs x {per_sample} bytes is over cache.max_gb {plan.spec.max_gb:g}"
        digests = []
    manifest = plan.manifest()
    del manifest["stream"], manifest["bytes_per_image"]
    manifest.update(dtype="float32", storage="float32", bytes=len(digests) * per_sample, rows=len(digests))
    with _staged(out) as tmp:
        # Rows go straight to the files (numpy's .npy layout, as the seeds' caches): memory does not grow with them.
        files = {
            n: np.lib.format.open_memmap(tmp / f"{n}.npy", "w+", np.float32, (len(digests), *plan.shapes[n][2:]))
            for n in plan.names
        }
        start = 0
        for images in batches(datasets, digests, BATCH) if digests else ():
            feats = plan.tensors(paddle.to_tensor(images))
            for n in plan.names:
                files[n][start : start + len(images)] = feats[n].numpy()
            start += len(images)
        for n in plan.names:
            files[n].flush()
            del files[n]
            manifest["tensors"][n].update(shape=[len(digests), *plan.shapes[n][2:]], **file_record(tmp / f"{n}.npy"))
        (tmp / TABLE).write_text(json.dumps({"why_empty": why, "digests": digests}) + "\n")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"wrote {out}: the teacher on {len(digests)} distinct training inputs" + (f" (none: {why})" if why else ""))
    if own_clock:
        log(plan.clock.line())
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
            raise SegDistillError(
                f"{path}: {size} bytes, the manifest records {spec['size']} (truncated or extended "
                f"after it was written); {redo}"
            )
        digest = sha256_of(path)
        if digest != spec["sha256"]:
            raise SegDistillError(
                f"{path}: content differs from the manifest's SHA-256 (file {digest[:16]}..., "
                f"manifest {spec['sha256'][:16]}...): altered after it was written; {redo}"
            )


def read_manifest(folder) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise SegDistillError(
            f"{folder}: no {MANIFEST}: not a complete teacher-outputs folder (`segdistill teacher-outputs` writes one)"
        )
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
                f"run; recompute the teacher outputs for this run's stream (or use teacher.outputs: online)"
            )
    if stream["iterations"] < expected["stream"]["iterations"]:
        raise SegDistillError(
            f"{source}: stream.iterations: the cache holds {stream['iterations']} iterations, this run needs "
            f"{expected['stream']['iterations']}"
        )
    if manifest["teacher"]["weights_sha256"] != expected["weights_sha256"]:
        raise SegDistillError(
            f"{source}: teacher.weights_sha256 is {manifest['teacher']['weights_sha256']} in the cache but this run's "
            f"teacher ({expected['weights']}) has {expected['weights_sha256']}: the cache is of another teacher"
        )
    # Caches written before the field existed were computed the same way (fp32, no autocast).
    precision = manifest["teacher"].get("precision", "fp32")
    if precision != TEACHER_PRECISION:
        raise SegDistillError(
            f"{source}: teacher.precision is {precision} in the cache but this segdistill runs the teacher in "
            f"{TEACHER_PRECISION}; recompute the teacher outputs"
        )
    if manifest["data"]["sha256"] != expected["data_sha256"]:
        raise SegDistillError(
            f"{source}: data.sha256 differs: the cache was made from other data or train transforms than this "
            f"run's ({manifest['data']['sha256'][:12]} vs {expected['data_sha256'][:12]})"
        )
    missing = [n for n in names if n not in manifest["tensors"]]
    if missing:
        raise SegDistillError(
            f"{source}: tensors: the cache has no teacher tensor(s) {missing} (it has "
            f"{', '.join(manifest['tensors'])}); recompute it with every method's terms"
        )


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

    def record(self) -> dict:
        """How the teacher's tensors came, as the run's summary records it (the report's provenance)."""
        return {
            "mode": "cached",
            "folder": str(self.folder),
            "manifest_sha256": self.manifest_sha256,
            "dtype": self.manifest["dtype"],
            "teacher_precision": TEACHER_PRECISION,
            # A manifest names its job's thread count when it is not 1 (a default study's caches keep their hash).
            "threads": self.manifest.get("threads", 1),
        }

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
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(fh)
                offset = fh.tell()
            if list(shape) != spec["shape"] or dtype != np.dtype(DTYPES[self.dtype]):
                raise SegDistillError(
                    f"{path}: holds {list(shape)} {dtype}, the manifest says {spec['shape']} {self.dtype}"
                )
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
            raise SegDistillError(
                f"{self.folder}: iteration {it} is outside the cache's 1..{self.manifest['stream']['iterations']}"
            )
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
