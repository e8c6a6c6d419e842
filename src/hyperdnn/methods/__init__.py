"""Algorithms a user imports: the pieces of hypernetwork methods, each in its own module.

* :mod:`~hyperdnn.methods.output_regularizer` - :class:`OutputRegularizer`: keeps the weights a
  task-conditioned hypernetwork generates for earlier tasks (von Oswald et al., 2020).
* :mod:`~hyperdnn.methods.lookahead` - :func:`adam_candidate_step`: the step Adam would take,
  for regularising at ``Theta + dTheta``.
* :mod:`~hyperdnn.methods.task_inference` - :func:`entropy_task_inference` and
  :func:`predict_with_task_inference`: the task of an input by predictive entropy (HNET+ENT).
* :mod:`~hyperdnn.methods.continual` - :class:`ContinualLearner` (the contract a continual
  learner fulfils) and :class:`HypernetLearner` (the three pieces above as one method).
* :mod:`~hyperdnn.methods.search` - :class:`EvolutionarySearch` (MetaPruning's search over a
  grid of candidates under a constraint) and its contract :class:`CandidateSearch`.

What a method is compared with lives in :mod:`hyperdnn.baselines`; what is measured, in
:mod:`hyperdnn.metrics`.
"""

from hyperdnn.methods.continual import ContinualLearner, HypernetLearner
from hyperdnn.methods.lookahead import adam_candidate_step
from hyperdnn.methods.output_regularizer import OutputRegularizer
from hyperdnn.methods.search import CandidateSearch, EvolutionarySearch
from hyperdnn.methods.task_inference import SCENARIOS, entropy_task_inference, predict_with_task_inference

__all__ = [
    "CandidateSearch",
    "EvolutionarySearch",
    "ContinualLearner",
    "HypernetLearner",
    "OutputRegularizer",
    "SCENARIOS",
    "adam_candidate_step",
    "entropy_task_inference",
    "predict_with_task_inference",
]
