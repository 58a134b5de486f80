"""Datasets as plain arrays: images float32 [N, C, H, W] in [0, 1], labels int64 [N].

No loader downloads anything. `load_dataset` turns the CLI's `--data` spec
into a :class:`Dataset`:

* ``digits`` — scikit-learn's 8x8 handwritten digits (shipped in the package),
  with a fixed seeded stratified train/test split;
* ``cifar10:FOLDER`` — CIFAR-10's standard python batches in a local folder;
* ``npz:FILE`` or ``FILE.npz`` — arrays ``x`` [N, C, H, W] and ``y`` [N].
"""

from inflor_deploy.data.datasets import (
    DataError,
    Dataset,
    load_cifar10,
    load_dataset,
    load_digits,
    load_npz,
)

__all__ = ["DataError", "Dataset", "load_cifar10", "load_dataset", "load_digits", "load_npz"]
