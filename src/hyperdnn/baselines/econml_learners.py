"""EconML's meta-learners, the estimators treatment-effect users already trust, behind hyperdnn's
``fit(X, T, Y).effect(X)``.

:class:`EconMLLearner` wraps one of EconML's learners (Künzel et al., 2019; Kennedy, 2020) with
scikit-learn nuisance models, checks the data as every hyperdnn estimator does
(:func:`~hyperdnn.methods.treatment_effect.check_treatment_data`) and calls EconML's
``fit(Y, T, X=X)`` and ``effect(X, T0=, T1=)``:

============  ===================================================================================
name          EconML learner and its models
============  ===================================================================================
``s``         ``SLearner``: one ``GradientBoostingRegressor`` on ``[x, t]``
``t``         ``TLearner``: a ``GradientBoostingRegressor`` per arm
``x``         ``XLearner``: ``GradientBoostingRegressor`` outcome and effect models, EconML's
              default propensity model (logistic regression)
``dr``        ``DRLearner``: ``GradientBoostingRegressor`` outcome and final models, EconML's
              default propensity model (cross-validated logistic regression, clipped at 0.05),
              2-fold cross-fitting
``linear_t``  ``TLearner`` with a ``LinearRegression`` per arm
============  ===================================================================================

Gradient boosting is scikit-learn's default (100 trees of depth 3, learning rate 0.1), seeded.
Needs the ``causal`` extra (``pip install 'hyperdnn[causal]'``: EconML and scikit-learn).

Example::

    >>> import numpy as np
    >>> from hyperdnn.baselines.econml_learners import EconMLLearner
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 3)); T = rng.integers(0, 2, 300); Y = X[:, 0] + 2.0 * T
    >>> est = EconMLLearner("linear_t").fit(X, T, Y)
    >>> round(est.ate(X), 3), est.num_parameters()
    (2.0, 8)
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from hyperdnn.extras import import_optional
from hyperdnn.methods.treatment_effect import check_covariates, check_treatment_data

__all__ = ["ECONML_LEARNERS", "EconMLLearner"]

#: the learners :class:`EconMLLearner` builds, with what each one is
ECONML_LEARNERS = {
    "s": "EconML SLearner (gradient boosting)",
    "t": "EconML TLearner (gradient boosting)",
    "x": "EconML XLearner (gradient boosting, logistic propensity)",
    "dr": "EconML DRLearner (gradient boosting, logistic propensity, 2 folds)",
    "linear_t": "EconML TLearner (linear regression)",
}


class EconMLLearner:
    """One of EconML's meta-learners (:data:`ECONML_LEARNERS`) as a hyperdnn estimator.

    Args:
        name: ``"s"``, ``"t"``, ``"x"``, ``"dr"`` or ``"linear_t"``.
        seed: the ``random_state`` of every model and of the cross-fitting.

    Raises:
        ValueError: an unknown name. ImportError: EconML is not installed (naming the extra).
    """

    def __init__(self, name: str, seed: int = 0):
        if name not in ECONML_LEARNERS:
            raise ValueError(f"EconMLLearner: name must be one of {list(ECONML_LEARNERS)}, got {name!r}")
        self.name, self.seed = name, seed
        self.learner_: Any = None

    def _make(self) -> Any:
        meta = import_optional("econml.metalearners", "causal", f"EconMLLearner({self.name!r})")
        dr = import_optional("econml.dr", "causal", f"EconMLLearner({self.name!r})")
        ensemble = import_optional("sklearn.ensemble", "causal", f"EconMLLearner({self.name!r})")
        linear = import_optional("sklearn.linear_model", "causal", f"EconMLLearner({self.name!r})")
        s = self.seed

        def gbr() -> Any:
            return ensemble.GradientBoostingRegressor(random_state=s)

        if self.name == "s":
            return meta.SLearner(overall_model=gbr())
        if self.name == "t":
            return meta.TLearner(models=gbr())
        if self.name == "x":
            return meta.XLearner(models=gbr(), cate_models=gbr())
        if self.name == "dr":
            return dr.DRLearner(model_regression=gbr(), model_final=gbr(), cv=2, min_propensity=0.05, random_state=s)
        return meta.TLearner(models=linear.LinearRegression())

    def fit(self, X: Any, T: Any, Y: Any) -> EconMLLearner:
        """Fit on covariates ``X (N, F)``, arms ``T (N,)`` and outcomes ``Y (N,)`` (checked as
        :func:`~hyperdnn.methods.treatment_effect.check_treatment_data` does); returns ``self``."""
        x, t, y = check_treatment_data(X, T, Y, f"EconMLLearner({self.name!r}).fit")
        learner = self._make()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EconML's notes on its defaults
            learner.fit(y, t, X=x)
        self.learner_, self.arms_, self.features_ = learner, int(t.max()) + 1, x.shape[1]
        return self

    def effect(self, X: Any, T0: int = 0, T1: int = 1) -> np.ndarray:
        """The estimated effects ``(N,)`` of arm ``T1`` over arm ``T0`` for each row of ``X``."""
        where = f"EconMLLearner({self.name!r}).effect"
        if self.learner_ is None:
            raise RuntimeError(f"{where}: the estimator is not fitted; call fit(X, T, Y) first")
        x = check_covariates(X, where, self.features_)
        for arm_name, arm in (("T0", T0), ("T1", T1)):
            if isinstance(arm, bool) or not isinstance(arm, (int, np.integer)) or not 0 <= arm < self.arms_:
                raise ValueError(f"{where}: {arm_name} must be an arm in 0 .. {self.arms_ - 1}, got {arm!r}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(self.learner_.effect(x, T0=int(T0), T1=int(T1)), dtype=np.float64).reshape(-1)

    def ate(self, X: Any, T0: int = 0, T1: int = 1) -> float:
        """The average of :meth:`effect` over the rows of ``X``."""
        return float(self.effect(X, T0, T1).mean())

    def num_parameters(self) -> int | None:
        """Fitted coefficients of the linear T-learner (``K * (F + 1)``); ``None`` for the
        tree ensembles, whose size is not a parameter count."""
        if self.learner_ is None or self.name != "linear_t":
            return None
        return self.arms_ * (self.features_ + 1)
