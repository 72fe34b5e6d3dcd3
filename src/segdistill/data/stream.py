"""The training data as a keyed stream: the batch at iteration `it` is a pure function of (data, transforms,
seed, it).

Why: results must not depend on how batches are produced. PaddleSeg's transforms draw from Python's `random` and
numpy's global `np.random`, so whichever process runs them, in whatever order, changes the augmentation. Here
every sample is augmented with both generators seeded from a key derived from (stream seed, iteration, position
in the global batch) and the caller's generator state is put back afterwards. So:

- any number of loader workers (0 = in-process) gives the same batches, bit for bit;
- a resumed run sees exactly the batches an uninterrupted run sees (no loader state to save);
- any number of ranks sees the same global batch: rank r of `world` takes positions
  [r*batch_size, (r+1)*batch_size) of it, keyed by their global position;
- another job can replay the exact training batches (e.g. through a teacher, to cache its outputs):
  `KeyedStream(dataset, batch_size, seed).batch(it)`, or iterate `loader(start, stop)`.

Sample order: a permutation of the data set per epoch (drawn from (seed, epoch)); the last incomplete global
batch of an epoch is dropped, as PaddleSeg does. `batch_size` is per rank, as in PaddleSeg.

Labels are checked here, on the host, where they already are (values outside [0, num_classes) other than the
ignore index are an error naming the file): the loss then needs no device-to-host copy per step.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np

from segdistill.errors import SegDistillError

# Distinct first words keep the permutation keys and the per-sample keys in separate streams.
_PERM, _SAMPLE = 0x9E37, 0x5A17


def _key(*words: int) -> np.ndarray:
    return np.random.SeedSequence([int(w) for w in words]).generate_state(4)


class KeyedStream:
    """Batches of `dataset` (a PaddleSeg dataset: `ds[i]` -> {"img", "label"}) for iterations 1, 2, ...

    `batch_size` is per rank; the global batch is batch_size * world.
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        num_classes: int | None = None,
        ignore_index: int = 255,
    ):
        if batch_size < 1:
            raise SegDistillError(f"batch_size must be at least 1, got {batch_size}")
        self.dataset, self.batch_size, self.seed, self.rank, self.world = dataset, batch_size, seed, rank, world
        self.global_batch = batch_size * world
        self.n = len(dataset)
        if self.n < self.global_batch:
            raise SegDistillError(
                f"the train split has {self.n} samples, fewer than the global batch {self.global_batch} "
                f"(batch_size {batch_size} per rank x {world} rank(s))"
            )
        self.per_epoch = self.n // self.global_batch  # drop_last, as PaddleSeg
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self._perm_epoch, self._perm = None, None

    # -- which samples ------------------------------------------------------------------------------------
    def permutation(self, epoch: int) -> np.ndarray:
        if self._perm_epoch != epoch:
            self._perm = np.random.RandomState(_key(_PERM, self.seed, epoch)).permutation(self.n)
            self._perm_epoch = epoch
        return self._perm

    def keys(self, it: int) -> list[tuple[int, int, int]]:
        """This rank's samples at iteration `it` (1-based) as (iteration, global position, dataset index)."""
        if it < 1:
            raise SegDistillError(f"iterations count from 1, got {it}")
        epoch, pos = divmod(it - 1, self.per_epoch)
        start = pos * self.global_batch + self.rank * self.batch_size
        perm = self.permutation(epoch)
        first = self.rank * self.batch_size
        return [(it, first + j, int(perm[start + j])) for j in range(self.batch_size)]

    # -- one sample ---------------------------------------------------------------------------------------
    def sample(self, key: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(image CHW float32, label HW int64) for one key, augmented with generators seeded from the key."""
        it, pos, idx = key
        words = _key(_SAMPLE, self.seed, it, pos)
        saved_py, saved_np = random.getstate(), np.random.get_state()
        try:
            random.seed(int.from_bytes(words.tobytes(), "little"))
            np.random.seed(words)
            s = self.dataset[idx]
        finally:
            random.setstate(saved_py)
            np.random.set_state(saved_np)
        img = np.ascontiguousarray(s["img"], dtype="float32")
        label = np.asarray(s["label"]).astype("int64")
        label = np.ascontiguousarray(label.reshape(label.shape[-2:]))
        if self.num_classes is not None:
            self._check_label(label, idx)
        return img, label

    def _check_label(self, label: np.ndarray, idx: int) -> None:
        bad = (label != self.ignore_index) & ((label < 0) | (label >= self.num_classes))
        if bad.any():
            values = sorted(np.unique(label[bad]).tolist())[:10]
            where = _sample_path(self.dataset, idx)
            raise SegDistillError(
                f"{where}: label values {values} are outside [0, {self.num_classes}) and not the ignore index "
                f"{self.ignore_index}"
            )

    def batch(self, it: int) -> tuple[np.ndarray, np.ndarray]:
        """This rank's batch at iteration `it`: images N x C x H x W float32, labels N x H x W int64."""
        return collate_samples([self.sample(k) for k in self.keys(it)])

    # -- many batches -------------------------------------------------------------------------------------
    def loader(self, start: int, stop: int, num_workers: int = 0) -> Iterator[tuple]:
        """Batches of iterations start..stop (inclusive) as paddle tensors (images, labels).

        With `num_workers` > 0 the samples are made in worker processes by paddle.io.DataLoader; the keys,
        not the workers, decide the augmentation, so the batches are the same as with 0 workers.
        """
        from segdistill.paddle_env import paddle

        if num_workers < 0:
            raise SegDistillError(f"num_workers must be >= 0, got {num_workers}")
        if stop < start:
            return iter(())
        if num_workers == 0:
            return ((paddle.to_tensor(x), paddle.to_tensor(y)) for x, y in map(self.batch, range(start, stop + 1)))
        loader = paddle.io.DataLoader(
            _KeyedSamples(self),
            batch_sampler=_KeyBatches(self, start, stop),
            num_workers=num_workers,
            collate_fn=collate_samples,
            return_list=True,
            use_shared_memory=True,
        )
        return iter(loader)


def collate_samples(samples) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([s[0] for s in samples]), np.stack([s[1] for s in samples])


def _sample_path(dataset, idx: int) -> str:
    files = getattr(dataset, "file_list", None)
    try:
        return f"{files[idx][1]} (train sample {idx})"
    except (TypeError, IndexError, KeyError):
        return f"train sample {idx}"


def _paddle_io():
    from segdistill.paddle_env import paddle

    return paddle.io


class _KeyedSamples(_paddle_io().Dataset):
    """paddle.io view of a stream: the "index" is a key (iteration, position, dataset index)."""

    def __init__(self, stream: KeyedStream):
        super().__init__()
        self.stream = stream

    def __getitem__(self, key):
        return self.stream.sample(tuple(key))

    def __len__(self):
        return self.stream.n


class _KeyBatches(_paddle_io().BatchSampler):
    """The keys of iterations start..stop, one list per iteration."""

    def __init__(self, stream: KeyedStream, start: int, stop: int):
        self.stream, self.start, self.stop = stream, start, stop

    def __iter__(self):
        for it in range(self.start, self.stop + 1):
            yield self.stream.keys(it)

    def __len__(self):
        return self.stop - self.start + 1


def training_stream(spec, rank: int = 0, world: int = 1) -> KeyedStream:
    """The keyed training stream of a run's spec, rank `rank` of `world`: its YAML's train split with the spec's
    data overrides (`data_root`, `iters`, `batch_size`) and its data seed (`stream_seed`). A `TrainSpec` or the
    `TeacherOutputsSpec` of the runs it serves: the trainer and the teacher-outputs job both build their stream
    here, so a cache is made of the very batches its runs train on. The resolved experiment is `stream.experiment`
    (its backbone left as written: the stream does not depend on it)."""
    from segdistill.paddleseg_yaml import build, experiment_dict, ignore_index, num_classes, open_dataset

    dic = experiment_dict(
        spec.config,
        data_root=spec.data_root,
        iters=spec.iters,
        batch_size=spec.batch_size,
        pretrained_backbone=False,
        resolve_backbone=False,
    )
    stream = KeyedStream(
        open_dataset(build(dic, spec.config), spec.config),
        int(dic["batch_size"]),
        spec.stream_seed,
        rank,
        world,
        num_classes=num_classes(dic),
        ignore_index=ignore_index(dic),
    )
    stream.experiment = dic
    return stream
