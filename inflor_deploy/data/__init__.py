"""Datasets as plain arrays: images float32 [N, C, H, W] (event sequences [N, T, C, H, W]), labels int64 [N].

No loader downloads anything. `load_dataset` turns the CLI's `--data` spec
into a :class:`Dataset`:

* ``digits`` — scikit-learn's 8x8 handwritten digits (shipped in the package),
  with a fixed seeded stratified train/test split;
* ``digits32`` — the same digits bilinearly upsampled to 32x32 (generated in
  code), for the CIFAR-sized architectures;
* ``cifar10:FOLDER`` — CIFAR-10's standard python batches in a local folder;
* ``npz:FILE`` or ``FILE.npz`` — arrays ``x`` [N, C, H, W] (or [N, T, C, H, W]
  event sequences) and ``y`` [N], or ``x_train``, ``y_train``, ``x_test``,
  ``y_test``; a uint8 ``x`` is raw 8-bit pixels.

:func:`~inflor_deploy.data.conform.conform_dataset` checks data against what
an artifact was compiled for (range, encoding, classes) before it runs.
"""

from inflor_deploy.data.datasets import (
    DataError,
    Dataset,
    holdout_split,
    load_cifar10,
    load_dataset,
    load_digits,
    load_digits32,
    load_npz,
    load_train_test,
)

__all__ = [
    "DataError", "Dataset", "holdout_split", "load_cifar10", "load_dataset", "load_digits", "load_digits32", "load_npz",
    "load_train_test",
]  # fmt: skip
