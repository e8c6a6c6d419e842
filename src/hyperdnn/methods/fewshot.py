"""Few-shot learning: the contract of a few-shot learner, and the hypernetwork that reads a
support set and writes the classifier for it.

A :class:`FewShotLearner` is trained episode by episode (:meth:`FewShotLearner.train_step`) and
classifies a new episode's queries from its support set alone (:meth:`FewShotLearner.predict`).
The baselines of :mod:`hyperdnn.baselines` (ProtoNet, first-order MAML, fine-tuning a pretrained
feature extractor) fulfil the same contract, so one loop trains and tests them all.

:class:`HypernetFewShot` is the hypernetwork method (in the line of LGM-Net, Li et al. 2019, and
HyperShot, Sendera et al. 2023): a CNN ``f`` embeds images; a
:class:`~hyperdnn.conditioners.SetEncoder` pools the embeddings of each class's support
examples (in any order); a :class:`~hyperdnn.hypernet.HyperNetwork` maps each class's code to
the weights of that class's scorer (:class:`MetricScorer`: a centre, a weight per feature and a
bias); the ``ways`` scorers run as one ensemble on the queries, and their scores are the
logits::

    c_n = pool_k f(x_nk)      (delta_n, s_n, b_n) = H(c_n)      mu_n = mean_k f(x_nk)
    logit_n(x) = b_n - sum_d exp(s_nd) * (f(x)_d - mu_nd - delta_nd)^2

The generated centre is an offset from the class mean: with ``H`` at zero the scorer is
ProtoNet's, and what the hypernetwork writes is how each class's scorer departs from it (a
shifted centre, a metric of its own, a bias).

Example::

    >>> import torch
    >>> from hyperdnn.methods.fewshot import HypernetFewShot
    >>> from hyperdnn.networks import conv_net
    >>> learner = HypernetFewShot(conv_net(1, 8), features=8, shape=(1, 28, 28), ways=5)
    >>> support, query = torch.rand(5, 2, 1, 28, 28), torch.rand(15, 1, 28, 28)
    >>> learner.predict(support, query).shape                 # (queries, ways)
    torch.Size([15, 5])
    >>> learner.predict(support[:4], query)
    Traceback (most recent call last):
    ...
    ValueError: HypernetFewShot.predict: expected a support set of 5 classes, (5, shots, 1, 28, 28), got (4, 2, 1, 28, 28) (4 classes)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn._checks import check_int, check_widths
from hyperdnn.conditioners import SetEncoder
from hyperdnn.data.episodes import Episode, EpisodeSampler, check_support
from hyperdnn.hypernet import HyperNetwork
from hyperdnn.target import Target
from hyperdnn.trunks import MLP

__all__ = ["FewShotLearner", "HypernetFewShot", "MetricScorer", "evaluate_episodes"]


class FewShotLearner(nn.Module, ABC):
    """The contract of a few-shot learner.

    Subclasses set ``ways`` and ``shape`` (one example's shape) and implement :meth:`loss` and
    :meth:`predict`; :meth:`train_step` (one optimizer step on one episode) may be overridden
    by a learner whose update is not the gradient of a loss (first-order MAML).
    """

    ways: int
    shape: tuple[int, ...]

    @abstractmethod
    def loss(self, episode: Episode) -> torch.Tensor:
        """The training loss of one episode (a scalar)."""

    @abstractmethod
    def predict(self, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Logits ``(Q, ways)`` of ``query (Q, *shape)`` from ``support (ways, shots, *shape)``.

        Raises:
            ValueError: a support set of another number of classes, or examples of another
                shape (naming the expected and the given shape).
        """

    def train_step(self, episode: Episode, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """One optimizer step on ``episode``; returns ``{"loss": ...}``."""
        loss = self.loss(episode)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return {"loss": loss.item()}

    def check(self, where: str, support: torch.Tensor, query: torch.Tensor, ways: int | None = None) -> None:
        """Raise one ``ValueError`` naming ``where`` for a support set or queries that do not
        fit this learner (``ways`` classes, default the learner's; examples of ``shape``)."""
        check_support(where, support, self.ways if ways is None else ways, self.shape)
        if not isinstance(query, torch.Tensor) or tuple(query.shape[1:]) != self.shape:
            got = tuple(query.shape) if isinstance(query, torch.Tensor) else type(query).__name__
            raise ValueError(f"{where}: expected queries (Q, {', '.join(map(str, self.shape))}), got {got}")


def _check_shape(where: str, shape: Sequence[int]) -> tuple[int, ...]:
    if isinstance(shape, str) or not isinstance(shape, Sequence) or not shape:
        raise ValueError(f"{where}: shape must be one example's shape, a non-empty sequence of ints, got {shape!r}")
    return check_widths(where, "shape", shape, allow_empty=False)


class MetricScorer(nn.Module):
    """One class's scorer: ``score(x) = bias - sum_d exp(log_scale_d) * (x_d - center_d)^2``.

    Args:
        features: the width of ``x``.

    Its parameters start at zero (a scorer of squared Euclidean distance to the origin); a
    hypernetwork generates them per class. ``(N, features)`` -> ``(N, 1)``.
    """

    def __init__(self, features: int):
        super().__init__()
        check_int("MetricScorer", "features", features)
        self.center = nn.Parameter(torch.zeros(features))
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias - (self.log_scale.exp() * (x - self.center).pow(2)).sum(-1, keepdim=True)


class HypernetFewShot(FewShotLearner):
    """Support set in, classifier out: a hypernetwork writes each class's scorer from the pooled
    embeddings of that class's support examples.

    Args:
        backbone: ``f``, a module mapping examples ``(M, *shape)`` to ``(M, features)``; it
            embeds the support set and the queries.
        features: the width of ``f``'s output.
        shape: the shape of one example (``(1, 28, 28)``).
        ways: classes per episode.
        pooling: how the set encoder pools a class's support embeddings: ``"mean"`` or
            ``"attention"`` (``heads`` heads, which must divide ``features``).
        trunk: the hidden widths of the hypernetwork's MLP trunk.
        heads: attention heads (pooling ``"attention"``).

    ``hypernet`` is the :class:`~hyperdnn.hypernet.HyperNetwork` (its conditioner a
    :class:`~hyperdnn.conditioners.SetEncoder` over embeddings ``(ways, shots, features)``),
    ``target`` the :class:`~hyperdnn.target.Target` of one :class:`MetricScorer`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        features: int,
        shape: Sequence[int],
        ways: int,
        pooling: str = "mean",
        trunk: Sequence[int] = (256,),
        heads: int = 1,
    ):
        super().__init__()
        where = "HypernetFewShot"
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"{where}: backbone must be an nn.Module, got {type(backbone).__name__}")
        check_int(where, "features", features)
        self.shape = _check_shape(where, shape)
        self.ways = check_int(where, "ways", ways, 2)
        trunk = check_widths(where, "trunk", trunk, allow_empty=False)
        self.backbone = backbone
        self.target = Target(MetricScorer(features))
        encoder = SetEncoder(nn.Identity(), features, (features,), pooling=pooling, heads=heads, execution="ensemble")
        self.hypernet = HyperNetwork(self.target, encoder, MLP(trunk))

    def classifiers(self, support: torch.Tensor) -> dict[str, torch.Tensor]:
        """The ``ways`` generated scorers (centres included): name -> ``(ways, *shape)``."""
        ways, shots = support.shape[:2]
        embedded = self.backbone(support.flatten(0, 1)).unflatten(0, (ways, shots))  # (ways, shots, features)
        weights = dict(self.hypernet(embedded))
        weights["center"] = weights["center"] + embedded.mean(1)
        return weights

    def predict(self, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        self.check("HypernetFewShot.predict", support, query)
        return self._logits(support, query)

    def _logits(self, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        scores = self.target.ensemble(self.classifiers(support), self.backbone(query))  # (ways, Q, 1)
        return scores[..., 0].T

    def loss(self, episode: Episode) -> torch.Tensor:
        self.check("HypernetFewShot.loss", episode.support, episode.query)
        return F.cross_entropy(self._logits(episode.support, episode.query), episode.query_labels)


def evaluate_episodes(
    learner: FewShotLearner,
    sampler: EpisodeSampler,
    episodes: int,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The accuracy of ``learner`` on each of ``episodes`` episodes drawn by ``sampler`` with
    ``generator``: float64 ``(episodes,)`` (the learner runs in eval mode, without gradients
    except where its prediction takes gradient steps; its mode is restored afterwards).

    Example::

        >>> import torch
        >>> from hyperdnn.baselines import ProtoNet
        >>> from hyperdnn.data import ClassData, EpisodeSampler
        >>> from hyperdnn.methods.fewshot import evaluate_episodes
        >>> data = ClassData("toy", torch.arange(40.0).view(40, 1) // 10, torch.arange(40) // 10, tuple("abcd"), ("",) * 4)
        >>> sampler = EpisodeSampler(data, [0, 1, 2, 3], ways=2, shots=1, queries=3)
        >>> evaluate_episodes(ProtoNet(torch.nn.Identity(), (1,), 2), sampler, 5, torch.Generator().manual_seed(0))
        tensor([1., 1., 1., 1., 1.], dtype=torch.float64)
    """
    check_int("evaluate_episodes", "episodes", episodes)
    training = learner.training
    learner.eval()
    accuracies = []
    try:
        with torch.no_grad():
            for _ in range(episodes):
                episode = sampler.sample(generator).to(device)
                logits = learner.predict(episode.support, episode.query)
                accuracies.append(float((logits.argmax(-1) == episode.query_labels).double().mean()))
    finally:
        learner.train(training)
    return torch.tensor(accuracies, dtype=torch.float64)
