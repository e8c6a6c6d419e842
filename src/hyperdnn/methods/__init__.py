"""Algorithms a user imports: the pieces of hypernetwork methods, each in its own module.

* :mod:`~hyperdnn.methods.output_regularizer` - :class:`OutputRegularizer`: keeps the weights a
  task-conditioned hypernetwork generates for earlier tasks (von Oswald et al., 2020).
* :mod:`~hyperdnn.methods.lookahead` - :func:`adam_candidate_step`: the step Adam would take,
  for regularising at ``Theta + dTheta``.
* :mod:`~hyperdnn.methods.task_inference` - :func:`entropy_task_inference` and
  :func:`predict_with_task_inference`: the task of an input by predictive entropy (HNET+ENT).
* :mod:`~hyperdnn.methods.continual` - :class:`ContinualLearner` (the contract a continual
  learner fulfils) and :class:`HypernetLearner` (the three pieces above as one method).
* :mod:`~hyperdnn.methods.generative_replay` - generative replay for CL2/CL3: a classifier
  trained with inputs replayed by a VAE whose decoder a hypernetwork generates per task (HNET+R,
  ``HypernetReplay``) or by a plain fine-tuned VAE (DGR, ``VAEReplay``); import it from there.
* :mod:`~hyperdnn.methods.uncertainty` - :class:`UncertaintyModel` (the contract of a model
  that yields ``K`` predictions per input in one pass) and its likelihoods.
* :mod:`~hyperdnn.methods.implicit_hypernet` - :class:`ImplicitHypernet`: noise -> all the
  target's weights (HyperGAN-style), with :func:`weight_diversity`
  (:mod:`~hyperdnn.methods.diversity`) keeping the weight sets apart.
* :mod:`~hyperdnn.methods.flow` - :class:`FlowHypernetwork`: an invertible (normalising-flow)
  hypernetwork with the exact density of its weights.
* :mod:`~hyperdnn.methods.bayesian_hypernet` - :class:`BayesianHypernet`: the flow as a
  variational posterior over weights, trained on the evidence lower bound (Krueger et al.).
* :mod:`~hyperdnn.methods.hypernet_dropout` - :class:`HypernetDropout`: MC dropout inside
  the hypernetwork, a weight set per mask.
* :mod:`~hyperdnn.methods.fewshot` - :class:`FewShotLearner` (the contract of a few-shot
  learner), :class:`HypernetFewShot` (a support set in, each class's scorer out) and
  :func:`evaluate_episodes`.
* :mod:`~hyperdnn.methods.zeroshot` - :class:`ZeroShotLearner` (the contract of a zero-shot
  learner) and :class:`HypernetZeroShot` (a class description in, that class's classifier out).
* :mod:`~hyperdnn.methods.search` - :class:`EvolutionarySearch` (MetaPruning's search over a
  grid of candidates under a constraint) and its contract :class:`CandidateSearch`.
* :mod:`~hyperdnn.methods.context_policy` - :class:`ContextNet` (a network of an observation
  and a task's context) and :class:`HyperPolicy` (a hypernetwork generates each environment's
  policy from its physical parameters, run per sample).
* :mod:`~hyperdnn.methods.distillation` - :func:`collect_demonstrations` (noise-injected expert
  states) and :func:`distillation_loss`: per-task experts distilled into one policy.
* :mod:`~hyperdnn.methods.ppo` - :class:`PPO` over batched environments of different physics
  (TorchRL's clipped loss and GAE; the ``rl`` extra).
* :mod:`~hyperdnn.methods.treatment_effect` - :class:`TreatmentEffectEstimator`: the
  ``fit(X, T, Y).effect(X)`` contract of treatment-effect estimators, :class:`TrainOptions`.
* :mod:`~hyperdnn.methods.hyperite` - HyperITE: :class:`HyperSLearner`, :class:`HyperTLearner`,
  :class:`HyperTARNet`, :class:`HyperDRLearner` (arm embeddings generate each arm's network),
  :class:`HypernetOptions`.

What a method is compared with lives in :mod:`hyperdnn.baselines`; what is measured, in
:mod:`hyperdnn.metrics`.
"""

from hyperdnn.methods.bayesian_hypernet import BayesianHypernet
from hyperdnn.methods.context_policy import ContextNet, HyperPolicy
from hyperdnn.methods.continual import ContinualLearner, HypernetLearner
from hyperdnn.methods.distillation import Demonstrations, collect_demonstrations, distillation_loss
from hyperdnn.methods.diversity import function_diversity, weight_diversity
from hyperdnn.methods.fewshot import FewShotLearner, HypernetFewShot, evaluate_episodes
from hyperdnn.methods.flow import FlowHypernetwork
from hyperdnn.methods.hyperite import HyperDRLearner, HypernetOptions, HyperSLearner, HyperTARNet, HyperTLearner
from hyperdnn.methods.hypernet_dropout import HypernetDropout
from hyperdnn.methods.implicit_hypernet import ImplicitHypernet
from hyperdnn.methods.lookahead import adam_candidate_step
from hyperdnn.methods.output_regularizer import OutputRegularizer
from hyperdnn.methods.ppo import PPO, PPOSettings
from hyperdnn.methods.search import CandidateSearch, EvolutionarySearch
from hyperdnn.methods.task_inference import SCENARIOS, entropy_task_inference, predict_with_task_inference
from hyperdnn.methods.treatment_effect import TrainOptions, TreatmentEffectEstimator
from hyperdnn.methods.uncertainty import UncertaintyModel
from hyperdnn.methods.zeroshot import HypernetZeroShot, ZeroShotLearner

__all__ = [
    "ContextNet",
    "Demonstrations",
    "HyperPolicy",
    "PPO",
    "PPOSettings",
    "collect_demonstrations",
    "distillation_loss",
    "BayesianHypernet",
    "CandidateSearch",
    "EvolutionarySearch",
    "ContinualLearner",
    "FewShotLearner",
    "HypernetFewShot",
    "HypernetZeroShot",
    "ZeroShotLearner",
    "evaluate_episodes",
    "FlowHypernetwork",
    "HypernetDropout",
    "ImplicitHypernet",
    "HypernetLearner",
    "OutputRegularizer",
    "SCENARIOS",
    "adam_candidate_step",
    "entropy_task_inference",
    "predict_with_task_inference",
    "UncertaintyModel",
    "weight_diversity",
    "function_diversity",
    "HyperDRLearner",
    "HypernetOptions",
    "HyperSLearner",
    "HyperTARNet",
    "HyperTLearner",
    "TrainOptions",
    "TreatmentEffectEstimator",
]
