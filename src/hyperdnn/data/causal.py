"""Treatment-effect data: a sample with its true potential outcomes, benchmarks by name, splits.

Estimating individual treatment effects needs data whose counterfactuals are known, so every
benchmark here is (semi-)synthetic: the outcome surfaces are formulas, the noise is drawn per
replication, and a :class:`CausalSample` carries the observed data ``(x, t, y)`` together with
the expected outcome of each arm, ``mu0`` and ``mu1``, from which the true effect
``tau = mu1 - mu0`` follows.

* :class:`CausalSample` - covariates, binary treatment, observed outcome, true ``mu0``/``mu1``.
* :class:`CausalBenchmark` and :data:`CAUSAL_BENCHMARKS` - the benchmarks by name
  (:func:`get_benchmark`, :func:`list_benchmarks`, :func:`register_benchmark`; installed
  packages add theirs through the entry-point group ``hyperdnn.causal_benchmarks``). Built in:
  ``ihdp`` (:mod:`hyperdnn.data.ihdp`, Hill's response surface B) and ``nw-a`` ... ``nw-d``
  (:mod:`hyperdnn.data.nie_wager`, the four setups of Nie and Wager).
* :func:`split_units` - a train/test split of the units, stratified by arm.

Example::

    >>> from hyperdnn.data.causal import get_benchmark, split_units
    >>> sample = get_benchmark("nw-a").draw(replication=0, n=200)
    >>> sample.x.shape, sample.t.shape, round(float(sample.tau.mean()), 2) == round(sample.ate, 2)
    ((200, 6), (200,), True)
    >>> train, test = split_units(sample.t, test_fraction=0.25, seed=0)
    >>> len(train), len(test)
    (150, 50)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from hyperdnn.extras import check_requires, requirement_message
from hyperdnn.registry import Registry

__all__ = [
    "CausalSample",
    "CausalBenchmark",
    "CAUSAL_BENCHMARKS",
    "register_benchmark",
    "get_benchmark",
    "list_benchmarks",
    "split_units",
]


@dataclass(frozen=True)
class CausalSample:
    """One replication of a treatment-effect benchmark: what is observed and the truth.

    Attributes:
        x: covariates, float64 ``(N, F)``.
        t: the arm each unit received, int64 ``(N,)`` in ``{0, 1}``.
        y: the observed (factual) outcome, float64 ``(N,)``.
        mu0, mu1: the expected outcome of each unit under control and under treatment (noise
            free), float64 ``(N,)``.
        name: what the sample is (``"ihdp, replication 3"``), for messages and reports.

    Raises:
        ValueError: arrays of other lengths or dimensions, a treatment outside ``{0, 1}``, or
            values that are not finite (every offending array named).
    """

    x: np.ndarray
    t: np.ndarray
    y: np.ndarray
    mu0: np.ndarray
    mu1: np.ndarray
    name: str = "sample"

    def __post_init__(self) -> None:
        arrays = {k: np.asarray(getattr(self, k)) for k in ("x", "t", "y", "mu0", "mu1")}
        problems = []
        if arrays["x"].ndim != 2:
            problems.append(f"x must be (N, F), got shape {arrays['x'].shape}")
        n = arrays["x"].shape[0] if arrays["x"].ndim else -1
        for k in ("t", "y", "mu0", "mu1"):
            if arrays[k].shape != (n,):
                problems.append(f"{k} must be ({n},) like x's rows, got shape {arrays[k].shape}")
        if not problems:
            bad = [k for k in ("x", "y", "mu0", "mu1") if not np.isfinite(arrays[k].astype(np.float64)).all()]
            problems += [f"{k} has values that are not finite" for k in bad]
            arms = np.unique(arrays["t"])
            if not np.isin(arms, (0, 1)).all():
                problems.append(f"t must hold arms 0 and 1, got values {arms[:10].tolist()}")
        if problems:
            raise ValueError(f"CausalSample {self.name!r}: " + "; ".join(problems))
        for k, v in arrays.items():
            object.__setattr__(self, k, v.astype(np.int64 if k == "t" else np.float64))

    @property
    def n(self) -> int:
        """The number of units ``N``."""
        return int(self.x.shape[0])

    @property
    def features(self) -> int:
        """The number of covariates ``F``."""
        return int(self.x.shape[1])

    @property
    def tau(self) -> np.ndarray:
        """The true individual effects ``mu1 - mu0``, ``(N,)``."""
        return self.mu1 - self.mu0

    @property
    def ate(self) -> float:
        """The sample's true average effect, the mean of :attr:`tau`."""
        return float(self.tau.mean())

    def take(self, index: np.ndarray) -> CausalSample:
        """The units ``index`` (an int array) as a sample of their own."""
        index = np.asarray(index, dtype=np.int64)
        return CausalSample(self.x[index], self.t[index], self.y[index], self.mu0[index], self.mu1[index], self.name)


