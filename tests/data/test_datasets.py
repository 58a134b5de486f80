"""Loaders: digits split, CIFAR-10 python batches written by the test, .npz arrays."""

import pickle

import numpy as np
import pytest

from inflor_deploy.data import DataError, load_cifar10, load_dataset, load_digits, load_digits32, load_npz


def test_digits_split_is_fixed_and_disjoint():
    train, test = load_digits("train"), load_digits("test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == np.float32
    assert 0.0 <= train.images.min() and train.images.max() <= 1.0
    # Same split every call (seeded) and every class present in the test split.
    again = load_digits("test")
    assert np.array_equal(again.images, test.images) and np.array_equal(again.labels, test.labels)
    assert set(test.labels.tolist()) == set(range(10))
    train_rows = {row.tobytes() for row in train.images}
    overlap = sum(row.tobytes() in train_rows for row in test.images)
    assert overlap < 5  # the raw data holds a few duplicate images; the split itself is disjoint


def _write_batch(path, n, seed, extra=None):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).tolist()
    batch = {b"batch_label": b"test", b"labels": labels, b"data": data,
             b"filenames": [b"img%d.png" % i for i in range(n)]}
    if extra:
        batch.update(extra)
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)
    return data, labels


def test_digits32_is_the_digits_split_upsampled_to_32x32():
    small, large = load_digits("test"), load_dataset("digits32", "test")
    assert large.images.shape == (len(small), 1, 32, 32) and large.images.dtype == np.float32
    assert np.array_equal(large.labels, small.labels) and large.name == "digits32/test"
    assert large.images.min() >= 0.0 and large.images.max() <= 1.0
    # Bilinear upsampling: each 4x4 block's mean follows its source pixel.
    blocks = large.images.reshape(len(small), 1, 8, 4, 8, 4).mean(axis=(3, 5))
    assert np.corrcoef(blocks.ravel(), small.images.ravel())[0, 1] > 0.95
    assert len(load_digits32("train")) == len(load_digits("train"))


def test_cifar10_batches_decode_to_planar_rgb(tmp_path):
    data, labels = _write_batch(tmp_path / "test_batch", 4, seed=1)
    ds = load_cifar10(tmp_path, "test")
    assert ds.images.shape == (4, 3, 32, 32)
    assert ds.labels.tolist() == labels
    # Row layout: 1024 red, 1024 green, 1024 blue, each 32x32 row-major.
    assert ds.images[2, 1, 3, 5] == pytest.approx(data[2, 1024 + 3 * 32 + 5] / 255.0)
    train_parts = [_write_batch(tmp_path / f"data_batch_{i}", 2, seed=i) for i in range(1, 6)]
    train = load_dataset(f"cifar10:{tmp_path}", "train")
    assert len(train) == 10
    assert train.labels.tolist() == sum((p[1] for p in train_parts), [])


def test_cifar10_refuses_code_in_pickle(tmp_path):
    class RunsCode:
        def __reduce__(self):
            return (print, ("pwned",))

    _write_batch(tmp_path / "test_batch", 2, seed=0, extra={b"evil": RunsCode()})
    with pytest.raises(DataError, match="refusing global (builtins|__builtin__).print"):
        load_cifar10(tmp_path)


def test_cifar10_missing_folder_and_file(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        load_cifar10(tmp_path / "nope")
    with pytest.raises(DataError, match="missing CIFAR-10 batch file"):
        load_cifar10(tmp_path, "test")


def test_npz_round_trip_and_errors(tmp_path):
    x = np.random.default_rng(0).random((3, 1, 8, 8)).astype(np.float32)
    y = np.array([0, 2, 1])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert np.array_equal(ds.images, x) and ds.labels.tolist() == [0, 2, 1] and ds.num_classes == 3
    np.savez(tmp_path / "bad.npz", images=x)
    with pytest.raises(DataError, match="needs arrays 'x'"):
        load_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([object()]), y=y)
    with pytest.raises(DataError, match="not a readable .npz"):
        load_npz(tmp_path / "obj.npz")
    with pytest.raises(DataError, match="no such file"):
        load_npz(tmp_path / "missing.npz")
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("mnist")


def test_npz_splits_holdout_and_event_sequences(tmp_path):
    from inflor_deploy.data import holdout_split, load_train_test

    rng = np.random.default_rng(0)
    x, y = rng.random((50, 1, 4, 4)).astype(np.float32), np.arange(50) % 5
    np.savez(tmp_path / "split.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    assert np.array_equal(load_npz(tmp_path / "split.npz", "train").images, x[:40])
    assert np.array_equal(load_npz(tmp_path / "split.npz", "test").labels, y[40:])
    train, test, what = load_train_test(str(tmp_path / "split.npz"))
    assert (len(train), len(test)) == (40, 10) and "separate split" in what
    # Only x, y: train holds out a seeded, stratified 20 % that it never trains on.
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    train, test, what = load_train_test(f"npz:{tmp_path / 'xy.npz'}")
    assert (len(train), len(test)) == (40, 10) and "held-out 20% (seed 0, stratified)" in what
    train_rows = {r.tobytes() for r in train.images}
    assert not any(r.tobytes() in train_rows for r in test.images)
    assert np.bincount(test.labels).tolist() == [2] * 5
    again_train, again_test = holdout_split(load_npz(tmp_path / "xy.npz"))
    assert np.array_equal(again_test.images, test.images)  # seeded: the same split every time
    # Event sequences [N, T, C, H, W] of binary events.
    events = (rng.random((6, 3, 2, 4, 4)) < 0.2).astype(np.uint8)
    np.savez(tmp_path / "events.npz", x=events.astype(np.float32), y=np.arange(6) % 2)
    data = load_npz(tmp_path / "events.npz")
    assert data.is_sequence and data.images.shape == (6, 3, 2, 4, 4) and not data.raw_pixels
    np.savez(tmp_path / "bad3d.npz", x=np.zeros((2, 4, 4)), y=np.zeros(2, int))
    with pytest.raises(DataError, match=r"\[N, C, H, W\] images or \[N, T, C, H, W\]"):
        load_npz(tmp_path / "bad3d.npz")
