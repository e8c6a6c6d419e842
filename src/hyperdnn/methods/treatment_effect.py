"""Treatment-effect estimators in the style of EconML: ``fit(X, T, Y).effect(X)``.

A *meta-learner* estimates the individual effect ``tau(x) = E[Y(1) - Y(0) | x]`` from
observational data ``(X, T, Y)``: covariates, the arm each unit received and its outcome. This
module holds what every neural estimator of hyperdnn shares; the learners themselves are
:mod:`hyperdnn.methods.hyperite` (the hypernetwork learners) and
:mod:`hyperdnn.baselines.meta_learners` (their plain PyTorch counterparts).

* :class:`TrainOptions` - how a network is trained: Adam, full batch or minibatches, a
  validation share of each arm for early stopping on the factual loss, the best state kept.
* :class:`TreatmentEffectEstimator` - the public surface: :meth:`~TreatmentEffectEstimator.fit`
  (checks the data, standardises covariates and outcome, trains under the estimator's own seed
  without touching the caller's random state), :meth:`~TreatmentEffectEstimator.effect`,
  :meth:`~TreatmentEffectEstimator.ate`, :meth:`~TreatmentEffectEstimator.save` and
  :meth:`TreatmentEffectEstimator.load`.
* :class:`OutcomeLearner` - an estimator through potential-outcome models ``mu_k(x)``, one
  output per arm (S-, T-learner, TARNet and their hypernetwork versions):
  :meth:`~OutcomeLearner.predict_outcomes`.
* :func:`check_treatment_data` - the checks :meth:`fit` runs: 2-D finite covariates, a binary
  or categorical treatment (integer arms ``0 .. K-1``, each present), arrays of one length.
* :func:`train_network` - the training loop every learner uses; :func:`with_arms` (covariates
  with each arm one-hot, the S-learners' input) and :func:`representation` (TARNet's shared
  layers), the pieces the plain and the hypernetwork learners share.

Treatments are integer arms ``0 .. K-1`` (``K >= 2``; ``bool`` is arms 0 and 1): binary or
categorical. ``effect(X, T0, T1)`` is the effect of moving from arm ``T0`` to arm ``T1``.

Example::

    >>> import numpy as np
    >>> from hyperdnn.baselines.meta_learners import TLearner
    >>> from hyperdnn.methods.treatment_effect import TrainOptions
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 3)); T = rng.integers(0, 2, 400)
    >>> Y = X[:, 0] + 2.0 * T + 0.1 * rng.normal(size=400)
    >>> est = TLearner(hidden=(16,), training=TrainOptions(max_epochs=300, lr=1e-2)).fit(X, T, Y)
    >>> abs(est.ate(X) - 2.0) < 0.2
    True
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn._checks import check_widths
from hyperdnn.data.causal import split_units
from hyperdnn.networks import mlp
from hyperdnn.optim import adam

__all__ = [
    "TrainOptions",
    "TreatmentEffectEstimator",
    "OutcomeLearner",
    "DoublyRobustLearner",
    "check_treatment_data",
    "check_covariates",
    "train_network",
    "training_units",
    "with_arms",
    "representation",
    "ESTIMATORS",
]

#: every concrete estimator by class name, for :meth:`TreatmentEffectEstimator.load`
ESTIMATORS: dict[str, type[TreatmentEffectEstimator]] = {}

_FORMAT = "hyperdnn.treatment_effect/1"


@dataclass(frozen=True)
class TrainOptions:
    """How a learner trains its networks (every neural learner of a comparison takes the same).

    Args:
        lr: Adam's learning rate.
        weight_decay: Adam's (L2) weight decay.
        max_epochs: the most passes over the training units.
        batch_size: units per step (``0``: the whole training part, one step per epoch).
        val_fraction: the share of each arm held out for early stopping, in ``[0, 1)``
            (``0``: no early stopping, ``max_epochs`` epochs).
        patience: epochs without a better validation loss before training stops; the state
            with the best validation loss is kept.
        seed: the seed of the initialisation, the validation split, the batch order and
            dropout (the caller's random state is left as it was).

    Raises:
        ValueError: a value out of its range (every one named).
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    max_epochs: int = 1000
    batch_size: int = 0
    val_fraction: float = 0.2
    patience: int = 30
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "lr": (self.lr, lambda v: v > 0, "> 0"),
            "weight_decay": (self.weight_decay, lambda v: v >= 0, ">= 0"),
            "max_epochs": (self.max_epochs, lambda v: v >= 1, ">= 1"),
            "batch_size": (self.batch_size, lambda v: v >= 0, ">= 0"),
            "val_fraction": (self.val_fraction, lambda v: 0 <= v < 1, "in [0, 1)"),
            "patience": (self.patience, lambda v: v >= 1, ">= 1"),
            "seed": (self.seed, lambda v: v >= 0, ">= 0"),
        }
        ints = {"max_epochs", "batch_size", "patience", "seed"}
        bad = []
        for name, (value, ok, text) in checks.items():
            kind = int if name in ints else (int, float)
            if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) or not ok(value):
                bad.append(f"{name} must be {'an int' if name in ints else 'a number'} {text}, got {value!r}")
        if bad:
            raise ValueError("TrainOptions: " + "; ".join(bad))


