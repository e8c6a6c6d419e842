"""Joint training: one network trained once on every task at the same time.

The upper bound of continual learning (it sees all the data at once, which a continual learner
may not). A driver calls ``begin_task(T - 1)`` once (so every class of CL3 is active), builds one
optimizer, and trains on batches drawn from the union of the tasks, ``task_ids`` naming each
sample's task; the accuracy matrix then has only its last row. See
:class:`SharedNetworkLearner` for the output layer of each scenario.

Example::

    >>> import torch
    >>> from hyperdnn.baselines import JointTraining
    >>> from hyperdnn.networks import mlp
    >>> from hyperdnn.optim import adam
    >>> learner = JointTraining(mlp(4, (8,), 6), "CL3", classes_per_task=2, num_tasks=3)
    >>> learner.begin_task(2)                     # every task at once: all 6 classes active
    >>> x, y, ids = torch.randn(12, 4), torch.randint(0, 2, (12,)), torch.arange(12) % 3
    >>> logs = learner.train_step(2, x, y, ids, adam(learner.parameters_for(2)), torch.Generator())
    >>> learner.active
    6
"""

from __future__ import annotations

from hyperdnn.baselines.shared_network import SharedNetworkLearner

__all__ = ["JointTraining"]


class JointTraining(SharedNetworkLearner):
    """One network trained on the union of all tasks (batches mix tasks; cross-entropy).

    Args: as :class:`~hyperdnn.baselines.shared_network.SharedNetworkLearner`.
    """

    name = "joint"

    def train_step(self, t, x, y, task_ids, optimizer, generator) -> dict[str, float]:
        """One step of cross-entropy on a batch that mixes tasks ``0 .. t``, each sample on its
        task's outputs (``t = T - 1`` when everything is trained at once).

        Raises:
            ValueError: a task id outside ``[0, t]`` (its classes are not active).
        """
        outside = task_ids[(task_ids < 0) | (task_ids > t)]
        if outside.numel():
            raise ValueError(f"JointTraining: task ids must lie in [0, {t}], got {sorted(set(outside.tolist()))}")
        return self.optimise(optimizer, self.task_loss(x, y, task_ids))

    def end_task(self, t, task, generator) -> None:
        pass  # trained once on everything: there is no next task to prepare
