"""Direct attribute prediction (DAP, Lampert et al., 2009 and 2014): predict each attribute of an
example, then score a class by how likely its attributes are.

:class:`DirectAttributePrediction` fulfils :class:`~hyperdnn.methods.zeroshot.ZeroShotLearner`.
Its attributes are the words of the vocabulary: a class has attribute ``v`` when its description
has the word. A CNN ``f`` with a linear layer predicts every attribute's probability
``p_v(x)`` (trained with binary cross-entropy against the example's class's attributes); a class
``c`` with attributes ``a_c`` scores ::

    score_c(x) = sum_v log p(a_cv | x) - log p(a_cv)

the log of Lampert's posterior ``prod_v p(a_cv | x) / p(a_cv)``, with the attribute priors
``p(a_v)`` the share of seen classes that have the attribute (recorded by training).

Example::

    >>> import torch
    >>> from hyperdnn.baselines.attribute_prediction import DirectAttributePrediction
    >>> from hyperdnn.networks import conv_net
    >>> model = DirectAttributePrediction(conv_net(1, 8), 8, (1, 28, 28), ["case:small", "case:capital", "letter:a"])
    >>> model.scores(torch.rand(6, 1, 28, 28), ["case:small letter:a", "case:capital letter:a"]).shape
    torch.Size([6, 2])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn._checks import check_int, check_widths
from hyperdnn.baselines.devise import check_vocabulary
from hyperdnn.data.classes import attribute_matrix
from hyperdnn.methods.zeroshot import ZeroShotLearner

__all__ = ["DirectAttributePrediction"]

_EPS = 1e-4  # probabilities and priors are kept in [eps, 1 - eps]


class DirectAttributePrediction(ZeroShotLearner):
    """Attribute classifiers on a learned backbone; classes scored by their attributes' likelihood.

    Args:
        backbone: ``f``, a module mapping examples ``(N, *shape)`` to ``(N, features)``.
        features: the width of ``f``'s output.
        shape: the shape of one example.
        vocabulary: every word (attribute) a description may use.
    """

    def __init__(self, backbone: nn.Module, features: int, shape: Sequence[int], vocabulary: Sequence[str]):
        super().__init__()
        where = "DirectAttributePrediction"
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"{where}: backbone must be an nn.Module, got {type(backbone).__name__}")
        check_int(where, "features", features)
        self.shape = check_widths(where, "shape", shape, allow_empty=False)
        self.vocabulary = check_vocabulary(where, vocabulary)
        self.backbone = backbone
        self.attributes = nn.Linear(features, len(self.vocabulary))
        # the attribute priors of the seen classes (0.5 until training records them)
        self.register_buffer("prior", torch.full((len(self.vocabulary),), 0.5))

    def attribute_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, V)``: the logit of every attribute of every example."""
        self.check("DirectAttributePrediction.attribute_logits", x)
        return self.attributes(self.backbone(x))

    def scores(self, x: torch.Tensor, descriptions: Sequence[str]) -> torch.Tensor:
        self.check("DirectAttributePrediction.scores", x)
        a = attribute_matrix(list(descriptions), self.vocabulary).to(x)  # (C, V)
        logits = self.attributes(self.backbone(x))
        log_p, log_q = F.logsigmoid(logits).clamp(min=torch.log(torch.tensor(_EPS))), F.logsigmoid(-logits).clamp(min=torch.log(torch.tensor(_EPS)))  # fmt: skip
        prior = self.prior.clamp(_EPS, 1 - _EPS)
        likelihood = log_p @ a.T + log_q @ (1 - a).T  # (N, C)
        return likelihood - (a @ prior.log() + (1 - a) @ (1 - prior).log())

    def loss(self, x: torch.Tensor, y: torch.Tensor, descriptions: Sequence[str]) -> torch.Tensor:
        """Binary cross-entropy of every attribute of ``x`` against its class's (and records the
        seen classes' attribute priors)."""
        a = attribute_matrix(list(descriptions), self.vocabulary).to(x)
        with torch.no_grad():
            self.prior.copy_(a.mean(0))
        return F.binary_cross_entropy_with_logits(self.attribute_logits(x), a[y])
