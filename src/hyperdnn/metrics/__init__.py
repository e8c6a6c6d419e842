"""Metrics a user imports: what a recipe measures, as plain functions over tensors.

* :mod:`~hyperdnn.metrics.classification` - :func:`accuracy` of logits or of a model.
* :mod:`~hyperdnn.metrics.continual` - continual learning: :func:`accuracy_summary` (average
  accuracy, backward transfer, just-trained accuracy) of an accuracy matrix, and
  :func:`task_accuracies` (one row of that matrix).

Calibration, Pareto-front and other metrics of later recipes go here, one module per family.
"""

from hyperdnn.metrics.classification import accuracy, model_accuracy
from hyperdnn.metrics.continual import accuracy_summary, task_accuracies

__all__ = ["accuracy", "accuracy_summary", "model_accuracy", "task_accuracies"]
