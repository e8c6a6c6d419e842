"""Continual-learning metrics: the accuracy matrix and what it summarises.

A run over ``T`` tasks measures an accuracy matrix ``A`` of shape ``(T, T)``: ``A[i, j]`` is
the test accuracy on task ``j`` after training task ``i`` (NaN where it was not measured, e.g.
above the diagonal, or every row but the last for joint training). :func:`task_accuracies`
measures one row; :func:`accuracy_summary` reduces a matrix to the standard numbers (Lopez-Paz
and Ranzato, 2017): the average accuracy after the last task (ACC), backward transfer (BWT,
negative: forgetting) and the accuracy right after learning each task; and average forgetting
(Chaudhry et al., 2018), which counts what was lost from each task's best accuracy, also where
it peaked after its own training. :func:`trained_parameters`
counts what a method trains, from its optimizers, for the compression ratio (trained parameters
over those of separate networks per task).

Example::

    >>> import torch
    >>> from hyperdnn.metrics import accuracy_summary
    >>> A = torch.tensor([[0.9, float("nan")], [0.7, 0.8]], dtype=torch.float64)
    >>> {k: round(v, 3) for k, v in accuracy_summary(A).items()}
    {'final_avg': 0.75, 'bwt': -0.2, 'just_trained': 0.85, 'forgetting': 0.2}
    >>> from hyperdnn.metrics import trained_parameters
    >>> shared, e0, e1 = (torch.nn.Parameter(torch.zeros(n)) for n in (10, 2, 2))
    >>> trained_parameters([torch.optim.Adam([shared, e0]), torch.optim.Adam([shared, e1])])
    14
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from hyperdnn.data.streams import Task

__all__ = ["accuracy_summary", "task_accuracies", "trained_parameters", "Predict"]

#: ``predict(x, task, seen, scenario) -> (labels, inferred task or None)``, see
#: :meth:`hyperdnn.methods.ContinualLearner.predict`
Predict = Callable[[torch.Tensor, int, int, str], tuple[torch.Tensor, torch.Tensor | None]]


def accuracy_summary(matrix: torch.Tensor) -> dict[str, float]:
    """Average accuracy and backward transfer of an accuracy matrix.

    Args:
        matrix: ``(T, T)``; ``matrix[i, j]`` is the accuracy on task ``j`` after training task
            ``i`` (NaN where not measured).

    Returns:
        ``final_avg``: mean of the last row; ``bwt``: mean over ``j < T-1`` of
        ``matrix[T-1, j] - matrix[j, j]`` (negative: forgetting); ``just_trained``: mean of the
        diagonal (accuracy right after learning each task); ``forgetting``: mean over
        ``j < T-1`` of ``max_{l in j..T-2} matrix[l, j] - matrix[T-1, j]`` (Chaudhry et al.,
        2018, "Riemannian Walk for Incremental Learning": the drop from the task's best
        accuracy before the last task; at least ``-bwt``, and positive: forgetting). A value is
        NaN where an entry it needs was not measured (joint training has only the last row),
        and ``bwt`` and ``forgetting`` are NaN for one task.

    Raises:
        ValueError: ``matrix`` is not square and 2-D.
    """
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"accuracy_summary: expected a square (T, T) matrix, got {tuple(matrix.shape)}")
    last = matrix[-1]
    diag = matrix.diagonal()
    T = matrix.shape[0]
    nan = torch.tensor(float("nan"))
    bwt = (last[:-1] - diag[:-1]).mean() if T > 1 else nan
    if T > 1:
        # best accuracy on task j over rows j .. T-2 (NaN propagates: an unmeasured entry)
        earlier = matrix[:-1, :-1].clone()
        before = torch.ones(T - 1, T - 1, dtype=torch.bool, device=matrix.device).triu(1)  # row l < task j
        earlier[before] = float("-inf")
        best = earlier.max(0).values
        forgetting = (best - last[:-1]).mean()
    else:
        forgetting = nan
    return {
        "final_avg": float(last.mean()),
        "bwt": float(bwt),
        "just_trained": float(diag.mean()),
        "forgetting": float(forgetting),
    }


def trained_parameters(optimizers: Iterable[torch.optim.Optimizer]) -> int:
    """The numbers a method trains: the elements of every distinct tensor in the parameter
    groups of ``optimizers`` (one per task, say), each tensor counted once however many
    optimizers hold it. What no optimizer holds (a frozen embedding, a buffer) is not counted.

    Divided by the parameters of separate networks per task, it is the compression ratio of a
    task-conditioned hypernetwork (below 1: fewer trained numbers than the networks it replaces).

    Raises:
        TypeError: an item of ``optimizers`` is not a ``torch.optim.Optimizer``.
    """
    seen: dict[int, int] = {}
    for i, opt in enumerate(optimizers):
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(f"trained_parameters: item {i} is a {type(opt).__name__}, expected a torch.optim.Optimizer")
        for group in opt.param_groups:
            for p in group["params"]:
                seen[id(p)] = p.numel()
    return sum(seen.values())


@torch.no_grad()
def task_accuracies(
    predict: Predict,
    tasks: Sequence[Task],
    scenario: str,
    classes_per_task: int,
    device: torch.device | str = "cpu",
    batch_size: int = 2048,
) -> tuple[list[float], float | None]:
    """One row of the accuracy matrix: the accuracy on each task seen so far, in one scenario.

    Args:
        predict: the learner's prediction, ``predict(x, task, seen, scenario)`` -> predicted
            labels ``(N,)`` (task-local in CL1/CL2, ``task * classes_per_task + local`` in
            CL3) and the inferred task of each input ``(N,)`` where the learner infers one.
        tasks: the tasks seen so far, ``0 .. seen-1`` (``seen = len(tasks)``), each with its
            test inputs ``x_test (N_j, F)`` and task-local labels ``y_test (N_j,)`` (a
            :class:`~hyperdnn.data.streams.Task`; a permuted task's inputs are made one task at
            a time).
        scenario: ``"CL1"``, ``"CL2"`` or ``"CL3"``.
        classes_per_task: the classes of one task (the CL3 label offset).
        device: where ``predict`` computes.
        batch_size: test inputs per call of ``predict``.

    Returns:
        (the accuracy on each task, a Python float per task; the share of inputs whose task
        was inferred right, ``None`` where ``predict`` infers none).

    Raises:
        ValueError: ``predict`` returned labels or inferred tasks not of shape ``(N,)`` for
            ``N`` inputs (an ``(N, 1)`` result would broadcast against the labels).
    """
    seen = len(tasks)
    row: list[float] = []
    right_task = total = 0
    for j, task in enumerate(tasks):
        x_all, y_all = task.x_test, task.y_test
        correct = 0
        for start in range(0, len(y_all), batch_size):
            x = x_all[start : start + batch_size].to(device)
            y = y_all[start : start + batch_size].to(device)
            pred, inferred = predict(x, j, seen, scenario)
            shapes = (pred.shape,) if inferred is None else (pred.shape, inferred.shape)
            if any(shape != y.shape for shape in shapes):
                raise ValueError(
                    f"task_accuracies: predict must return labels (and inferred tasks) of shape ({y.shape[0]},) "
                    f"for {y.shape[0]} inputs, got {' and '.join(str(tuple(s)) for s in shapes)}"
                )
            target = y + j * classes_per_task if scenario == "CL3" else y
            correct += int((pred == target).sum())
            if inferred is not None:
                right_task += int((inferred == j).sum())
                total += int(y.shape[0])
        row.append(correct / len(y_all))
    return row, (right_task / total if total else None)
