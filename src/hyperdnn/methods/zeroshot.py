"""Zero-shot learning: the contract of a zero-shot learner, and the hypernetwork that reads a
class's description and writes that class's classifier.

A :class:`ZeroShotLearner` scores examples against classes given only by their descriptions
(:meth:`ZeroShotLearner.scores`), so classes never seen in training can be recognised: it is
trained on the seen classes (:meth:`ZeroShotLearner.train_step`, cross-entropy over the seen
classes' scores) and tested on unseen ones. The baselines of :mod:`hyperdnn.baselines` (a
DeViSE-style compatibility model, direct attribute prediction) fulfil the same contract.

:class:`HypernetZeroShot` is the hypernetwork method (Text2Model, Amosy et al.): a
:class:`~hyperdnn.conditioners.DescriptionEncoder` embeds a class's description, a
:class:`~hyperdnn.hypernet.HyperNetwork` maps it to the weights of that class's scorer, a
linear layer on the features ``f(x)`` of a CNN trained with it; every class's scorer runs on the
batch as one ensemble::

    theta_c = H(description_c)          score_c(x) = w_c . f(x) + b_c

Example::

    >>> import torch
    >>> from hyperdnn.methods.zeroshot import HypernetZeroShot
    >>> from hyperdnn.networks import conv_net
    >>> words = ["case:small", "case:capital", "letter:a", "letter:b"]
    >>> learner = HypernetZeroShot(conv_net(1, 8), 8, (1, 28, 28), words)
    >>> learner.scores(torch.rand(6, 1, 28, 28), ["case:small letter:a", "case:capital letter:b"]).shape
    torch.Size([6, 2])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn._checks import check_int, check_widths
from hyperdnn.conditioners import DescriptionEncoder
from hyperdnn.hypernet import HyperNetwork
from hyperdnn.target import Target
from hyperdnn.trunks import MLP

__all__ = ["ZeroShotLearner", "HypernetZeroShot"]


class ZeroShotLearner(nn.Module, ABC):
    """The contract of a zero-shot learner.

    Subclasses set ``shape`` (one example's shape) and implement :meth:`scores`; descriptions
    are strings of words of the learner's vocabulary.
    """

    shape: tuple[int, ...]

    @abstractmethod
    def scores(self, x: torch.Tensor, descriptions: Sequence[str]) -> torch.Tensor:
        """Scores ``(N, C)`` of examples ``x (N, *shape)`` for the ``C`` classes described.

        Raises:
            ValueError: examples of another shape, or a description that is empty or has a
                word outside the vocabulary (naming it).
        """

    def loss(self, x: torch.Tensor, y: torch.Tensor, descriptions: Sequence[str]) -> torch.Tensor:
        """Cross-entropy of ``x`` with classes ``y (N,)``, indices into ``descriptions``."""
        return F.cross_entropy(self.scores(x, descriptions), y)

    def train_step(
        self, x: torch.Tensor, y: torch.Tensor, descriptions: Sequence[str], optimizer: torch.optim.Optimizer
    ) -> dict[str, float]:
        """One optimizer step on a batch of the seen classes; returns ``{"loss": ...}``."""
        loss = self.loss(x, y, descriptions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return {"loss": loss.item()}

    def check(self, where: str, x: torch.Tensor) -> None:
        """Raise one ``ValueError`` naming ``where`` for examples not of ``shape``."""
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != self.shape:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{where}: expected examples (N, {', '.join(map(str, self.shape))}), got {got}")


class HypernetZeroShot(ZeroShotLearner):
    """Description in, classifier out: a hypernetwork writes each class's linear scorer on the
    features of a jointly trained ``backbone`` from the class's description.

    Args:
        backbone: ``f``, a module mapping examples ``(N, *shape)`` to ``(N, features)``.
        features: the width of ``f``'s output.
        shape: the shape of one example.
        vocabulary: every word a description may use.
        embed_dim: the description encoder's width.
        pooling: how it pools a description's words: ``"mean"`` or ``"attention"``.
        trunk: the hidden widths of the hypernetwork's MLP trunk.
        heads: attention heads (pooling ``"attention"``).
        dropout: dropout after each hidden layer of the trunk (training only; the classes of
            a batch each draw their own mask).

    ``hypernet`` is the :class:`~hyperdnn.hypernet.HyperNetwork` (conditioner a
    :class:`~hyperdnn.conditioners.DescriptionEncoder`), ``target`` the
    :class:`~hyperdnn.target.Target` of one class's ``nn.Linear(features, 1)``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        features: int,
        shape: Sequence[int],
        vocabulary: Sequence[str],
        embed_dim: int = 64,
        pooling: str = "mean",
        trunk: Sequence[int] = (256,),
        heads: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        where = "HypernetZeroShot"
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"{where}: backbone must be an nn.Module, got {type(backbone).__name__}")
        check_int(where, "features", features)
        self.shape = check_widths(where, "shape", shape, allow_empty=False)
        trunk = check_widths(where, "trunk", trunk, allow_empty=False)
        self.backbone = backbone
        self.target = Target(nn.Linear(features, 1))
        encoder = DescriptionEncoder(vocabulary, embed_dim, pooling=pooling, heads=heads, execution="ensemble")
        self.hypernet = HyperNetwork(self.target, encoder, MLP(trunk, dropout=dropout))

    def classifiers(self, descriptions: Sequence[str]) -> dict[str, torch.Tensor]:
        """The generated scorers of the described classes: name -> ``(C, *shape)``."""
        return self.hypernet(list(descriptions))

    def scores(self, x: torch.Tensor, descriptions: Sequence[str]) -> torch.Tensor:
        self.check("HypernetZeroShot.scores", x)
        return self.target.ensemble(self.classifiers(descriptions), self.backbone(x))[..., 0].T
