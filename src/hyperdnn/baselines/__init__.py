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

Predictive uncertainty (the :class:`~hyperdnn.methods.UncertaintyModel` contract, trained and
evaluated exactly like the hypernetwork methods of :mod:`hyperdnn.methods`):

* :mod:`~hyperdnn.baselines.deep_ensemble` - :class:`DeepEnsemble`: ``M`` networks from their
  own initialisations, run as one ensemble pass (``M = 1``: one deterministic network).
* :mod:`~hyperdnn.baselines.mc_dropout` - :class:`MCDropout`: dropout kept on at prediction.

Architecture search and pruning (``hyperdnn run pruning``, ``hyperdnn run nas``):

* :mod:`~hyperdnn.baselines.random_search` - :class:`RandomSearch`: random feasible candidates,
  as many as the search it is compared with evaluates.
* :mod:`~hyperdnn.baselines.l1_pruning` - :func:`l1_filter_prune`: a trained CNN pruned to a
  width vector by filter L1 norm (Li et al., 2017), to fine-tune.
* :mod:`~hyperdnn.baselines.flat_hypernet` - :class:`FlatArchHyperNetwork`: an MLP hypernetwork
  over a flat architecture encoding (a graph hypernetwork without the graph).

Control (``hyperdnn run rl``):

* :mod:`~hyperdnn.baselines.context_policy` - :class:`ConcatPolicy` (the task's parameters
  concatenated to the observation) and :class:`PlainPolicy` (no parameters).
* :mod:`~hyperdnn.baselines.controllers` - the per-task experts (:func:`make_expert`: pendulum
  swing-up and LQR, cart-pole LQR) and :func:`nearest_tasks` (the expert of the nearest
  training task).

Few-shot learning (the :class:`~hyperdnn.methods.FewShotLearner` contract, trained and tested on
the same episodes as :class:`~hyperdnn.methods.HypernetFewShot`):

* :mod:`~hyperdnn.baselines.protonet` - :class:`ProtoNet`: the nearest class mean.
* :mod:`~hyperdnn.baselines.maml` - :class:`FirstOrderMAML`: a learned initialisation, adapted
  by gradient steps on the support set.
* :mod:`~hyperdnn.baselines.pretrained_finetune` - :class:`PretrainedFineTuning`: classification
  pretraining, then a new linear classifier per task.

Zero-shot learning (the :class:`~hyperdnn.methods.ZeroShotLearner` contract):

* :mod:`~hyperdnn.baselines.devise` - :class:`DeViSE`: a compatibility score linear in the
  class description.
* :mod:`~hyperdnn.baselines.attribute_prediction` - :class:`DirectAttributePrediction`: predict
  the attributes, score a class by their likelihood.

Treatment effects (``hyperdnn run causal``):

* :mod:`~hyperdnn.baselines.meta_learners` - :class:`SLearner`, :class:`TLearner`,
  :class:`TARNet`, :class:`DRLearner`: plain PyTorch, the networks the HyperITE learners generate.
* :mod:`~hyperdnn.baselines.econml_learners` - :class:`EconMLLearner`: EconML's S-, T-, X- and
  DR-learners and a linear T-learner (the ``causal`` extra).

Baselines of later recipes (FedAvg ...) go here as modules of their own, next to these.
"""

from hyperdnn.baselines.attribute_prediction import DirectAttributePrediction
from hyperdnn.baselines.context_policy import ConcatPolicy, PlainPolicy
from hyperdnn.baselines.controllers import make_expert, nearest_tasks
from hyperdnn.baselines.deep_ensemble import DeepEnsemble
from hyperdnn.baselines.devise import DeViSE
from hyperdnn.baselines.econml_learners import EconMLLearner
from hyperdnn.baselines.ewc import EWC
from hyperdnn.baselines.finetune import FineTuning
from hyperdnn.baselines.flat_hypernet import FlatArchHyperNetwork
from hyperdnn.baselines.joint import JointTraining
from hyperdnn.baselines.l1_pruning import l1_filter_prune, l1_kept_filters
from hyperdnn.baselines.maml import FirstOrderMAML
from hyperdnn.baselines.mc_dropout import MCDropout
from hyperdnn.baselines.meta_learners import DRLearner, SLearner, TARNet, TLearner
from hyperdnn.baselines.pretrained_finetune import PretrainedFineTuning
from hyperdnn.baselines.protonet import ProtoNet
from hyperdnn.baselines.random_search import RandomSearch
from hyperdnn.baselines.separate import SeparateNetworks
from hyperdnn.baselines.shared_network import SharedNetworkLearner, scenario_outputs

__all__ = [
    "ConcatPolicy",
    "PlainPolicy",
    "make_expert",
    "nearest_tasks",
    "DeViSE",
    "DeepEnsemble",
    "DirectAttributePrediction",
    "FirstOrderMAML",
    "PretrainedFineTuning",
    "ProtoNet",
    "EWC",
    "FineTuning",
    "FlatArchHyperNetwork",
    "JointTraining",
    "MCDropout",
    "RandomSearch",
    "SeparateNetworks",
    "SharedNetworkLearner",
    "scenario_outputs",
    "l1_filter_prune",
    "l1_kept_filters",
    "DRLearner",
    "EconMLLearner",
    "SLearner",
    "TARNet",
    "TLearner",
]
