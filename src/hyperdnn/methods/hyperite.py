"""HyperITE: treatment-effect learners whose networks a hypernetwork generates from arm embeddings.

Chauhan, Zhou, Ghosheh, Molaei and Clifton, "Dynamic Inter-treatment Information Sharing for
Individualized Treatment Effects Estimation" (AISTATS 2024). A T-learner fits one outcome
network per arm and shares nothing; an S-learner shares everything. HyperITE keeps one network
per arm but lets one hypernetwork generate all of them from a learned embedding per arm::

    theta_k = H(e_k; phi)          mu_k(x) = f(x; theta_k)          tau(x) = mu_1(x) - mu_0(x)

Every arm's data trains ``phi``, so the arms share what they have in common (soft weight
sharing) and keep what differs in their embeddings. Dropout inside the hypernetwork regularises
the generated weights (the paper's "hypernet dropout").

* :class:`HypernetOptions` - the hypernetwork: arm-embedding width, trunk, dropout, output
  strategy (``once``: every weight from one linear head; ``chunked``: fixed-size chunks from a
  shared generator), and an optional learned shared base (``theta_k = theta0 + s * H(e_k)``).
* :class:`HyperSLearner` - one embedding: the hypernetwork generates the S-learner's network on
  ``[x, onehot(t)]``. With one arm embedding its function class is the plain
  :class:`~hyperdnn.baselines.meta_learners.SLearner`'s.
* :class:`HyperTLearner` - one embedding per arm generates that arm's outcome network; all arms
  run as one ensemble call of the target. ``arm_prior`` (HyperT, HyperTARNet; 0 by default)
  adds a Gaussian prior that pulls the arms' generated networks toward their mean
  (:func:`arm_spread`), weighted ``1 / n`` in the loss averaged over ``n`` training units as a
  MAP prior is: strong sharing on few units, fading as the units grow.
* :class:`HyperTARNet` - a shared representation (plain) and per-arm heads generated from the
  arm embeddings.
* :class:`HyperDRLearner` - the DR-learner (Kennedy, 2020) with a hypernetwork in its first
  stage: ``2K`` embeddings generate the ``K`` outcome networks and ``K`` propensity logits,
  cross-fitted over ``folds``; the second stage regresses the doubly robust pseudo-outcomes on
  ``x`` with a plain MLP.

Their plain counterparts, with the same target architectures and the same training loop, are
in :mod:`hyperdnn.baselines.meta_learners`; ``hyperdnn run causal`` compares them
(``docs/causal.md``).

Example::

    >>> import numpy as np
    >>> from hyperdnn.methods.hyperite import HyperTLearner
    >>> from hyperdnn.methods.treatment_effect import TrainOptions
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 4)); T = rng.integers(0, 2, 300); Y = X[:, 1] + T * (1 + X[:, 0])
    >>> est = HyperTLearner((16,), training=TrainOptions(max_epochs=100)).fit(X, T, Y)
    >>> est.effect(X[:3]).shape, est.num_parameters() > 0
    ((3,), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from hyperdnn._checks import check_widths
from hyperdnn.conditioners import TaskEmbedding
from hyperdnn.heads import Chunked, Once
from hyperdnn.hypernet import HyperModel, HyperNetwork
from hyperdnn.methods.treatment_effect import (
    DoublyRobustLearner,
    OutcomeLearner,
    TrainOptions,
    representation,
    with_arms,
)
from hyperdnn.networks import mlp
from hyperdnn.target import Target
from hyperdnn.trunks import MLP

__all__ = [
    "HEADS",
    "HypernetOptions",
    "arm_hypernetwork",
    "arm_spread",
    "HyperSLearner",
    "HyperTLearner",
    "HyperTARNet",
    "HyperDRLearner",
]

#: the output strategies of :class:`HypernetOptions`
HEADS = ("once", "chunked")


@dataclass(frozen=True)
class HypernetOptions:
    """The hypernetwork of a HyperITE learner.

    Args:
        embed_dim: the width of each arm's learned embedding.
        hidden: the hidden widths of the hypernetwork's MLP trunk.
        dropout: dropout after each trunk layer (hypernet dropout), in ``[0, 1)``.
        head: the output strategy, ``"once"`` (all weights from one linear layer) or
            ``"chunked"`` (chunks of ``chunk_size`` numbers from a shared generator fed a
            learned chunk embedding of ``chunk_embed_dim``).
        chunk_size, chunk_embed_dim: the chunked head's sizes.
        shared_base: ``0``: every weight is generated. ``s > 0``: each arm's weights are a
            learned base shared by the arms plus its generated deviation at ``s`` times the
            hyperfan scale (``theta_k = theta0 + s * scale * H(e_k)``), so the arms start from
            one network and move apart only as far as their data asks.
        embed_std: the standard deviation of the embeddings at initialisation.
        spectral_norm: spectral normalisation of the trunk's layers (the paper's default): the
            trunk cannot pull the arms' codes further apart than their embeddings are.

    Raises:
        ValueError: a value out of its range (every one named).
    """

    embed_dim: int = 8
    hidden: tuple[int, ...] = (64, 64)
    dropout: float = 0.05
    head: str = "once"
    chunk_size: int = 256
    chunk_embed_dim: int = 8
    shared_base: float = 0.0
    embed_std: float = 1.0
    spectral_norm: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(self.hidden))
        bad = []
        for name in ("embed_dim", "chunk_size", "chunk_embed_dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad.append(f"{name} must be an int >= 1, got {v!r}")
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden):
            bad.append(f"hidden must be ints >= 1, got {self.hidden!r}")
        ranges = {"dropout": (0.0, 1.0), "shared_base": (0.0, math.inf), "embed_std": (0.0, math.inf)}
        for name, (lo, hi) in ranges.items():
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo <= v < hi
            if not ok or (name == "embed_std" and v == 0):
                bad.append(f"{name} must be a finite number in [{lo}, {hi}){' and > 0' if name == 'embed_std' else ''}, got {v!r}")  # fmt: skip
        if not isinstance(self.spectral_norm, bool):
            bad.append(f"spectral_norm must be a bool, got {self.spectral_norm!r}")
        if self.head not in HEADS:
            bad.append(f"head must be one of {HEADS}, got {self.head!r}")
        if bad:
            raise ValueError("HypernetOptions: " + "; ".join(bad))


def arm_hypernetwork(target: nn.Module, contexts: int, options: HypernetOptions) -> HyperModel:
    """A hypernetwork with ``contexts`` arm embeddings generating ``target``'s weights, with the
    target, as one :class:`~hyperdnn.HyperModel`.

    Args:
        target: the network to generate (every parameter is generated).
        contexts: the number of embeddings (arms; ``2K`` for the DR-learner's first stage).
        options: the :class:`HypernetOptions`.

    Returns:
        ``model(x, torch.arange(contexts), mode="ensemble")`` runs every context's network on
        ``x``: ``(contexts, N, out)``.
    """
    tgt = Target(target)
    head = Chunked(options.chunk_size, options.chunk_embed_dim) if options.head == "chunked" else Once()
    shared = {"residual": "target", "learn_theta0": True, "residual_scale": options.shared_base}
    hnet = HyperNetwork(
        tgt,
        TaskEmbedding(contexts, options.embed_dim, init_std=options.embed_std),
        MLP(options.hidden, dropout=options.dropout, spectral_norm=options.spectral_norm),
        head,
        **(shared if options.shared_base > 0 else {}),
    )
    return HyperModel(hnet, tgt)


def arm_spread(model: HyperModel, contexts: int) -> torch.Tensor:
    """``sum_k ||theta_k - mean_j theta_j||^2`` over the networks ``model`` generates for
    contexts ``0 .. contexts-1``: minus twice the log-density (up to a constant) of a unit
    Gaussian prior that centres every arm's weights on the arms' mean."""
    flat, _ = model.hypernet.generate_flat(torch.arange(contexts))
    return (flat - flat.mean(0)).pow(2).sum()


def _check_prior(where: str, value: float) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    if not ok:
        raise ValueError(f"{where}: arm_prior must be a finite number >= 0, got {value!r}")
    return float(value)


def _ensemble(model: HyperModel, x: torch.Tensor, contexts: int) -> torch.Tensor:
    """Every context's network on ``x (N, F)``: ``(contexts, N)`` (their first output)."""
    return model(x, torch.arange(contexts), mode="ensemble")[..., 0]


class HyperSLearner(OutcomeLearner):
    """HyperITE's S-learner: one arm-free embedding generates the network ``f([x, onehot(t)])``.

    Args:
        hidden: the hidden widths of the generated MLP (as :class:`~hyperdnn.baselines.meta_learners.SLearner`).
        hypernet: the :class:`HypernetOptions` (the paper uses a one-dimensional embedding).
        training: the :class:`~hyperdnn.methods.treatment_effect.TrainOptions`.
    """

    config_keys = ("hidden", "hypernet")
    option_types = {"hypernet": HypernetOptions}

    def __init__(
        self,
        hidden: Sequence[int] = (64, 64),
        hypernet: HypernetOptions | None = None,
        training: TrainOptions | None = None,
    ):
        super().__init__(training)
        self.hidden = check_widths(type(self).__name__, "hidden", hidden)
        self.hypernet = _options(hypernet, "HyperSLearner")

    def _build(self, features: int, arms: int) -> nn.Module:
        return arm_hypernetwork(mlp(features + arms, self.hidden, 1), 1, self.hypernet)

    def _outcomes(self, x: torch.Tensor) -> torch.Tensor:
        return self.model_(with_arms(x, self.arms_), 0).view(self.arms_, x.shape[0])  # type: ignore[misc]


class HyperTLearner(OutcomeLearner):
    """HyperITE's T-learner: arm ``k``'s outcome network is generated from embedding ``e_k``.

    Args:
        hidden: the hidden widths of each generated MLP (as
            :class:`~hyperdnn.baselines.meta_learners.TLearner`).
        hypernet: the :class:`HypernetOptions`.
        training: the :class:`~hyperdnn.methods.treatment_effect.TrainOptions`.
        arm_prior: ``lambda >= 0``: every training step adds ``lambda / n * arm_spread``
            (:func:`arm_spread`, ``n`` training units): a Gaussian prior of variance
            ``sigma^2 / lambda`` (``sigma^2`` the noise of the standardised outcome) on each
            arm's generated weights around the arms' mean; ``0`` (the default): no such prior.
    """

    config_keys = ("hidden", "hypernet", "arm_prior")
    option_types = {"hypernet": HypernetOptions}

    def __init__(
        self,
        hidden: Sequence[int] = (64, 64),
        hypernet: HypernetOptions | None = None,
        training: TrainOptions | None = None,
        arm_prior: float = 0.0,
    ):
        super().__init__(training)
        self.hidden = check_widths(type(self).__name__, "hidden", hidden)
        self.hypernet = _options(hypernet, "HyperTLearner")
        self.arm_prior = _check_prior("HyperTLearner", arm_prior)

    def _build(self, features: int, arms: int) -> nn.Module:
        return arm_hypernetwork(mlp(features, self.hidden, 1), arms, self.hypernet)

    def _outcomes(self, x: torch.Tensor) -> torch.Tensor:
        return _ensemble(self.model_, x, self.arms_)  # type: ignore[arg-type]

    def _penalty(self) -> Callable[[int], torch.Tensor] | None:
        if not self.arm_prior:
            return None
        return lambda n: self.arm_prior / n * arm_spread(self.model_, self.arms_)  # type: ignore[arg-type]


class HyperTARNet(OutcomeLearner):
    """HyperITE's TARNet: a shared representation; arm ``k``'s head is generated from ``e_k``.

    Args:
        representation, heads: the widths (as :class:`~hyperdnn.baselines.meta_learners.TARNet`).
        hypernet: the :class:`HypernetOptions`.
        training: the :class:`~hyperdnn.methods.treatment_effect.TrainOptions`.
        arm_prior: the prior on the generated heads around their mean (as :class:`HyperTLearner`'s).
    """

    config_keys = ("representation", "heads", "hypernet", "arm_prior")
    option_types = {"hypernet": HypernetOptions}

    def __init__(
        self,
        representation: Sequence[int] = (64,),
        heads: Sequence[int] = (64,),
        hypernet: HypernetOptions | None = None,
        training: TrainOptions | None = None,
        arm_prior: float = 0.0,
    ):
        super().__init__(training)
        self.representation, self.heads = tuple(representation), tuple(heads)
        self.hypernet = _options(hypernet, "HyperTARNet")
        self.arm_prior = _check_prior("HyperTARNet", arm_prior)
        if not self.representation:
            raise ValueError("HyperTARNet: representation needs at least one width, got ()")
        check_widths(type(self).__name__, "representation", self.representation)
        check_widths(type(self).__name__, "heads", self.heads)

    def _build(self, features: int, arms: int) -> nn.Module:
        rep = representation(features, self.representation)
        heads = arm_hypernetwork(mlp(self.representation[-1], self.heads, 1), arms, self.hypernet)
        return nn.ModuleDict({"representation": rep, "heads": heads})

    def _outcomes(self, x: torch.Tensor) -> torch.Tensor:
        return _ensemble(self.model_["heads"], self.model_["representation"](x), self.arms_)  # type: ignore[index]

    def _penalty(self) -> Callable[[int], torch.Tensor] | None:
        if not self.arm_prior:
            return None
        return lambda n: self.arm_prior / n * arm_spread(self.model_["heads"], self.arms_)  # type: ignore[index]


class HyperDRLearner(DoublyRobustLearner):
    """The DR-learner with a hypernetwork in its first stage (HyperITE's HyperDRLearner):
    ``2K`` embeddings generate the ``K`` outcome networks and ``K`` propensity-logit networks
    (see :class:`~hyperdnn.methods.treatment_effect.DoublyRobustLearner` for the stages).

    Args:
        hidden: the hidden widths of the generated first-stage MLPs and of the second stage.
        hypernet: the :class:`HypernetOptions`.
        folds: cross-fitting folds (``1``: fit and predict on every unit).
        clip: the propensity clip, in ``[0, 0.5)``.
        training: the :class:`~hyperdnn.methods.treatment_effect.TrainOptions` (both stages).
    """

    config_keys = ("hidden", "hypernet", "folds", "clip")
    option_types = {"hypernet": HypernetOptions}

    def __init__(
        self,
        hidden: Sequence[int] = (64, 64),
        hypernet: HypernetOptions | None = None,
        folds: int = 2,
        clip: float = 0.05,
        training: TrainOptions | None = None,
    ):
        super().__init__(hidden, folds, clip, training)
        self.hypernet = _options(hypernet, "HyperDRLearner")

    def _nuisance(self, features: int, arms: int) -> nn.Module:
        return arm_hypernetwork(mlp(features, self.hidden, 1), 2 * arms, self.hypernet)

    def _nuisance_outputs(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return _ensemble(module, x, 2 * self.arms_)  # type: ignore[arg-type]


def _options(options: HypernetOptions | None, where: str) -> HypernetOptions:
    if options is None:
        return HypernetOptions()
    if not isinstance(options, HypernetOptions):
        raise TypeError(f"{where}: hypernet must be a HypernetOptions, got {type(options).__name__}")
    return options
