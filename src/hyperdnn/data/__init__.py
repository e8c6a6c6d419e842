"""Data sets and task streams, by name.

* :mod:`~hyperdnn.data.split` - :class:`Split`: the train/test tensors every loader returns.
* :mod:`~hyperdnn.data.registry` - :class:`Dataset`, :data:`DATASETS` and
  :func:`get_dataset`/:func:`list_datasets`/:func:`load_dataset`/:func:`register_dataset`:
  every data set a recipe can name (``--data``), built in or from another installed package
  (entry-point group ``hyperdnn.datasets``).
* :mod:`~hyperdnn.data.offline` - :func:`load_digits` (``digits``), :func:`load_mnist_subset`
  (``mnist5k``): data that ships inside installed packages.
* :mod:`~hyperdnn.data.mnist` - full MNIST from local idx files (``mnist``), never downloaded.
* :mod:`~hyperdnn.data.streams` - task streams for continual learning (SplitMNIST,
  PermutedMNIST) from any registered data set.

The loaders need the ``data`` extra (``pip install 'hyperdnn[data]'``); importing this package
needs only the core (torch, numpy).
"""

from hyperdnn.data.offline import load_digits, load_mnist_subset
from hyperdnn.data.registry import DATASETS, Dataset, get_dataset, list_datasets, load_dataset, register_dataset
from hyperdnn.data.split import Split

__all__ = [
    "DATASETS",
    "Dataset",
    "Split",
    "get_dataset",
    "list_datasets",
    "load_dataset",
    "load_digits",
    "load_mnist_subset",
    "register_dataset",
]
