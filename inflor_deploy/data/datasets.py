"""Dataset loaders (see the package docstring for the `--data` spec)."""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from inflor_deploy.errors import InflorError

Split = Literal["train", "test"]

#: Digits split: 20% test, stratified, seed 0. Fixed so results are reproducible.
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0

CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCHES = ("test_batch",)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


class DataError(InflorError):
    """A dataset could not be loaded; the message names the file and the fix."""


@dataclass(frozen=True)
class Dataset:
    """Images and labels of one split.

    Attributes:
        name: Where the data came from, e.g. ``digits/test``.
        images: float32 [N, C, H, W] (pixels in [0, 1] for the built-in
            datasets), or [N, T, C, H, W] for event sequences (frame t at step t).
        labels: int64 [N].
        num_classes: Number of classes.
        raw_pixels: The images are raw 8-bit pixels 0..255 (read from a uint8
            array); :func:`~inflor_deploy.data.conform.conform_dataset` converts
            them to the units the artifact declares.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    raw_pixels: bool = False

    def __post_init__(self):
        if self.images.ndim not in (4, 5):
            raise DataError(
                f"{self.name}: images must be [N, C, H, W] (or [N, T, C, H, W] event sequences), "
                f"got shape {self.images.shape}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"{self.name}: {self.images.shape[0]} images but labels have shape {self.labels.shape}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, n: int | None) -> "Dataset":
        """The first `n` samples (all of them when `n` is None)."""
        if n is None or n >= len(self):
            return self
        if n <= 0:
            raise DataError(f"sample count must be positive, got {n}")
        return Dataset(f"{self.name}[:{n}]", self.images[:n], self.labels[:n], self.num_classes, self.raw_pixels)

    @property
    def is_sequence(self) -> bool:
        """Event sequences ``[N, T, C, H, W]`` rather than static images."""
        return self.images.ndim == 5


def load_digits(split: Split = "test") -> Dataset:
    """scikit-learn's 8x8 digits (1,797 images, pixel values 0..16 scaled to [0, 1]).

    The split is stratified with a fixed seed: 1,437 train / 360 test images.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        labels,
        test_size=DIGITS_TEST_FRACTION,
        random_state=DIGITS_SPLIT_SEED,
        stratify=labels,
    )
    if split == "train":
        return Dataset("digits/train", x_train, y_train, 10)
    if split == "test":
        return Dataset("digits/test", x_test, y_test, 10)
    raise DataError(f"unknown split {split!r}; use 'train' or 'test'")


#: Side of the upsampled digits (``digits32``): the CIFAR architectures' input size.
DIGITS32_SIZE = 32


def load_digits32(split: Split = "test") -> Dataset:
    """The digits split of :func:`load_digits`, bilinearly upsampled from 8x8 to 32x32 (``--data digits32``).

    Generated in code (nothing is downloaded): it lets the CIFAR-sized
    architectures (ResNet8/19/20, VGG16 at 32x32) train and deploy on a CPU
    in minutes. Same samples, labels and split as ``digits``; pixels stay in [0, 1].
    """
    import torch

    digits = load_digits(split)
    with torch.no_grad():
        images = torch.nn.functional.interpolate(
            torch.from_numpy(digits.images), size=(DIGITS32_SIZE, DIGITS32_SIZE), mode="bilinear",
            align_corners=False,
        ).clamp_(0.0, 1.0)  # fmt: skip
    return Dataset(f"digits32/{split}", np.ascontiguousarray(images.numpy()), digits.labels, digits.num_classes)


