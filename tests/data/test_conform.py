"""Data against what an artifact was compiled for: raw pixels converted, range, encoding and labels refused."""

import numpy as np
import pytest

from inflor_deploy.data import DataError, Dataset, load_cifar10, load_npz
from inflor_deploy.data.conform import as_unit_pixels, conform_dataset
from inflor_deploy.ir import nodes as n
from tests.data.test_datasets import _write_batch

PIXELS = n.Input("image", (), shape=(3, 32, 32))  # the default declaration: pixels in [0, 1] at 1/255
RAW = n.Input("image", (), shape=(3, 32, 32), value_range=(0.0, 255.0), pixel_levels=1)
SIGNED = n.Input("image", (), shape=(3, 32, 32), value_range=(-2.5, 2.5), pixel_levels=None)


def _uint8(tmp_path, count=5):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, size=count)
    np.savez(tmp_path / "u8.npz", x=x, y=y)
    return x, y, load_npz(tmp_path / "u8.npz")


def test_uint8_pixels_are_recognised_and_converted_exactly(tmp_path):
    x, _, data = _uint8(tmp_path)
    assert data.raw_pixels and data.images.max() > 1
    unit = conform_dataset(data, PIXELS, classes=10, timesteps=4)
    assert not unit.raw_pixels and unit.images.dtype == np.float32
    # Exactly what the CIFAR-10 loader makes of the same bytes, and the chip receives the bytes back.
    folder = tmp_path / "cifar"
    folder.mkdir()
    raw, _ = _write_batch(folder / "test_batch", 4, seed=2)
    cifar = load_cifar10(folder, "test")
    np.savez(tmp_path / "same.npz", x=raw.reshape(-1, 3, 32, 32), y=cifar.labels)
    assert np.array_equal(conform_dataset(load_npz(tmp_path / "same.npz"), PIXELS, 10, 4).images, cifar.images)
    assert np.array_equal(np.rint(unit.images.astype(np.float64) * 255).astype(np.uint8), x)
    # Declared raw pixels: the values pass unchanged.
    assert np.array_equal(conform_dataset(data, RAW, classes=10, timesteps=4).images, x.astype(np.float32))
    assert np.array_equal(as_unit_pixels(data).images, unit.images)


def test_uint8_pixels_refused_by_an_input_that_is_not_pixels(tmp_path):
    _, _, data = _uint8(tmp_path)
    with pytest.raises(DataError, match=r"raw 8-bit pixels.*range \[-2.5, 2.5\].*--input-range 0,255"):
        conform_dataset(data, SIGNED, classes=10, timesteps=4)


@pytest.mark.parametrize(
    "low, high, hint",
    [
        (-1.0, 0.0, r"outside the input range \[0, 1\].*--input-mean/--input-std"),
        (0.0, 255.0, r"outside the input range \[0, 1\].*look like 0..255 pixels: store them as uint8"),
    ],
)
def test_values_outside_the_declared_range_are_refused_with_the_fix(low, high, hint):
    images = np.random.default_rng(0).uniform(low, high, size=(4, 3, 32, 32)).astype(np.float32)
    data = Dataset("npz:bad.npz", images, np.zeros(4, np.int64), 10)
    with pytest.raises(DataError, match=hint):
        conform_dataset(data, PIXELS, classes=10, timesteps=4)
    assert conform_dataset(data, SIGNED if low < 0 else RAW, classes=10, timesteps=4) is not None


def test_labels_outside_the_classes_are_refused():
    images = np.zeros((3, 3, 32, 32), np.float32)
    for labels in ([0, 10, 2], [-1, 0, 1]):
        data = Dataset("npz:labels.npz", images, np.array(labels), 11)
        with pytest.raises(DataError, match=r"labels span .* the model has 10 classes: labels must be in \[0, 10\)"):
            conform_dataset(data, PIXELS, classes=10, timesteps=4)


def test_layout_must_match_the_encoding():
    images = np.zeros((2, 3, 32, 32), np.float32)
    sequence = n.Input("image", (), shape=(3, 32, 32), encoding="sequence")
    with pytest.raises(DataError, match=r"T = 4 frames"):
        conform_dataset(Dataset("d", images, np.zeros(2, np.int64), 10), sequence, classes=10, timesteps=4)
    events = np.zeros((2, 4, 3, 32, 32), np.float32)
    with pytest.raises(DataError, match="--input-encoding sequence"):
        conform_dataset(Dataset("e", events, np.zeros(2, np.int64), 10), PIXELS, classes=10, timesteps=4)
    with pytest.raises(DataError, match=r"T = 3 frames"):
        conform_dataset(Dataset("e", events, np.zeros(2, np.int64), 10), sequence, classes=10, timesteps=3)
    assert conform_dataset(Dataset("e", events, np.zeros(2, np.int64), 10), sequence, 10, 4).is_sequence
