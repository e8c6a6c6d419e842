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
* :mod:`~hyperdnn.data.shift` - out-of-distribution inputs from a data set: held-out classes
  (:func:`~hyperdnn.data.shift.hold_out_classes`), rotated images, noise images;
  :mod:`~hyperdnn.data.toy` - a 1-D regression toy with a gap in its inputs and
  input-dependent noise (:func:`~hyperdnn.data.toy.gap_regression`).
* :mod:`~hyperdnn.data.classes` - :class:`ClassData`: examples by class with class names and
  descriptions, and :func:`split_classes`, for few- and zero-shot learning;
  :mod:`~hyperdnn.data.episodes` - :class:`EpisodeSampler`: N-way K-shot episodes.
* :mod:`~hyperdnn.data.glyphs` - letters drawn by matplotlib's fonts (``glyphs``, offline);
  :mod:`~hyperdnn.data.omniglot` (``omniglot``) and :mod:`~hyperdnn.data.awa2` (``awa2``) from
  local files, never downloaded.
* :mod:`~hyperdnn.data.control` - control families (``pendulum``, ``cartpole``): Gymnasium's
  classic control with physics varied per task (:func:`~hyperdnn.data.control.get_family`,
  :func:`~hyperdnn.data.control.PhysicsWrapper`), batched torch simulators, task grids split
  into training, interpolation and extrapolation tasks.

The loaders need the ``data`` extra (``pip install 'hyperdnn[data]'``); importing this package
needs only the core (torch, numpy).
"""

from hyperdnn.data.classes import ClassData, split_classes
from hyperdnn.data.episodes import Episode, EpisodeSampler
from hyperdnn.data.offline import load_digits, load_mnist_subset
from hyperdnn.data.registry import DATASETS, Dataset, get_dataset, list_datasets, load_dataset, register_dataset
from hyperdnn.data.split import Split

__all__ = [
    "ClassData",
    "DATASETS",
    "Episode",
    "EpisodeSampler",
    "Dataset",
    "Split",
    "get_dataset",
    "list_datasets",
    "load_dataset",
    "load_digits",
    "load_mnist_subset",
    "register_dataset",
    "split_classes",
]
