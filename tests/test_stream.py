"""The keyed data stream: batches are a pure function of (data, transforms, seed, iteration)."""

import random

import numpy as np
import pytest

from conftest import STUDENT
from segdistill.data.stream import KeyedStream, training_stream
from segdistill.errors import SegDistillError
from segdistill.paddleseg_yaml import build, experiment_dict
from segdistill.specs import TeacherOutputsSpec, TrainSpec


@pytest.fixture(scope="module")
def train_ds(tiny_data):
    return build(experiment_dict(STUDENT, data_root=str(tiny_data)), STUDENT).train_dataset


def _same(a, b):
    return all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))


def test_workers_and_start_do_not_change_batches(train_ds):
    stream = KeyedStream(train_ds, 4, seed=3, num_classes=2)
    direct = [stream.batch(it) for it in range(1, 11)]  # 10 iterations: crosses the epoch boundary (7 per epoch)
    for workers in (0, 2):
        loaded = [(x.numpy(), y.numpy()) for x, y in stream.loader(1, 10, workers)]
        assert _same(direct, loaded), f"{workers} workers"
    resumed = [(x.numpy(), y.numpy()) for x, y in stream.loader(6, 10, 2)]
    assert _same(direct[5:], resumed)


def test_batches_do_not_depend_on_global_random_state_and_leave_it_alone(train_ds):
    stream = KeyedStream(train_ds, 4, seed=3)
    random.seed(1)
    np.random.seed(1)
    before = (random.getstate(), np.random.get_state()[1].copy())
    a = stream.batch(4)
    assert random.getstate() == before[0] and np.array_equal(np.random.get_state()[1], before[1])
    random.seed(99)
    np.random.seed(99)
    assert _same([a], [stream.batch(4)])


def test_augmentation_is_keyed_per_sample(train_ds):
    """The tiny config flips at random: over a few iterations both flipped and unflipped copies must occur,
    and another seed must give other augmentations of the same images."""
    a, b = KeyedStream(train_ds, 4, seed=3), KeyedStream(train_ds, 4, seed=4)
    assert not _same([a.batch(1)], [b.batch(1)])
    # One image under 12 keys: random flips give exactly two versions, mirror images of each other.
    versions = {a.sample((it, pos, 0))[0].tobytes(): a.sample((it, pos, 0))[0] for it in (1, 2, 3) for pos in range(4)}
    assert len(versions) == 2
    first, second = versions.values()
    assert np.array_equal(first, second[..., ::-1])


def test_ranks_split_the_global_batch(train_ds):
    """batch_size is per rank; the ranks' slices put together are the one-process batch of the same global size."""
    one = KeyedStream(train_ds, 4, seed=5)
    ranks = [KeyedStream(train_ds, 2, seed=5, rank=r, world=2) for r in range(2)]
    for it in (1, 7, 8):
        x, y = one.batch(it)
        parts = [s.batch(it) for s in ranks]
        assert np.array_equal(x, np.concatenate([p[0] for p in parts]))
        assert np.array_equal(y, np.concatenate([p[1] for p in parts]))


def test_bad_labels_are_named_on_the_host(train_ds):
    stream = KeyedStream(train_ds, 4, seed=0, num_classes=1, ignore_index=255)
    with pytest.raises(
        SegDistillError,
        match=r"Annotations/.*\.png \(train sample \d+\): label values \[1\] are "
        r"outside \[0, 1\)",
    ):
        stream.batch(1)


def test_too_small_for_the_global_batch(train_ds):
    with pytest.raises(SegDistillError, match=r"fewer than the global batch 32 \(batch_size 16 per rank x 2"):
        KeyedStream(train_ds, 16, seed=0, world=2)


def test_a_run_and_the_cache_serving_it_have_one_stream(tiny_data):
    """The trainer and the teacher-outputs job build their stream with one function of the spec: a cache's
    batches are the run's, rank for rank."""
    student = STUDENT
    run = TrainSpec(config=student, save_dir="run", data_root=str(tiny_data), seed=4, data_seed=9, batch_size=2)
    cache = TeacherOutputsSpec(
        config=student, teacher_config="t.yml", out="o", data_root=str(tiny_data), seed=4, data_seed=9, batch_size=2
    )
    for rank in (0, 1):
        a, b = training_stream(run, rank, 2), training_stream(cache, rank, 2)
        assert (a.seed, a.batch_size, a.global_batch) == (9, 2, 4)
        for it in (1, 5):
            for x, y in zip(a.batch(it), b.batch(it)):
                np.testing.assert_array_equal(x, y)
    other = training_stream(TrainSpec(config=student, save_dir="run", data_root=str(tiny_data), seed=9, batch_size=2))
    np.testing.assert_array_equal(other.batch(3)[0], training_stream(run).batch(3)[0])
