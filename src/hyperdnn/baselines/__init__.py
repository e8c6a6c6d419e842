"""Baselines a method is compared with, one module each.

Continual learning (the :class:`~hyperdnn.methods.ContinualLearner` contract, so a driver
trains them exactly like :class:`~hyperdnn.methods.HypernetLearner`):

* :mod:`~hyperdnn.baselines.finetune` - :class:`FineTuning`: one network, task after task (the
  lower bound).
* :mod:`~hyperdnn.baselines.ewc` - :class:`EWC`: online elastic weight consolidation.
* :mod:`~hyperdnn.baselines.separate` - :class:`SeparateNetworks`: a network per task.
* :mod:`~hyperdnn.baselines.joint` - :class:`JointTraining`: one network on every task at once
  (the upper bound).
* :mod:`~hyperdnn.baselines.shared_network` - what fine-tuning, EWC and joint training share
  (:class:`SharedNetworkLearner`, the scenario's output layer, :func:`scenario_outputs`).

Baselines of later recipes (deep ensembles, MC dropout, FedAvg ...) go here as modules of their
own, next to these.
"""

from hyperdnn.baselines.ewc import EWC
from hyperdnn.baselines.finetune import FineTuning
from hyperdnn.baselines.joint import JointTraining
from hyperdnn.baselines.separate import SeparateNetworks
from hyperdnn.baselines.shared_network import SharedNetworkLearner, scenario_outputs

__all__ = ["EWC", "FineTuning", "JointTraining", "SeparateNetworks", "SharedNetworkLearner", "scenario_outputs"]
