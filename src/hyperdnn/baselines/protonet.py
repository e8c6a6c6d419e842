"""Prototypical networks (Snell et al., 2017): a class is the mean embedding of its support
examples, and a query goes to the nearest one.

:class:`ProtoNet` fulfils :class:`~hyperdnn.methods.fewshot.FewShotLearner`: the logits of a
query ``x`` are ``-||f(x) - p_n||^2`` with ``p_n`` the mean of ``f`` over class ``n``'s support
examples, trained end to end with cross-entropy over each episode's queries.

Example::

    >>> import torch
    >>> from hyperdnn.baselines.protonet import ProtoNet
    >>> from hyperdnn.networks import conv_net
    >>> learner = ProtoNet(conv_net(1, 8), shape=(1, 28, 28), ways=5)
    >>> learner.predict(torch.rand(5, 1, 1, 28, 28), torch.rand(7, 1, 28, 28)).shape
    torch.Size([7, 5])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn._checks import check_int
from hyperdnn.data.episodes import Episode
from hyperdnn.methods.fewshot import FewShotLearner, _check_shape

__all__ = ["ProtoNet"]


class ProtoNet(FewShotLearner):
    """Nearest class mean in the embedding of a learned ``backbone`` (squared Euclidean).

    Args:
        backbone: ``f``, a module mapping examples ``(M, *shape)`` to ``(M, features)``.
        shape: the shape of one example.
        ways: classes per episode.
    """

    def __init__(self, backbone: nn.Module, shape: Sequence[int], ways: int):
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"ProtoNet: backbone must be an nn.Module, got {type(backbone).__name__}")
        self.backbone = backbone
        self.shape = _check_shape("ProtoNet", shape)
        self.ways = check_int("ProtoNet", "ways", ways, 2)

    def prototypes(self, support: torch.Tensor) -> torch.Tensor:
        """``(ways, features)``: the mean embedding of each class's support examples."""
        ways, shots = support.shape[:2]
        return self.backbone(support.flatten(0, 1)).unflatten(0, (ways, shots)).mean(1)

    def _logits(self, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        # squared distances from the differences: cdist switches to a matmul formula above 25
        # rows, which loses float32 precision for embeddings far from the origin (the logits
        # then depended on how many queries were in the batch)
        diff = self.backbone(query).unsqueeze(1) - self.prototypes(support).unsqueeze(0)
        return -diff.pow(2).sum(-1)

    def predict(self, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        self.check("ProtoNet.predict", support, query)
        return self._logits(support, query)

    def loss(self, episode: Episode) -> torch.Tensor:
        self.check("ProtoNet.loss", episode.support, episode.query)
        return F.cross_entropy(self._logits(episode.support, episode.query), episode.query_labels)