@dataclass(frozen=True)
class CausalBenchmark:
    """A named treatment-effect benchmark: a replication (and size) -> a :class:`CausalSample`.

    Args:
        name: what a recipe calls it (``"ihdp"``, ``"nw-a"``).
        summary: one line for help texts.
        sample: ``sample(replication, n) -> CausalSample``; ``n`` is ``None`` for the
            benchmark's own size.
        size: the units of the benchmark's own sample (``747`` for IHDP), or ``None`` for a
            generated benchmark of any size (then ``default_size`` is used for ``n=None``).
        default_size: the size of a generated sample when no ``n`` is given.
        requires: optional modules the sampler imports -> the extra that installs them.

    Raises:
        ValueError, TypeError: a bad name, size or ``requires``.
    """

    name: str
    summary: str
    sample: Callable[[int, int | None], CausalSample]
    size: int | None = None
    default_size: int = 1000
    requires: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not callable(self.sample):
            raise TypeError(f"CausalBenchmark {self.name!r}: sample must be callable, got {type(self.sample).__name__}")
        for field in ("size", "default_size"):
            value = getattr(self, field)
            if value is None and field == "size":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ValueError(f"CausalBenchmark {self.name!r}: {field} must be an int >= 2, got {value!r}")
        where = f"CausalBenchmark {self.name!r}"
        object.__setattr__(self, "requires", MappingProxyType(check_requires(self.requires, where)))

    def problem(self) -> str | None:
        """Why the benchmark cannot be drawn here, in one line (a missing extra), or ``None``."""
        return requirement_message(self.requires)

    def check_size(self, n: int | None) -> None:
        """Refuse a sample size the benchmark cannot give.

        Raises:
            ValueError: ``n`` below 2, or above the units of a fixed-size benchmark (naming both).
        """
        if n is None:
            return
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
            raise ValueError(f"benchmark {self.name!r}: a sample size must be an int >= 2, got {n!r}")
        if self.size is not None and n > self.size:
            raise ValueError(
                f"benchmark {self.name!r} has {self.size} units; a sample of {n} units is larger than the data"
            )

    def draw(self, replication: int, n: int | None = None) -> CausalSample:
        """Replication ``replication`` (an int >= 0), of ``n`` units (``None``: the benchmark's
        own size, or ``default_size``).

        Raises:
            ValueError: a negative replication or a size :meth:`check_size` refuses.
            ImportError: the benchmark's extra is not installed (naming it).
        """
        if isinstance(replication, bool) or not isinstance(replication, (int, np.integer)) or replication < 0:
            raise ValueError(f"benchmark {self.name!r}: replication must be an int >= 0, got {replication!r}")
        self.check_size(n)
        missing = self.problem()
        if missing is not None:
            raise ImportError(f"benchmark {self.name!r} {missing}")
        return self.sample(int(replication), None if n is None else int(n))


def _check_benchmark(value: object) -> None:
    if not isinstance(value, CausalBenchmark):
        raise TypeError(f"a treatment-effect benchmark must be a CausalBenchmark, got {type(value).__name__}")


#: every treatment-effect benchmark by name: the built-in ones are imported on first use,
#: installed packages' through the entry-point group ``hyperdnn.causal_benchmarks``
CAUSAL_BENCHMARKS: Registry[CausalBenchmark] = Registry(
    "treatment-effect benchmark",
    builtin={
        "ihdp": "hyperdnn.data.ihdp",
        "nw-a": "hyperdnn.data.nie_wager",
        "nw-b": "hyperdnn.data.nie_wager",
        "nw-c": "hyperdnn.data.nie_wager",
        "nw-d": "hyperdnn.data.nie_wager",
    },
    entry_point_group="hyperdnn.causal_benchmarks",
    check=_check_benchmark,
)


def register_benchmark(benchmark: CausalBenchmark) -> CausalBenchmark:
    """Register ``benchmark`` under its name (a second one of the same name warns and wins)."""
    return CAUSAL_BENCHMARKS.register(benchmark.name, benchmark)


def get_benchmark(name: str) -> CausalBenchmark:
    """The benchmark called ``name``.

    Raises:
        RegistryError: no benchmark has that name (the message lists close matches).
    """
    return CAUSAL_BENCHMARKS.get(name)


def list_benchmarks(pattern: str | None = None) -> list[str]:
    """Sorted names of every benchmark, optionally only those matching the glob ``pattern``."""
    return CAUSAL_BENCHMARKS.list(pattern)


def split_units(t: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A train/test split of units, stratified by arm (each arm loses the same share).

    Args:
        t: the arm of each unit, ``(N,)``: integer arms ``0 .. K-1`` (binary: ``{0, 1}``;
            categorical: ``K > 2``). Every arm ``0 .. max(1, K-1)`` is split.
        test_fraction: the share of each arm held out, in ``(0, 1)``; each arm keeps at least
            one unit on either side.
        seed: the split's seed (``numpy.random.default_rng``; arm ``k``'s units are permuted
            after arm ``k - 1``'s, so a binary split is the same whatever ``K`` the caller has).

    Returns:
        Sorted int64 indices ``(train, test)``.

    Raises:
        ValueError: ``test_fraction`` outside ``(0, 1)``, or an arm with fewer than two units.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"split_units: test_fraction must be in (0, 1), got {test_fraction!r}")
    t = np.asarray(t)
    rng = np.random.default_rng(seed)
    train, test = [], []
    arms = max(int(t.max()) + 1 if t.size else 0, 2)
    for arm in range(arms):
        units = np.flatnonzero(t == arm)
        if len(units) < 2:
            raise ValueError(f"split_units: arm {arm} has {len(units)} units; a split needs at least 2 per arm")
        k = min(max(int(round(len(units) * test_fraction)), 1), len(units) - 1)
        units = rng.permutation(units)
        test.append(units[:k])
        train.append(units[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