class _CifarBatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch without running code from the file.

    A CIFAR-10 python batch is a dict of bytes, lists of ints and one uint8
    numpy array. Rebuilding the array needs exactly these numpy globals, and
    protocol-2 pickles written by Python 3 spell bytes as
    ``_codecs.encode(str, 'latin1')`` (a pure function). Anything else in the
    stream (the way a malicious pickle runs code) is refused.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing global {module}.{name}: a CIFAR-10 batch contains only numpy "
            "arrays, lists and strings"
        )


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise DataError(
            f"{path}: missing CIFAR-10 batch file; point --data cifar10:FOLDER at the "
            "extracted `cifar-10-batches-py` folder (no download is attempted)"
        ) from err
    try:
        batch = _CifarBatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({err})") from err
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{path}: not a CIFAR-10 python batch (expected a dict with b'data' and b'labels')")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: b'data' must be uint8 [N, 3072], got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise DataError(f"{path}: b'labels' must be N integers in 0..9")
    return data, labels


def load_cifar10(folder: str | Path, split: Split = "test") -> Dataset:
    """CIFAR-10 from its standard python batches in `folder` (no download).

    Args:
        folder: The extracted ``cifar-10-batches-py`` folder.
        split: ``train`` (data_batch_1..5) or ``test`` (test_batch).

    Returns:
        Images float32 [N, 3, 32, 32] in [0, 1] (rows of 3072 bytes are
        R, G, B planes of 32x32, row-major) and labels.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder; expected the extracted `cifar-10-batches-py` folder")
    names = {"train": CIFAR10_TRAIN_BATCHES, "test": CIFAR10_TEST_BATCHES}.get(split)
    if names is None:
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    parts = [_read_cifar_batch(folder / name) for name in names]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    images = data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    return Dataset(f"cifar10/{split}", images, labels, 10)


#: An ``.npz`` holding only ``x`` and ``y``: ``train`` holds out this fraction as its test split.
NPZ_HOLDOUT_FRACTION = 0.2
NPZ_HOLDOUT_SEED = 0
_NPZ_SPLITS = ("x_train", "y_train", "x_test", "y_test")


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            names = set(arrays.files)
            if not ({"x", "y"} <= names or set(_NPZ_SPLITS) <= names):
                raise DataError(
                    f"{path}: an .npz dataset needs arrays 'x' [N,C,H,W] and 'y' [N] (or x_train, y_train, "
                    f"x_test, y_test); found {sorted(arrays.files)}"
                )
            return {k: arrays[k] for k in ("x", "y", *_NPZ_SPLITS) if k in names}
    except FileNotFoundError as err:
        raise DataError(f"{path}: no such file") from err
    except (ValueError, OSError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz file ({err})") from err


def _npz_dataset(path: Path, name: str, x: np.ndarray, y: np.ndarray, xname: str, yname: str) -> Dataset:
    if not np.issubdtype(x.dtype, np.number) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: '{xname}' must be numeric and '{yname}' integer, got {x.dtype} and {y.dtype}")
    if x.ndim not in (4, 5) or y.shape != (x.shape[0],):
        raise DataError(
            f"{path}: '{xname}' must be [N, C, H, W] images or [N, T, C, H, W] event sequences and '{yname}' [N]; "
            f"got {x.shape} and {y.shape}"
        )
    if y.size and y.min() < 0:
        raise DataError(f"{path}: labels must be non-negative")
    if x.size and not np.isfinite(x).all():
        raise DataError(f"{path}: '{xname}' contains NaN or inf")
    num_classes = int(y.max()) + 1 if y.size else 0
    return Dataset(name, x.astype(np.float32), y.astype(np.int64), num_classes, raw_pixels=x.dtype == np.uint8)


def load_npz(path: str | Path, split: Split = "test") -> Dataset:
    """A dataset from an ``.npz`` file (``allow_pickle=False``: object arrays would run code).

    The file holds either ``x`` and ``y`` (the whole file is the split, for
    either name) or ``x_train``, ``y_train``, ``x_test``, ``y_test``. ``x`` is
    ``[N, C, H, W]`` images or ``[N, T, C, H, W]`` event sequences (binary
    events or small integer counts, frame t shown at step t). A uint8 ``x``
    holds raw 8-bit pixels (``raw_pixels``); other dtypes are read as float32
    values in the units the model was compiled for.
    """
    path = Path(path)
    arrays = _npz_arrays(path)
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    if "x" not in arrays:
        return _npz_dataset(path, f"npz:{path.name}/{split}", arrays[f"x_{split}"], arrays[f"y_{split}"],
                            f"x_{split}", f"y_{split}")  # fmt: skip
    return _npz_dataset(path, f"npz:{path.name}", arrays["x"], arrays["y"], "x", "y")


def npz_has_splits(path: str | Path) -> bool:
    """Whether an ``.npz`` dataset holds separate train and test splits."""
    return "x" not in _npz_arrays(Path(path))


def holdout_split(data: Dataset, fraction: float = NPZ_HOLDOUT_FRACTION,
                  seed: int = NPZ_HOLDOUT_SEED) -> tuple[Dataset, Dataset]:  # fmt: skip
    """``(train, test)``: a seeded hold-out of ``fraction`` of ``data`` (stratified when every class allows it).

    Used by ``train`` on an ``.npz`` without separate splits, so that the
    reported test accuracy is measured on samples the model never trained on.
    """
    from sklearn.model_selection import train_test_split

    if len(data) < 2:
        raise DataError(f"{data.name}: {len(data)} sample(s) cannot be split into train and test")
    counts = np.bincount(data.labels)
    classes, test_size = int((counts > 0).sum()), int(np.ceil(len(data) * fraction))
    fits = counts[counts > 0].min() >= 2 and classes <= test_size <= len(data) - classes
    stratify = data.labels if fits else None
    index = np.arange(len(data))
    train_idx, test_idx = train_test_split(index, test_size=fraction, random_state=seed, stratify=stratify)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    label = f"held-out {fraction:.0%} (seed {seed}{', stratified' if stratify is not None else ''})"
    part = lambda idx, what: Dataset(  # noqa: E731
        f"{data.name}/{what}", data.images[idx], data.labels[idx], data.num_classes, data.raw_pixels
    )
    return part(train_idx, "train"), part(test_idx, label)


def load_dataset(spec: str, split: Split = "test") -> Dataset:
    """Resolve a CLI `--data` spec (see the package docstring)."""
    if spec == "digits":
        return load_digits(split)
    if spec == "digits32":
        return load_digits32(split)
    if spec.startswith("cifar10:"):
        return load_cifar10(spec.split(":", 1)[1], split)
    if spec.startswith("npz:"):
        return load_npz(spec.split(":", 1)[1], split)
    if spec.endswith(".npz"):
        return load_npz(spec, split)
    raise DataError(
        f"unknown dataset {spec!r}; use 'digits', 'digits32' (digits upsampled to 32x32), 'cifar10:FOLDER' (CIFAR-10 python batches) "
        "or 'npz:FILE' / 'FILE.npz' (arrays x [N,C,H,W] or [N,T,C,H,W] and y [N], or x_train, y_train, "
        "x_test, y_test)"
    )


def load_train_test(spec: str) -> tuple[Dataset, Dataset, str]:
    """``(train, test, what the test split is)`` for training on a ``--data`` spec.

    The test split is never trained on: digits and CIFAR-10 have their own,
    an ``.npz`` with ``x_test``/``y_test`` gives it, and an ``.npz`` with
    only ``x``/``y`` holds out a seeded 20 % (:func:`holdout_split`).
    """
    path = spec.split(":", 1)[1] if spec.startswith("npz:") else spec if spec.endswith(".npz") else None
    if path is not None and not npz_has_splits(path):
        train, test = holdout_split(load_npz(path))
        return train, test, f"{test.name.split('/', 1)[1]} of {Path(path).name}, never trained on"
    train, test = load_dataset(spec, "train"), load_dataset(spec, "test")
    return train, test, f"{test.name} (a separate split)"
