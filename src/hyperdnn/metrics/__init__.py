"""Metrics a user imports: what a recipe measures, as plain functions over tensors.

* :mod:`~hyperdnn.metrics.classification` - :func:`accuracy` of logits or of a model.
* :mod:`~hyperdnn.metrics.continual` - continual learning: :func:`accuracy_summary` (average
  accuracy, backward transfer, just-trained accuracy) of an accuracy matrix, and
  :func:`task_accuracies` (one row of that matrix), :func:`trained_parameters` (what a method's
  optimizers train, for the compression ratio).
* :mod:`~hyperdnn.metrics.calibration` - predictive probabilities: :func:`negative_log_likelihood`,
  :func:`brier_score`, :func:`expected_calibration_error`, :func:`reliability_bins`.
* :mod:`~hyperdnn.metrics.ood` - out-of-distribution scores of ``K`` sampled predictions:
  :func:`predictive_entropy`, :func:`mutual_information` (and :func:`expected_entropy`), and
  :func:`ood_auroc`.
* :mod:`~hyperdnn.metrics.intervals` - :func:`mean_interval`: a mean with the half-width of its
  95% interval (few-shot accuracy over test episodes).
* :mod:`~hyperdnn.metrics.ranking` - :func:`spearman`, :func:`kendall_tau` (does a cheap
  signal rank candidates as training does?) and :func:`steps_to_reach`.
* :mod:`~hyperdnn.metrics.control` - control: :func:`task_returns` (seeded episodes of many
  environments at once), :func:`normalised_return` (0: random, 1: the task's expert) and
  :func:`split_means`.
* :mod:`~hyperdnn.metrics.causal` - treatment effects: :func:`sqrt_pehe`, :func:`ate_error`,
  :func:`mean_se` over replications and :func:`paired_win_rate`.

Pareto-front and other metrics of later recipes go here, one module per family.
"""

from hyperdnn.metrics.calibration import (
    brier_score,
    expected_calibration_error,
    mean_probabilities,
    negative_log_likelihood,
    reliability_bins,
)
from hyperdnn.metrics.causal import ate_error, mean_se, paired_win_rate, sqrt_pehe
from hyperdnn.metrics.classification import accuracy, model_accuracy
from hyperdnn.metrics.continual import accuracy_summary, task_accuracies, trained_parameters
from hyperdnn.metrics.control import normalised_return, split_means, task_returns
from hyperdnn.metrics.intervals import mean_interval
from hyperdnn.metrics.ood import expected_entropy, mutual_information, ood_auroc, predictive_entropy
from hyperdnn.metrics.ranking import kendall_tau, spearman, steps_to_reach

__all__ = [
    "accuracy",
    "accuracy_summary",
    "ate_error",
    "mean_se",
    "paired_win_rate",
    "sqrt_pehe",
    "brier_score",
    "expected_calibration_error",
    "expected_entropy",
    "kendall_tau",
    "mean_interval",
    "mean_probabilities",
    "model_accuracy",
    "mutual_information",
    "negative_log_likelihood",
    "normalised_return",
    "ood_auroc",
    "predictive_entropy",
    "reliability_bins",
    "spearman",
    "split_means",
    "steps_to_reach",
    "task_accuracies",
    "task_returns",
    "trained_parameters",
]
