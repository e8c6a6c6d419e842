"""Plain PyTorch meta-learners: the counterparts of the hypernetwork learners, same architectures.

Each learner here has the networks that the matching learner of
:mod:`hyperdnn.methods.hyperite` generates, trained by the same loop
(:func:`~hyperdnn.methods.treatment_effect.train_network`) on the same factual loss, so a
comparison between the two isolates the hypernetwork:

* :class:`SLearner` - one MLP on ``[x, onehot(t)]`` (the arm is an input).
* :class:`TLearner` - one MLP per arm, nothing shared.
* :class:`TARNet` - a shared representation and one MLP head per arm (Shalit et al., 2017).
* :class:`DRLearner` - the DR-learner whose first stage is an MLP per arm and a propensity MLP.

Example::

    >>> import numpy as np
    >>> from hyperdnn.baselines.meta_learners import TARNet
    >>> from hyperdnn.methods.treatment_effect import TrainOptions
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 4)); T = rng.integers(0, 2, 300); Y = X[:, 1] + T * X[:, 0]
    >>> est = TARNet((16,), (8,), training=TrainOptions(max_epochs=50)).fit(X, T, Y)
    >>> est.effect(X[:5]).shape, est.predict_outcomes(X[:5]).shape
    ((5,), (5, 2))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hyperdnn._checks import check_widths
from hyperdnn.methods.treatment_effect import (
    DoublyRobustLearner,
    OutcomeLearner,
    TrainOptions,
    representation,
    with_arms,
)
from hyperdnn.networks import mlp

__all__ = ["SLearner", "TLearner", "TARNet", "DRLearner"]


class SLearner(OutcomeLearner):
    """The S-learner: one MLP ``f([x, onehot(t)])``, the effect ``f([x, e_T1]) - f([x, e_T0])``.

    Args:
        hidden: the MLP's hidden widths.
        training: the :class:`~hyperdnn.methods.treatment_effect.TrainOptions`.
    """

    config_keys = ("hidden",)

    def __init__(self, hidden: Sequence[int] = (64, 64), training: TrainOptions | None = None):
        super().__init__(training)
        self.hidden = check_widths(type(self).__name__, "hidden", hidden)

    def _build(self, features: int, arms: int) -> nn.Module:
        return mlp(features + arms, self.hidden, 1)

    def _outcomes(self, x: torch.Tensor) -> torch.Tensor:
        return self.model_(with_arms(x, self.arms_)).view(self.arms_, x.shape[0])  # type: ignore[misc]


class TLearner(OutcomeLearner):
    """The T-learner: one MLP ``mu_k(x)`` per arm, each trained on its arm's units only.

    Args:
        hidden: each MLP's hidden widths.
        training: the :class:`~hyperdnn.methods.treatment_effect.TrainOptions` (one loop
            trains every arm's network; their losses do not interact, their early stopping
            is joint).
    """

    config_keys = ("hidden",)

    def __init__(self, hidden: Sequence[int] = (64, 64), training: TrainOptions | None = None):
        super().__init__(training)
        self.hidden = check_widths(type(self).__name__, "hidden", hidden)

    def _build(self, features: int, arms: int) -> nn.Module:
        return nn.ModuleList([mlp(features, self.hidden, 1) for _ in range(arms)])

    def _outcomes(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(x)[:, 0] for net in self.model_])  # type: ignore[union-attr]


class TARNet(OutcomeLearner):
    """TARNet: a shared representation ``phi(x)`` and a head ``h_k(phi(x))`` per arm.

    Args:
        representation: the representation's widths (``Linear -> ReLU`` each).
        heads: each head's hidden widths (a head ends in one output).
        training: the :class:`~hyperdnn.methods.treatment_effect.TrainOptions`.
    """

    config_keys = ("representation", "heads")

    def __init__(
        self,
        representation: Sequence[int] = (64,),
        heads: Sequence[int] = (64,),
        training: TrainOptions | None = None,
    ):
        super().__init__(training)
        self.representation, self.heads = tuple(representation), tuple(heads)
        if not self.representation:
            raise ValueError("TARNet: representation needs at least one width, got ()")
        check_widths(type(self).__name__, "representation", self.representation)
        check_widths(type(self).__name__, "heads", self.heads)

    def _build(self, features: int, arms: int) -> nn.Module:
        rep = representation(features, self.representation)
        heads = nn.ModuleList([mlp(self.representation[-1], self.heads, 1) for _ in range(arms)])
        return nn.ModuleDict({"representation": rep, "heads": heads})

    def _outcomes(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model_["representation"](x)  # type: ignore[index]
        return torch.stack([head(z)[:, 0] for head in self.model_["heads"]])  # type: ignore[index]


class DRLearner(DoublyRobustLearner):
    """The DR-learner with plain first-stage networks: an MLP per arm for the outcomes and an
    MLP with ``K`` outputs for the propensity logits (see
    :class:`~hyperdnn.methods.treatment_effect.DoublyRobustLearner` for the stages).

    Args:
        hidden: the hidden widths of every first-stage MLP and of the second stage.
        folds: cross-fitting folds (``1``: fit and predict on every unit).
        clip: the propensity clip, in ``[0, 0.5)``.
        training: the :class:`~hyperdnn.methods.treatment_effect.TrainOptions` (both stages).
    """

    def _nuisance(self, features: int, arms: int) -> nn.Module:
        return nn.ModuleDict(
            {
                "outcomes": nn.ModuleList([mlp(features, self.hidden, 1) for _ in range(arms)]),
                "propensity": mlp(features, self.hidden, arms),
            }
        )

    def _nuisance_outputs(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        outcomes = torch.stack([net(x)[:, 0] for net in module["outcomes"]])  # type: ignore[index]
        return torch.cat([outcomes, module["propensity"](x).T])  # type: ignore[index]
