"""Task inference by predictive entropy (HNET+ENT, von Oswald et al., 2020).

Without a task identity at test time (continual-learning scenarios CL2 and CL3), a learner
that holds one model per task runs every task's model on the input and trusts the one that is
most certain: :func:`entropy_task_inference` picks, per input, the task whose softmax output has
the lowest entropy. :func:`predict_with_task_inference` turns per-task logits into the labels of
each scenario.

Example::

    >>> import torch
    >>> from hyperdnn.methods import entropy_task_inference
    >>> logits = torch.zeros(3, 2, 4)          # 3 task models, 2 inputs, 4 classes
    >>> logits[1, 0, 2] = 10.0                 # input 0: task 1's model is certain
    >>> logits[2, 1, 0] = 5.0                  # input 1: task 2's model is certain
    >>> entropy_task_inference(logits).tolist()
    [1, 2]
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["entropy_task_inference", "predict_with_task_inference", "SCENARIOS"]

#: the continual-learning scenarios (van de Ven and Tolias, 2019): CL1 task-incremental (the
#: task is given), CL2 domain-incremental (no task, one head of a task's classes), CL3
#: class-incremental (no task, a head over every class seen)
SCENARIOS = ("CL1", "CL2", "CL3")


def entropy_task_inference(logits: torch.Tensor) -> torch.Tensor:
    """The predictive-entropy rule: for each input, the task whose output is most certain.

    Args:
        logits: ``(K, N, C)``: the outputs of ``K`` task models on ``N`` inputs.

    Returns:
        ``(N,)`` int64: for each input, the task with the lowest predictive entropy.

    Raises:
        ValueError: ``logits`` is not 3-D.
    """
    if logits.dim() != 3:
        raise ValueError(f"entropy_task_inference: expected logits (K, N, C), got {tuple(logits.shape)}")
    logp = logits.log_softmax(dim=-1)
    entropy = -(logp.exp() * logp).sum(dim=-1)  # (K, N)
    return entropy.argmin(dim=0)


def predict_with_task_inference(
    task_logits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    task: int,
    seen: int,
    scenario: str,
    classes_per_task: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Predictions of a learner with one model per task, in each scenario.

    Args:
        task_logits: ``task_logits(x, ids)`` -> ``(K, N, C)``: the models of tasks ``ids (K,)``
            on ``x`` (one batched pass where the learner can).
        x: ``(N, F)`` inputs of task ``task``.
        task: the task the inputs come from (used only in CL1, where it is given).
        seen: the tasks learned so far; CL2/CL3 infer the task among them.
        scenario: ``"CL1"``, ``"CL2"`` or ``"CL3"``.
        classes_per_task: ``C``, the CL3 label offset.

    Returns:
        (labels ``(N,)``: task-local in CL1/CL2, ``inferred * C + local`` in CL3; the inferred
        task ``(N,)`` in CL2/CL3, ``None`` in CL1).

    Raises:
        ValueError: an unknown scenario.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"predict_with_task_inference: scenario must be one of {SCENARIOS}, got {scenario!r}")
    if scenario == "CL1":
        return task_logits(x, torch.tensor([task]))[0].argmax(-1), None
    logits = task_logits(x, torch.arange(seen))  # (K, N, C)
    inferred = entropy_task_inference(logits)
    local = logits.gather(0, inferred.view(1, -1, 1).expand(1, -1, logits.shape[-1]))[0].argmax(-1)
    if scenario == "CL2":
        return local, inferred
    return inferred * classes_per_task + local, inferred
