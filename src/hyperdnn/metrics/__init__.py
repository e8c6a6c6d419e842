"""Metrics a user imports: what a recipe measures, as plain functions over tensors.

* :mod:`~hyperdnn.metrics.classification` - :func:`accuracy` of logits or of a model.
* :mod:`~hyperdnn.metrics.continual` - continual learning: :func:`accuracy_summary` (average
  accuracy, backward transfer, just-trained accuracy) of an accuracy matrix, and
  :func:`task_accuracies` (one row of that matrix).
* :mod:`~hyperdnn.metrics.ranking` - :func:`spearman`, :func:`kendall_tau` (does a cheap
  signal rank candidates as training does?) and :func:`steps_to_reach`.

Calibration, Pareto-front and other metrics of later recipes go here, one module per family.
"""

from hyperdnn.metrics.classification import accuracy, model_accuracy
from hyperdnn.metrics.continual import accuracy_summary, task_accuracies
from hyperdnn.metrics.ranking import kendall_tau, spearman, steps_to_reach

__all__ = [
    "accuracy",
    "accuracy_summary",
    "kendall_tau",
    "model_accuracy",
    "spearman",
    "steps_to_reach",
    "task_accuracies",
]