def _as_array(value: Any, name: str, where: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as e:  # ragged lists and the like
        raise TypeError(f"{where}: {name} must be array-like, got {type(value).__name__} ({e})") from None


def _check_finite(a: np.ndarray, name: str, where: str) -> None:
    finite = np.isfinite(a)
    if not finite.all():
        rows = np.unique(np.argwhere(~finite)[:, 0])
        raise ValueError(
            f"{where}: {name} has {int((~finite).sum())} NaN or infinite values (rows {rows[:5].tolist()}"
            f"{' ...' if len(rows) > 5 else ''}); impute or drop them first"
        )


def check_covariates(X: Any, where: str, features: int | None = None) -> np.ndarray:
    """``X`` as float64 ``(N, F)``, checked: 2-D, numeric, finite, at least one row, and
    ``F == features`` when given.

    Raises:
        TypeError: ``X`` is not numeric.
        ValueError: another shape, no rows, NaN or infinite values (their rows named), or
            another number of covariates than the estimator was fitted on.
    """
    x = _as_array(X, "X", where)
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise TypeError(f"{where}: X must hold numbers, got dtype {x.dtype}")
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{where}: X must be (N, F) with N, F >= 1, got shape {x.shape}")
    if features is not None and x.shape[1] != features:
        raise ValueError(f"{where}: X has {x.shape[1]} covariates, the estimator was fitted on {features}")
    x = x.astype(np.float64)
    _check_finite(x, "X", where)
    return x


def check_treatment_data(X: Any, T: Any, Y: Any, where: str, min_per_arm: int = 2) -> tuple[np.ndarray, ...]:
    """Check training data and return it as ``x`` float64 ``(N, F)``, ``t`` int64 ``(N,)``,
    ``y`` float64 ``(N,)``.

    Args:
        X: covariates ``(N, F)``.
        T: the arm of each unit ``(N,)`` (or ``(N, 1)``): integers ``0 .. K-1`` (``K >= 2``)
            or booleans; a float array is accepted when every value is a whole number.
        Y: outcomes ``(N,)`` (or ``(N, 1)``).
        where: the caller, for messages (``"HyperTLearner.fit"``).
        min_per_arm: the fewest units an arm may have.

    Raises:
        TypeError: non-numeric arrays (a treatment of strings: encode the labels as arms).
        ValueError: arrays of different lengths (every length named), NaN or infinite values,
            a treatment that is not binary or categorical (continuous values, negative arms,
            an arm ``k < K`` with no unit, a single arm) or an arm with fewer than
            ``min_per_arm`` units.
    """
    x = check_covariates(X, where)
    t, y = _as_array(T, "T", where), _as_array(Y, "Y", where)
    lengths = {"X": x.shape[0], "T": t.shape[0] if t.ndim else 0, "Y": y.shape[0] if y.ndim else 0}
    for name, a in (("T", t), ("Y", y)):
        if not (a.ndim == 1 or (a.ndim == 2 and a.shape[1] == 1)):
            raise ValueError(f"{where}: {name} must be (N,) or (N, 1), got shape {a.shape}")
    if len(set(lengths.values())) > 1:
        raise ValueError(
            f"{where}: X, T and Y must have one length, got {', '.join(f'{k} {v}' for k, v in lengths.items())}"
        )
    t, y = t.reshape(-1), y.reshape(-1)
    if y.dtype == bool or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise TypeError(f"{where}: Y must hold numbers, got dtype {y.dtype}")
    y = y.astype(np.float64)
    _check_finite(y, "Y", where)
    if not (t.dtype == bool or np.issubdtype(t.dtype, np.integer) or np.issubdtype(t.dtype, np.floating)):
        raise TypeError(
            f"{where}: T must hold integer arms 0 .. K-1 (binary or categorical), got dtype {t.dtype}; "
            "encode the labels as arms first"
        )
    if np.issubdtype(t.dtype, np.floating):
        _check_finite(t, "T", where)
        fractional = t[t != np.round(t)]
        if len(fractional):
            raise ValueError(
                f"{where}: T must be binary or categorical (integer arms 0 .. K-1), got non-integer values such as "
                f"{fractional[:3].tolist()}; a continuous treatment needs another estimator"
            )
    t = t.astype(np.int64)
    arms, counts = np.unique(t, return_counts=True)
    if arms[0] < 0 or len(arms) < 2 or arms[-1] != len(arms) - 1:
        raise ValueError(
            f"{where}: T must hold every arm 0 .. K-1 with K >= 2 (binary or categorical), got arms {arms[:10].tolist()}"
        )
    few = {int(a): int(c) for a, c in zip(arms, counts) if c < min_per_arm}
    if few:
        raise ValueError(f"{where}: every arm needs at least {min_per_arm} units, got {few} (arm: units)")
    return x, t, y


def with_arms(x: torch.Tensor, arms: int) -> torch.Tensor:
    """Every row of ``x (N, F)`` once per arm, with the arm one-hot: ``(K * N, F + K)``, arm
    ``k``'s rows at ``k * N .. (k + 1) * N - 1``."""
    n = x.shape[0]
    onehot = torch.eye(arms, dtype=x.dtype, device=x.device).repeat_interleave(n, 0)
    return torch.cat([x.repeat(arms, 1), onehot], 1)


def representation(features: int, widths: Sequence[int]) -> nn.Sequential:
    """TARNet's shared representation: ``Linear -> ReLU`` per width, ``(N, F) -> (N, widths[-1])``."""
    return nn.Sequential(mlp(features, tuple(widths[:-1]), widths[-1]), nn.ReLU())


def training_units(t: torch.Tensor, options: TrainOptions) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The units :func:`train_network` trains and validates on: ``options.val_fraction`` of
    each arm drawn with ``options.seed`` for validation, the rest for training; every unit
    trains (and the validation is ``None``) when the fraction is 0.

    Args:
        t: the arm of every unit ``(N,)``.
        options: the :class:`TrainOptions`.

    Returns:
        ``(train, val)``: int64 unit indices.
    """
    if options.val_fraction > 0:
        train, val = split_units(t.numpy(), options.val_fraction, options.seed)
        return torch.as_tensor(train), torch.as_tensor(val)
    return torch.arange(t.shape[0]), None


def train_network(
    module: nn.Module,
    loss: Callable[[torch.Tensor], torch.Tensor],
    t: torch.Tensor,
    options: TrainOptions,
    step: Callable[[], None] | None = None,
    penalty: Callable[[int], torch.Tensor] | None = None,
) -> int:
    """Train ``module`` on ``loss`` with Adam, stopping early on a validation share of each arm.

    Args:
        module: the network(s); every parameter trains.
        loss: ``loss(index) -> scalar``: the mean loss over the units ``index`` (int64).
        t: the arm of every unit ``(N,)`` (the validation share is drawn per arm).
        options: the :class:`TrainOptions`; its seed draws the split and the batch order
            (initialisation and dropout come from the global generator, seeded by the caller).
        step: called after every optimizer step (a progress bar's tick).
        penalty: ``penalty(n) -> scalar``, added to the loss of every training step (not to
            the validation loss), ``n`` the number of training units (a prior's weight in a
            loss averaged over the units is ``1 / n`` of its weight in the summed loss).

    Returns:
        The number of epochs trained. ``module`` ends in eval mode with the weights of the
        epoch with the lowest validation loss (the last epoch's without validation).
    """
    train_idx, val_idx = training_units(t, options)
    batch = options.batch_size or len(train_idx)
    order = torch.Generator().manual_seed(options.seed)
    opt = adam(module.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    best, best_state, since, epochs = math.inf, None, 0, 0
    while epochs < options.max_epochs:
        epochs += 1
        module.train()
        idx = train_idx if batch >= len(train_idx) else train_idx[torch.randperm(len(train_idx), generator=order)]
        for part in idx.split(batch):
            value = loss(part)
            if penalty is not None:
                value = value + penalty(len(train_idx))
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            if step is not None:
                step()
        if val_idx is None:
            continue
        module.eval()
        with torch.no_grad():
            v = float(loss(val_idx))
        if v < best:
            best, best_state, since = v, copy.deepcopy(module.state_dict()), 0
        else:
            since += 1
            if since >= options.patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return epochs


class TreatmentEffectEstimator(ABC):
    """A treatment-effect estimator: ``fit(X, T, Y)``, then ``effect(X, T0, T1)``.

    Subclasses build their networks in :meth:`_build` and train them in :meth:`_fit`, on
    standardised covariates and outcomes; :meth:`_effect` returns effects in standardised
    outcome units. Everything public (checks, scaling, seeding, saving) lives here.

    Args:
        training: the :class:`TrainOptions` (default ``TrainOptions()``).

    Attributes (after :meth:`fit`):
        model_: the trained ``nn.Module`` (eval mode).
        arms_: the number of arms ``K``; features_: the number of covariates ``F``.
        epochs_: epochs trained (summed over every network the learner trains).
    """

    #: the constructor's arguments other than ``training``, saved by :meth:`save`
    config_keys: ClassVar[tuple[str, ...]] = ()
    #: option dataclasses among the constructor's arguments (name -> type), for :meth:`load`
    option_types: ClassVar[dict[str, type]] = {}

    def __init__(self, training: TrainOptions | None = None):
        if training is None:
            training = TrainOptions()
        if not isinstance(training, TrainOptions):
            raise TypeError(f"{type(self).__name__}: training must be a TrainOptions, got {type(training).__name__}")
        self.training = training
        self.model_: nn.Module | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not getattr(cls, "__abstractmethods__", None) and not cls.__name__.startswith("_"):
            ESTIMATORS[cls.__name__] = cls

    # ------------------------------------------------------------------ what a learner says
    @abstractmethod
    def _build(self, features: int, arms: int) -> nn.Module:
        """The untrained networks for ``features`` covariates and ``arms`` arms, one module."""

    @abstractmethod
    def _fit(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, step: Callable[[], None] | None) -> int:
        """Train ``self.model_`` on standardised ``x (N, F)``, arms ``t (N,)``, ``y (N,)``;
        returns the epochs trained."""

    @abstractmethod
    def _effect(self, x: torch.Tensor, t0: int, t1: int) -> torch.Tensor:
        """The effects ``(N,)`` of arm ``t1`` over ``t0``, in standardised outcome units."""

    # ------------------------------------------------------------------ the public surface
    def fit(self, X: Any, T: Any, Y: Any, *, step: Callable[[], None] | None = None) -> TreatmentEffectEstimator:
        """Fit on covariates ``X (N, F)``, arms ``T (N,)`` and outcomes ``Y (N,)``.

        Args:
            X, T, Y: the training data (numpy arrays, tensors or lists); see
                :func:`check_treatment_data` for what is accepted.
            step: called after every optimizer step (a progress bar's tick).

        Returns:
            ``self``, fitted. A failed check leaves the estimator as it was.

        Raises:
            TypeError, ValueError: the data fails :func:`check_treatment_data`.
        """
        where = f"{type(self).__name__}.fit"
        x, t, y = check_treatment_data(X, T, Y, where, min_per_arm=self._min_per_arm())
        arms = int(t.max()) + 1
        x_mean, x_std = x.mean(0), x.std(0)
        x_std[x_std == 0] = 1.0
        y_mean, y_std = float(y.mean()), float(y.std()) or 1.0
        xs = torch.as_tensor((x - x_mean) / x_std, dtype=torch.float32)
        ys = torch.as_tensor((y - y_mean) / y_std, dtype=torch.float32)
        before = dict(vars(self))
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.training.seed)
                self.arms_, self.features_ = arms, x.shape[1]
                self.model_ = self._build(x.shape[1], arms)
                self.epochs_ = self._fit(xs, torch.as_tensor(t), ys, step)
        except BaseException:  # an interrupted fit leaves the estimator as it was
            vars(self).clear()
            vars(self).update(before)
            raise
        self.model_.eval()
        self.scaling_ = {"x_mean": x_mean, "x_std": x_std, "y_mean": y_mean, "y_std": y_std}
        return self

    def _min_per_arm(self) -> int:
        share = self.training.val_fraction
        return 2 if share == 0 else 3

    def _check_fitted(self, where: str) -> None:
        if self.model_ is None or not hasattr(self, "scaling_"):
            raise RuntimeError(f"{where}: the estimator is not fitted; call fit(X, T, Y) first")

    def _scaled(self, X: Any, where: str) -> torch.Tensor:
        self._check_fitted(where)
        x = check_covariates(X, where, self.features_)
        s = self.scaling_
        return torch.as_tensor((x - s["x_mean"]) / s["x_std"], dtype=torch.float32)

    def _check_arm(self, value: Any, name: str, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < self.arms_:
            raise ValueError(f"{where}: {name} must be an arm in 0 .. {self.arms_ - 1}, got {value!r}")
        return int(value)

    def effect(self, X: Any, T0: int = 0, T1: int = 1) -> np.ndarray:
        """The estimated effects of arm ``T1`` over arm ``T0`` for each row of ``X``.

        Args:
            X: covariates ``(N, F)``, with the ``F`` of :meth:`fit`.
            T0, T1: the arms compared (default: control 0 and treatment 1).

        Returns:
            float64 ``(N,)``: ``mu_T1(x) - mu_T0(x)`` in the outcome's units.

        Raises:
            RuntimeError: not fitted. ValueError: bad ``X`` or arms.
        """
        where = f"{type(self).__name__}.effect"
        x = self._scaled(X, where)
        t0, t1 = self._check_arm(T0, "T0", where), self._check_arm(T1, "T1", where)
        with torch.no_grad():
            tau = self._effect(x, t0, t1)
        return tau.double().numpy() * self.scaling_["y_std"]

    def ate(self, X: Any, T0: int = 0, T1: int = 1) -> float:
        """The average of :meth:`effect` over the rows of ``X``."""
        return float(self.effect(X, T0, T1).mean())

    def num_parameters(self) -> int:
        """Trainable numbers of the fitted model (a hypernetwork learner counts its hypernetwork)."""
        self._check_fitted(f"{type(self).__name__}.num_parameters")
        return sum(p.numel() for p in self.model_.parameters() if p.requires_grad)  # type: ignore[union-attr]

    # ------------------------------------------------------------------ save and load
    def config(self) -> dict[str, Any]:
        """The constructor's arguments as plain values (tuples as lists, option dataclasses
        such as ``training`` as dicts)."""

        def plain(v: Any) -> Any:
            if is_dataclass(v):
                return {k: plain(w) for k, w in asdict(v).items()}
            return list(v) if isinstance(v, tuple) else v

        return {k: plain(getattr(self, k)) for k in (*self.config_keys, "training")}

    def save(self, path: str | Path) -> Path:
        """Write the fitted estimator to ``path`` (``torch.save`` of tensors and plain values
        only; :meth:`load` reads it with ``weights_only=True``).

        Raises:
            RuntimeError: not fitted.
        """
        self._check_fitted(f"{type(self).__name__}.save")
        s = self.scaling_
        record = {
            "format": _FORMAT,
            "class": type(self).__name__,
            "config": self.config(),
            "arms": self.arms_,
            "features": self.features_,
            "epochs": self.epochs_,
            "x_mean": torch.as_tensor(s["x_mean"]),
            "x_std": torch.as_tensor(s["x_std"]),
            "y_mean": s["y_mean"],
            "y_std": s["y_std"],
            "state": self.model_.state_dict(),  # type: ignore[union-attr]
        }
        path = Path(path)
        torch.save(record, path)
        return path

    @staticmethod
    def load(path: str | Path) -> TreatmentEffectEstimator:
        """Read an estimator written by :meth:`save`: the same class, config and weights, ready
        for :meth:`effect`.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a saved estimator, an unknown class, or weights that do not fit
                the config (naming the mismatch).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no saved estimator {str(path)!r}")
        try:
            record = torch.load(path, weights_only=True)
        except Exception as e:
            raise ValueError(f"{str(path)!r} is not a saved treatment-effect estimator ({e})") from None
        if not isinstance(record, Mapping) or record.get("format") != _FORMAT:
            raise ValueError(f"{str(path)!r} is not a saved treatment-effect estimator (format {_FORMAT})")
        cls = ESTIMATORS.get(record["class"])
        if cls is None:
            raise ValueError(f"{str(path)!r} holds a {record['class']!r}; known estimators: {sorted(ESTIMATORS)}")
        try:
            est = cls(**_from_plain(cls, record["config"]))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{str(path)!r}: the saved config does not fit {record['class']}: {e}") from None
        with torch.random.fork_rng(devices=[]):
            model = est._build(int(record["features"]), int(record["arms"]))
        try:
            model.load_state_dict(record["state"])
        except RuntimeError as e:
            raise ValueError(f"{str(path)!r}: the saved weights do not fit {record['class']}: {e}") from None
        model.eval()
        est.model_, est.arms_, est.features_, est.epochs_ = model, int(record["arms"]), int(record["features"]), int(record["epochs"])  # fmt: skip
        est.scaling_ = {
            "x_mean": record["x_mean"].numpy(),
            "x_std": record["x_std"].numpy(),
            "y_mean": float(record["y_mean"]),
            "y_std": float(record["y_std"]),
        }
        return est

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.config_keys)
        return f"{type(self).__name__}({args})"


def _from_plain(cls: type, config: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments from :meth:`TreatmentEffectEstimator.config`'s plain values: the
    option dataclasses named in ``cls.option_types`` (and ``training``) rebuilt, lists as tuples."""
    types = {"training": TrainOptions, **cls.option_types}

    def tuples(v: Any) -> Any:
        return tuple(v) if isinstance(v, list) else v

    out = {}
    for k, v in config.items():
        if k in types and isinstance(v, Mapping):
            v = types[k](**{n: tuples(w) for n, w in v.items()})
        out[k] = tuples(v)
    return out


class OutcomeLearner(TreatmentEffectEstimator):
    """An estimator through outcome models: :meth:`_outcomes` predicts every arm's outcome, the
    network trains on the factual loss ``mean_i (mu_{t_i}(x_i) - y_i)^2``, and the effect is
    ``mu_T1(x) - mu_T0(x)``."""

    @abstractmethod
    def _outcomes(self, x: torch.Tensor) -> torch.Tensor:
        """Every arm's predicted (standardised) outcome for ``x (N, F)``: ``(K, N)``."""

    def _fit(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, step: Callable[[], None] | None) -> int:
        def loss(idx: torch.Tensor) -> torch.Tensor:
            mu = self._outcomes(x[idx])  # (K, n)
            return (mu.gather(0, t[idx].unsqueeze(0)).squeeze(0) - y[idx]).pow(2).mean()

        return train_network(self.model_, loss, t, self.training, step, self._penalty())  # type: ignore[arg-type]

    def _penalty(self) -> Callable[[int], torch.Tensor] | None:
        """A prior's term for :func:`train_network` (``penalty(n)``), or ``None`` (the default)."""
        return None

    def _effect(self, x: torch.Tensor, t0: int, t1: int) -> torch.Tensor:
        mu = self._outcomes(x)
        return mu[t1] - mu[t0]

    def predict_outcomes(self, X: Any) -> np.ndarray:
        """Every arm's expected outcome for each row of ``X (N, F)``: float64 ``(N, K)``."""
        x = self._scaled(X, f"{type(self).__name__}.predict_outcomes")
        with torch.no_grad():
            mu = self._outcomes(x).T.double().numpy()
        return self.scaling_["y_mean"] + self.scaling_["y_std"] * mu


class DoublyRobustLearner(TreatmentEffectEstimator):
    """The DR-learner (Kennedy, 2020) with neural nuisance models.

    First stage, cross-fitted: on all folds but one, a nuisance module predicts ``2K`` outputs
    per unit (:meth:`_nuisance_outputs`): ``K`` outcomes ``mu_k`` and ``K`` propensity logits (a
    softmax over them is ``e_k(x)``), trained on the factual squared error plus the
    cross-entropy of the arm; on the held-out fold it predicts. Second stage: a plain MLP
    ``g(x)`` with ``K - 1`` outputs regresses the pseudo-outcomes
    ``mu_k - mu_0 + 1[t=k] (y - mu_k) / e_k - 1[t=0] (y - mu_0) / e_0`` (propensities clipped to
    ``[clip, 1 - clip]``); the effect of ``T1`` over ``T0`` is ``g_T1 - g_T0`` (``g_0 = 0``).

    Args:
        hidden: the hidden widths of the first-stage networks and of the second stage's MLP.
        folds: cross-fitting folds (``1``: fit and predict on every unit).
        clip: the propensity clip, in ``[0, 0.5)``.
        training: the :class:`TrainOptions` (both stages).
    """

    config_keys = ("hidden", "folds", "clip")

    def __init__(
        self,
        hidden: Sequence[int] = (64, 64),
        folds: int = 2,
        clip: float = 0.05,
        training: TrainOptions | None = None,
    ):
        super().__init__(training)
        self.hidden = check_widths(type(self).__name__, "hidden", hidden)
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
            raise ValueError(f"{type(self).__name__}: folds must be an int >= 1, got {folds!r}")
        if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not 0.0 <= clip < 0.5:
            raise ValueError(f"{type(self).__name__}: clip must be a number in [0, 0.5), got {clip!r}")
        self.folds, self.clip = folds, float(clip)

    @abstractmethod
    def _nuisance(self, features: int, arms: int) -> nn.Module:
        """A fresh first-stage module (one per fold)."""

    @abstractmethod
    def _nuisance_outputs(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The first stage's ``(2K, N)``: ``K`` outcomes, then ``K`` propensity logits."""

    def _min_per_arm(self) -> int:
        return max(self.folds * 3, super()._min_per_arm())

    def num_parameters(self) -> int:
        """Trainable numbers of one first-stage module (each fold trains one) plus the second
        stage's MLP."""
        second = super().num_parameters()
        with torch.random.fork_rng(devices=[]):
            first = self._nuisance(self.features_, self.arms_)
        return second + sum(p.numel() for p in first.parameters() if p.requires_grad)

    def _build(self, features: int, arms: int) -> nn.Module:
        return mlp(features, self.hidden, arms - 1)

    def _first_stage(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, step: Callable[[], None] | None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Cross-fitted outcomes ``mu (K, N)``, clipped propensities ``e (K, N)``, epochs trained."""
        K, n = self.arms_, x.shape[0]
        folds = np.zeros(n, dtype=np.int64)
        rng = np.random.default_rng(self.training.seed)
        for arm in range(K):
            units = rng.permutation(np.flatnonzero(t.numpy() == arm))
            folds[units] = np.arange(len(units)) % self.folds
        mu, e, epochs = torch.empty(K, n), torch.empty(K, n), 0
        for fold in range(self.folds):
            held = torch.as_tensor(np.flatnonzero(folds == fold))
            fit = torch.as_tensor(np.flatnonzero(folds != fold)) if self.folds > 1 else held
            net = self._nuisance(x.shape[1], K)
            xf, tf, yf = x[fit], t[fit], y[fit]

            def loss(idx: torch.Tensor, xf=xf, tf=tf, yf=yf, net=net) -> torch.Tensor:
                out = self._nuisance_outputs(net, xf[idx])
                factual = (out[:K].gather(0, tf[idx].unsqueeze(0)).squeeze(0) - yf[idx]).pow(2).mean()
                return factual + F.cross_entropy(out[K:].T, tf[idx])

            epochs += train_network(net, loss, tf, self.training, step)
            with torch.no_grad():
                out = self._nuisance_outputs(net, x[held])
            mu[:, held], e[:, held] = out[:K], out[K:].softmax(0)
        return mu, e.clamp(self.clip, 1 - self.clip), epochs

    def _fit(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, step: Callable[[], None] | None) -> int:
        mu, e, epochs = self._first_stage(x, t, y, step)
        corrected = mu + F.one_hot(t, self.arms_).T.float() * (y - mu) / e  # (K, N): each arm's DR outcome
        pseudo = (corrected[1:] - corrected[:1]).T  # (N, K - 1)

        def loss(idx: torch.Tensor) -> torch.Tensor:
            return (self.model_(x[idx]) - pseudo[idx]).pow(2).mean()  # type: ignore[misc]

        return epochs + train_network(self.model_, loss, t, self.training, step)  # type: ignore[arg-type]

    def _effect(self, x: torch.Tensor, t0: int, t1: int) -> torch.Tensor:
        g = torch.cat([torch.zeros(x.shape[0], 1), self.model_(x)], 1)  # type: ignore[misc]
        return g[:, t1] - g[:, t0]
