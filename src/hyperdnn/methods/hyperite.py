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
  MAP prior is: strong sharing on few units, fading as the units grow. ``arm_prior_noise``
  scales that weight by the outcome noise :func:`noise_variance` estimates before training
  (``lambda * s2 / n``, as a MAP prior's weight is in a Gaussian likelihood of variance ``s2``).
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
    training_units,
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
    "noise_variance",
    "HyperSLearner",
    "HyperTLearner",
    "HyperTARNet",
    "HyperDRLearner",
]

#: the output strategies of :class:`HypernetOptions`
HEADS = ("once", "chunked")
#: the ridge penalties :func:`noise_variance` chooses from (times an arm's units)
RIDGE_ALPHAS = (1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0)
#: the Gaussian kernels' inverse widths :func:`noise_variance` chooses from (per covariate)
RBF_GAMMAS = (0.3, 1.0, 3.0)


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


def noise_variance(
    x: torch.Tensor,
    t: torch.Tensor,
    y: torch.Tensor,
    alphas: Sequence[float] = RIDGE_ALPHAS,
    gammas: Sequence[float] = RBF_GAMMAS,
    max_units: int = 1000,
) -> float:
    """The outcome noise's variance, estimated from each arm's kernel ridge regression: the mean
    over all units of the squared leave-one-out residuals of each arm's best regression, chosen
    by that same leave-one-out error among a linear kernel and Gaussian kernels
    ``exp(-gamma ||x - x'||^2 / F)``, each at the penalties ``alphas`` times the arm's units
    (intercept unpenalised). The residuals ``r_i / (1 - h_ii)`` are exact, from one
    eigendecomposition per arm and kernel; misfit the best regression leaves counts as noise,
    so the estimate errs high on outcomes none of the kernels fits.

    Args:
        x: covariates ``(N, F)``; t: integer arms ``(N,)``; y: outcomes ``(N,)``.
        alphas: ridge penalties relative to an arm's number of units, each ``> 0``.
        gammas: the Gaussian kernels' inverse widths (per covariate), each ``> 0`` (``()``: the
            linear kernel only, ridge regression).
        max_units: an arm with more units is estimated on ``max_units`` of them, evenly spaced.

    Returns:
        The estimated variance, in ``y``'s squared units (arms of one unit contribute nothing).

    Raises:
        ValueError: arrays of other shapes, no arm with two units, a bad penalty, width or
            ``max_units``.
    """
    if x.ndim != 2 or t.shape != (x.shape[0],) or y.shape != (x.shape[0],):
        raise ValueError(f"noise_variance: expected x (N, F), t (N,), y (N,), got {tuple(x.shape)}, {tuple(t.shape)}, {tuple(y.shape)}")  # fmt: skip
    for name, values, least in (("alphas", alphas, 1), ("gammas", gammas, 0)):
        if len(values) < least or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values):
            raise ValueError(f"noise_variance: {name} must be {'at least one of ' if least else ''}finite numbers > 0, got {values!r}")  # fmt: skip
    if isinstance(max_units, bool) or not isinstance(max_units, int) or max_units < 2:
        raise ValueError(f"noise_variance: max_units must be an int >= 2, got {max_units!r}")
    total, units = 0.0, 0
    for arm in torch.unique(t):
        xa, ya = x[t == arm].double(), y[t == arm].double()
        if len(ya) > max_units:
            keep = torch.linspace(0, len(ya) - 1, max_units).long()
            xa, ya = xa[keep], ya[keep]
        n = len(ya)
        if n < 2:
            continue
        center = torch.eye(n, dtype=xa.dtype) - 1 / n  # kernels of centred features: an unpenalised intercept
        sq = torch.cdist(xa, xa).pow(2) / xa.shape[1]
        kernels = [xa @ xa.T] + [torch.exp(-g * sq) for g in gammas]
        ya, best = ya - ya.mean(), math.inf
        for k in kernels:
            w, v = torch.linalg.eigh(center @ k @ center)
            w, vy, v2 = w.clamp_min(0), v.T @ ya, v.pow(2)
            for a in alphas:
                shrink = w / (w + a * n)
                hat = 1 / n + v2 @ shrink  # the diagonal of the hat matrix
                loo = (ya - v @ (shrink * vy)) / (1 - hat).clamp_min(1e-9)
                best = min(best, float(loo.pow(2).mean()))
        total, units = total + best * n, units + n
    if not units:
        raise ValueError("noise_variance: needs an arm with at least two units")
    return total / units


