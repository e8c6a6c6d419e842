"""IHDP: the Infant Health and Development Program benchmark (Hill, 2011), response surface B.

Hill built a semi-synthetic benchmark from the covariates of a randomised study of premature
infants: the treated children of non-white mothers are removed, which leaves 747 units (139
treated) with 25 covariates (6 continuous, standardised; 19 binary), and the outcomes are
simulated. Response surface B (heterogeneous, non-linear effects)::

    beta_j ~ {0, 0.1, 0.2, 0.3, 0.4} with probabilities (0.6, 0.1, 0.1, 0.1, 0.1)  (one per column,
                                                                                   intercept included)
    mu0 = exp((X + W) beta)          W = 0.5 in every column but the intercept's
    mu1 = X beta - omega             omega sets the average effect on the treated to 4
    y   = mu_t + N(0, 1)

:func:`ihdp_covariates` reads the covariate file ``econml/data/ihdp/sim.csv`` that EconML ships
(the ``causal`` extra), so nothing is downloaded; :func:`ihdp_surface_b` draws replication
``r`` with ``numpy.random.RandomState(r)`` in the order EconML's ``ihdp_surface_B(r)`` draws,
so replication ``r`` is the same sample (``tests/test_causal.py`` checks it). The ``ihdp``
benchmark of :mod:`hyperdnn.data.causal` is this surface.

The 100 and 1000 replications of Shalit et al. (2017), ``ihdp_npci_1-100.train.npz`` and its
test file, hold the same covariates under the NPCI package's simulation; :func:`load_ihdp_npz`
reads one replication of such a file (keys ``x (N, F, R)``, ``t``, ``yf``, ``mu0``, ``mu1``
``(N, R)``).

Example::

    >>> from hyperdnn.data.ihdp import ihdp_surface_b
    >>> s = ihdp_surface_b(0)
    >>> s.n, int(s.t.sum()), s.features
    (747, 139, 25)
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from hyperdnn.data.causal import CausalBenchmark, CausalSample, register_benchmark
from hyperdnn.extras import import_optional

__all__ = ["IHDP_COLUMNS", "IHDP", "ihdp_covariates", "ihdp_surface_b", "load_ihdp_npz"]

#: the covariates of Hill's benchmark, in order (the first six are continuous)
IHDP_COLUMNS = (
    "bw", "b.head", "preterm", "birth.o", "nnhealth", "momage", "sex", "twin", "b.marr", "mom.lths",
    "mom.hs", "mom.scoll", "cig", "first", "booze", "drugs", "work.dur", "prenatal",
    "site1", "site2", "site3", "site4", "site5", "site6", "site7",
)  # fmt: skip
_CONTINUOUS = 6
_UNITS = 747


def _covariate_file() -> Path:
    data = import_optional("econml.data", "causal", "the IHDP covariates")
    return Path(data.__file__).parent / "ihdp" / "sim.csv"


def ihdp_covariates() -> tuple[np.ndarray, np.ndarray]:
    """Hill's 747 units: the treatment ``(747,)`` (139 treated) and the covariates ``(747, 25)``.

    Rows of treated children of non-white mothers are removed; the six continuous covariates
    are standardised (mean 0, standard deviation 1 with ``ddof=0``) and ``first`` is recoded
    from ``{0, 1}`` to ``{1, 2}`` as in EconML.

    Raises:
        ImportError: EconML is not installed (``pip install 'hyperdnn[causal]'``).
    """
    with open(_covariate_file(), newline="") as f:
        rows = list(csv.reader(f))
    header, values = rows[0], np.asarray(rows[1:], dtype=np.float64)
    col = {name: i for i, name in enumerate(header)}
    keep = ~((values[:, col["treat"]] == 1) & (values[:, col["momwhite"]] == 0))
    values = values[keep]
    t = values[:, col["treat"]].astype(np.int64)
    x = values[:, [col[c] for c in IHDP_COLUMNS]]
    cont = x[:, :_CONTINUOUS]
    x[:, :_CONTINUOUS] = (cont - cont.mean(0)) / cont.std(0)
    x[:, IHDP_COLUMNS.index("first")] += 1
    return t, x


def ihdp_surface_b(replication: int, n: int | None = None) -> CausalSample:
    """Replication ``replication`` of response surface B on the 747 IHDP units.

    Args:
        replication: the seed of the simulated outcome surface and noise (an int >= 0).
        n: keep a random subset of ``n`` units (drawn with the replication's seed after the
            outcomes; ``None``: all 747).

    Returns:
        A :class:`~hyperdnn.data.causal.CausalSample` with the 25 covariates (no intercept
        column), the treatment, the noisy outcome and the true ``mu0``/``mu1``.

    Raises:
        ValueError: ``n`` larger than the 747 units.
    """
    if n is not None and n > _UNITS:
        raise ValueError(f"ihdp has {_UNITS} units; a sample of {n} units is larger than the data")
    t, x = ihdp_covariates()
    design = np.hstack([np.ones((len(t), 1)), x])  # the intercept takes part in the surface
    rng = np.random.RandomState(replication)
    beta = rng.choice([0.0, 0.1, 0.2, 0.3, 0.4], size=design.shape[1], replace=True, p=[0.6, 0.1, 0.1, 0.1, 0.1])
    shift = np.full(design.shape[1], 0.5)
    shift[0] = 0.0
    linear, curved = design @ beta, np.exp((design + shift) @ beta)
    omega = np.mean((linear - curved)[t == 1]) - 4.0
    mu0, mu1 = curved, linear - omega
    y = np.where(t == 1, mu1, mu0) + rng.normal(0.0, 1.0, size=len(t))
    sample = CausalSample(x, t, y, mu0, mu1, f"ihdp, replication {replication}")
    if n is None or n == _UNITS:
        return sample
    keep = np.random.default_rng([replication, n]).choice(_UNITS, size=n, replace=False)
    return sample.take(np.sort(keep))


def load_ihdp_npz(path: str | Path, replication: int) -> CausalSample:
    """One replication of an IHDP file of Shalit et al. (``ihdp_npci_1-100.train.npz`` ...).

    Args:
        path: the ``.npz`` file, with ``x (N, F, R)`` and ``t``, ``yf``, ``mu0``, ``mu1`` ``(N, R)``.
        replication: which of the ``R`` replications, ``0 <= replication < R``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a key is missing, the arrays do not fit together (every problem named), or
            the replication is not in the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no IHDP file {str(path)!r}")
    with np.load(path) as data:
        missing = [k for k in ("x", "t", "yf", "mu0", "mu1") if k not in data.files]
        if missing:
            raise ValueError(f"IHDP file {str(path)!r} lacks {missing} (it has {sorted(data.files)})")
        x, t, yf, mu0, mu1 = (np.asarray(data[k]) for k in ("x", "t", "yf", "mu0", "mu1"))
    if x.ndim != 3:
        raise ValueError(f"IHDP file {str(path)!r}: x must be (N, F, R), got shape {x.shape}")
    n, _, reps = x.shape
    bad = {k: v.shape for k, v in (("t", t), ("yf", yf), ("mu0", mu0), ("mu1", mu1)) if v.shape != (n, reps)}
    if bad:
        raise ValueError(f"IHDP file {str(path)!r}: expected t, yf, mu0, mu1 of shape {(n, reps)}, got {bad}")
    if isinstance(replication, bool) or not isinstance(replication, (int, np.integer)) or not 0 <= replication < reps:
        raise ValueError(f"IHDP file {str(path)!r} has replications 0 to {reps - 1}, got {replication!r}")
    r = int(replication)
    name = f"{path.name}, replication {r}"
    # t as stored: CausalSample refuses values outside {0, 1} before it casts (a cast here
    # would turn 0.75 into arm 0 without a word)
    return CausalSample(x[:, :, r], t[:, r], yf[:, r], mu0[:, r], mu1[:, r], name)


#: the ``ihdp`` benchmark: response surface B on EconML's copy of the covariates
IHDP = register_benchmark(
    CausalBenchmark(
        "ihdp",
        "IHDP (Hill 2011), response surface B: 747 units, 139 treated, 25 covariates",
        ihdp_surface_b,
        size=_UNITS,
        requires={"econml": "causal"},
    )
)
