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

Architecture search and pruning (``hyperdnn run pruning``, ``hyperdnn run nas``):

* :mod:`~hyperdnn.baselines.random_search` - :class:`RandomSearch`: random feasible candidates,
  as many as the search it is compared with evaluates.
* :mod:`~hyperdnn.baselines.l1_pruning` - :func:`l1_filter_prune`: a trained CNN pruned to a
  width vector by filter L1 norm (Li et al., 2017), to fine-tune.
* :mod:`~hyperdnn.baselines.flat_hypernet` - :class:`FlatArchHyperNetwork`: an MLP hypernetwork
  over a flat architecture encoding (a graph hypernetwork without the graph).

Baselines of later recipes (deep ensembles, MC dropout, FedAvg ...) go here as modules of their
own, next to these.
"""

from hyperdnn.baselines.ewc import EWC
from hyperdnn.baselines.finetune import FineTuning
from hyperdnn.baselines.flat_hypernet import FlatArchHyperNetwork
from hyperdnn.baselines.joint import JointTraining
from hyperdnn.baselines.l1_pruning import l1_filter_prune, l1_kept_filters
from hyperdnn.baselines.random_search import RandomSearch
from hyperdnn.baselines.separate import SeparateNetworks
from hyperdnn.baselines.shared_network import SharedNetworkLearner, scenario_outputs

__all__ = [
    "EWC",
    "FineTuning",
    "FlatArchHyperNetwork",
    "JointTraining",
    "RandomSearch",
    "SeparateNetworks",
    "SharedNetworkLearner",
    "l1_filter_prune",
    "l1_kept_filters",
    "scenario_outputs",
]