def _check_prior(where: str, value: float, noise: bool) -> tuple[float, bool]:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    if not ok:
        raise ValueError(f"{where}: arm_prior must be a finite number >= 0, got {value!r}")
    if not isinstance(noise, bool):
        raise ValueError(f"{where}: arm_prior_noise must be a bool, got {noise!r}")
    return float(value), noise


class _ArmPrior(OutcomeLearner):
    """The arm prior of HyperT and HyperTARNet: ``arm_prior * scale / n * arm_spread``, ``scale``
    the :func:`noise_variance` of the training units' standardised outcome with
    ``arm_prior_noise`` (set by :meth:`_fit` as ``prior_scale_``), else 1."""

    arm_prior: float
    arm_prior_noise: bool

    def _generated(self) -> HyperModel:
        raise NotImplementedError

    def _fit(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, step: Callable[[], None] | None) -> int:
        self.prior_scale_ = 1.0
        if self.arm_prior and self.arm_prior_noise:
            train = training_units(t, self.training)[0]
            self.prior_scale_ = noise_variance(x[train], t[train], y[train])
        return super()._fit(x, t, y, step)

    def _penalty(self) -> Callable[[int], torch.Tensor] | None:
        if not self.arm_prior:
            return None
        return lambda n: self.arm_prior * self.prior_scale_ / n * arm_spread(self._generated(), self.arms_)


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


class HyperTLearner(_ArmPrior):
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
        arm_prior_noise: scale the prior's weight by the noise variance ``s2`` of the training
            units' standardised outcome, estimated by :func:`noise_variance` before training
            (``lambda * s2 / n``): the prior's weight relative to the likelihood's grows with
            the noise, as it does in a Gaussian likelihood of variance ``s2``.
    """

    config_keys = ("hidden", "hypernet", "arm_prior", "arm_prior_noise")
    option_types = {"hypernet": HypernetOptions}

    def __init__(
        self,
        hidden: Sequence[int] = (64, 64),
        hypernet: HypernetOptions | None = None,
        training: TrainOptions | None = None,
        arm_prior: float = 0.0,
        arm_prior_noise: bool = False,
    ):
        super().__init__(training)
        self.hidden = check_widths(type(self).__name__, "hidden", hidden)
        self.hypernet = _options(hypernet, "HyperTLearner")
        self.arm_prior, self.arm_prior_noise = _check_prior("HyperTLearner", arm_prior, arm_prior_noise)

    def _build(self, features: int, arms: int) -> nn.Module:
        return arm_hypernetwork(mlp(features, self.hidden, 1), arms, self.hypernet)

    def _outcomes(self, x: torch.Tensor) -> torch.Tensor:
        return _ensemble(self.model_, x, self.arms_)  # type: ignore[arg-type]

    def _generated(self) -> HyperModel:
        return self.model_  # type: ignore[return-value]


class HyperTARNet(_ArmPrior):
    """HyperITE's TARNet: a shared representation; arm ``k``'s head is generated from ``e_k``.

    Args:
        representation, heads: the widths (as :class:`~hyperdnn.baselines.meta_learners.TARNet`).
        hypernet: the :class:`HypernetOptions`.
        training: the :class:`~hyperdnn.methods.treatment_effect.TrainOptions`.
        arm_prior, arm_prior_noise: the prior on the generated heads around their mean (as
            :class:`HyperTLearner`'s).
    """

    config_keys = ("representation", "heads", "hypernet", "arm_prior", "arm_prior_noise")
    option_types = {"hypernet": HypernetOptions}

    def __init__(
        self,
        representation: Sequence[int] = (64,),
        heads: Sequence[int] = (64,),
        hypernet: HypernetOptions | None = None,
        training: TrainOptions | None = None,
        arm_prior: float = 0.0,
        arm_prior_noise: bool = False,
    ):
        super().__init__(training)
        self.representation, self.heads = tuple(representation), tuple(heads)
        self.hypernet = _options(hypernet, "HyperTARNet")
        self.arm_prior, self.arm_prior_noise = _check_prior("HyperTARNet", arm_prior, arm_prior_noise)
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

    def _generated(self) -> HyperModel:
        return self.model_["heads"]  # type: ignore[index]


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
