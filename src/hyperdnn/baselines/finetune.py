"""Fine-tuning: one network trained on each task in turn, nothing to remember the earlier ones.

The lower bound of continual learning: what is learnt on task ``t`` overwrites what served
the earlier tasks (catastrophic forgetting). See :class:`SharedNetworkLearner` for the output
layer of each scenario.

Example::

    >>> import torch
    >>> from hyperdnn.baselines import FineTuning
    >>> from hyperdnn.networks import mlp
    >>> from hyperdnn.optim import adam
    >>> learner = FineTuning(mlp(4, (8,), 2 * 3), "CL1", classes_per_task=2, num_tasks=3)
    >>> learner.begin_task(0)
    >>> x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    >>> logs = learner.train_step(0, x, y, torch.zeros_like(y), adam(learner.parameters_for(0)), torch.Generator())
    >>> sorted(logs), learner.predict(x, 0, 1, "CL1")[0].shape
    (['loss'], torch.Size([16]))
"""

from __future__ import annotations

from hyperdnn.baselines.shared_network import SharedNetworkLearner

__all__ = ["FineTuning"]


class FineTuning(SharedNetworkLearner):
    """Plain sequential training of one network (cross-entropy on the current task only).

    Args: as :class:`~hyperdnn.baselines.shared_network.SharedNetworkLearner`.
    """

    name = "finetune"

    def train_step(self, t, x, y, task_ids, optimizer, generator) -> dict[str, float]:
        """One step of cross-entropy on task ``t`` alone.

        Raises:
            ValueError: ``task_ids`` names another task than ``t`` (fine-tuning trains one
                task at a time; :class:`~hyperdnn.baselines.JointTraining` mixes them).
        """
        self.check_one_task(t, task_ids)
        return self.optimise(optimizer, self.task_loss(x, y, task_ids))

    def end_task(self, t, task, generator) -> None:
        pass  # fine-tuning keeps nothing of a finished task
