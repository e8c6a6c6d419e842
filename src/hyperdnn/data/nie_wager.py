"""The four synthetic setups of Nie and Wager (2021, "Quasi-oracle estimation of heterogeneous
treatment effects", Biometrika), the settings of CausalML's ``synthetic_data`` modes 1 to 4.

Each setup fixes a baseline ``b(x)``, a propensity ``e(x)`` and an effect ``tau(x)``; a unit is
treated with probability ``e(x)`` and observed as ``y = b(x) + (t - 0.5) tau(x) + sigma * eps``,
so ``mu0 = b - tau / 2`` and ``mu1 = b + tau / 2``:

=====  ==================  =========================================  ==============================  ==============================
setup  covariates          baseline b(x)                              propensity e(x)                 effect tau(x)
=====  ==================  =========================================  ==============================  ==============================
A      U[0, 1]^p           sin(pi x1 x2) + 2 (x3 - .5)^2 + x4 + .5 x5  sin(pi x1 x2) clipped to         (x1 + x2) / 2
                                                                      [0.1, 0.9]
B      N(0, I_p)           max(0, x1 + x2, x3) + max(0, x4 + x5)      0.5 (a randomised trial)        x1 + log(1 + exp(x2))
C      N(0, I_p)           2 log(1 + exp(x1 + x2 + x3))               1 / (1 + exp(x2 + x3))          1
D      N(0, I_p)           (max(0, x1 + x2 + x3) + max(0, x4 + x5))/2  1 / (1 + exp(-x1) + exp(-x2))   max(0, x1 + x2 + x3)
                                                                                                      - max(0, x4 + x5)
=====  ==================  =========================================  ==============================  ==============================

A has a hard baseline and an easy effect (the arms share most of their surface), B is a
randomised trial, C an easy propensity with a constant effect, D treatment and control arms
that have nothing in common. The formulas are written here from the paper (no CausalML needed);
they register as the benchmarks ``nw-a`` ... ``nw-d`` of :mod:`hyperdnn.data.causal`, with
``p = 6`` covariates and ``sigma = 1``.

Example::

    >>> from hyperdnn.data.nie_wager import nie_wager
    >>> s = nie_wager("C", n=500, seed=0)
    >>> s.x.shape, bool(abs(s.tau - 1.0).max() < 1e-12)   # setup C: a constant effect
    ((500, 6), True)
"""

from __future__ import annotations

import numpy as np

from hyperdnn.data.causal import CausalBenchmark, CausalSample, register_benchmark

__all__ = ["SETUPS", "nie_wager"]

#: the setups, with what each one tests
SETUPS = {
    "A": "difficult baseline, easy effect",
    "B": "randomised trial",
    "C": "easy propensity, constant effect",
    "D": "unrelated treatment and control arms",
}


def _relu(v: np.ndarray) -> np.ndarray:
    return np.maximum(v, 0.0)


def nie_wager(setup: str, n: int, seed: int, p: int = 6, sigma: float = 1.0) -> CausalSample:
    """``n`` units of Nie and Wager's setup ``setup``.

    Args:
        setup: ``"A"``, ``"B"``, ``"C"`` or ``"D"`` (see the module's table).
        n: the number of units, ``>= 2``.
        seed: the seed of covariates, treatment and noise (``numpy.random.default_rng``).
        p: the number of covariates, ``>= 5`` (the surfaces read the first five).
        sigma: the noise's standard deviation, ``>= 0``.

    Returns:
        A :class:`~hyperdnn.data.causal.CausalSample` ``(n, p)`` with the true ``mu0``/``mu1``.

    Raises:
        ValueError: an unknown setup, ``n < 2``, ``p < 5`` or a negative ``sigma``.
    """
    problems = []
    if setup not in SETUPS:
        problems.append(f"setup must be one of {sorted(SETUPS)}, got {setup!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        problems.append(f"n must be an int >= 2, got {n!r}")
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 5:
        problems.append(f"p must be an int >= 5, got {p!r}")
    if not (isinstance(sigma, (int, float)) and np.isfinite(sigma) and sigma >= 0):
        problems.append(f"sigma must be a finite number >= 0, got {sigma!r}")
    if problems:
        raise ValueError("nie_wager: " + "; ".join(problems))
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, p)) if setup == "A" else rng.standard_normal((n, p))
    x1, x2, x3, x4, x5 = x[:, :5].T
    if setup == "A":
        b = np.sin(np.pi * x1 * x2) + 2 * (x3 - 0.5) ** 2 + x4 + 0.5 * x5
        e = np.clip(np.sin(np.pi * x1 * x2), 0.1, 0.9)
        tau = (x1 + x2) / 2
    elif setup == "B":
        b = np.maximum.reduce([np.zeros(n), x1 + x2, x3]) + _relu(x4 + x5)
        e = np.full(n, 0.5)
        tau = x1 + np.log1p(np.exp(x2))
    elif setup == "C":
        b = 2 * np.log1p(np.exp(x1 + x2 + x3))
        e = 1 / (1 + np.exp(x2 + x3))
        tau = np.ones(n)
    else:
        b = (_relu(x1 + x2 + x3) + _relu(x4 + x5)) / 2
        e = 1 / (1 + np.exp(-x1) + np.exp(-x2))
        tau = _relu(x1 + x2 + x3) - _relu(x4 + x5)
    t = (rng.uniform(size=n) < e).astype(np.int64)
    y = b + (t - 0.5) * tau + sigma * rng.standard_normal(n)
    return CausalSample(x, t, y, b - tau / 2, b + tau / 2, f"Nie-Wager {setup}, n={n}, seed {seed}")


def _benchmark(setup: str) -> CausalBenchmark:
    def sample(replication: int, n: int | None) -> CausalSample:
        return nie_wager(setup, 1000 if n is None else n, seed=replication)

    return register_benchmark(
        CausalBenchmark(f"nw-{setup.lower()}", f"Nie-Wager setup {setup}: {SETUPS[setup]} (p=6, sigma=1)", sample)
    )


NW_A, NW_B, NW_C, NW_D = (_benchmark(s) for s in "ABCD")
