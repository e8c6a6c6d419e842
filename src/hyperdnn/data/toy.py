"""A 1-D regression toy with a gap in the inputs and input-dependent noise.

Inputs are drawn uniformly from two intervals, ``[low, -gap]`` and ``[gap, high]``, so nothing is
seen in between; targets are

    y = sin(x) + 0.1 x^2 + sigma(x) * e,    sigma(x) = 0.03 + 0.05 |x|,    e ~ N(0, 1)

(heteroscedastic: the noise grows away from the centre). A model with a sense of what it does
not know widens its predictive band inside the gap (epistemic uncertainty) and follows
``sigma(x)`` where the data are dense (aleatoric); Foong et al. (2019, "'In-between'
uncertainty in Bayesian neural networks") show that several approximate posteriors fail
exactly here.

Example::

    >>> from hyperdnn.data.toy import gap_regression
    >>> toy = gap_regression(200, 100, seed=0)
    >>> tuple(toy.x_train.shape), tuple(toy.y_train.shape), toy.gap
    ((200, 1), (200,), 1.5)
    >>> bool(((toy.x_train.abs() >= 1.5) & (toy.x_train.abs() <= 4)).all())  # none in the gap
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["RegressionToy", "gap_regression", "toy_function", "toy_noise_std"]


def toy_function(x: torch.Tensor) -> torch.Tensor:
    """The noiseless target ``sin(x) + 0.1 x^2``."""
    return torch.sin(x) + 0.1 * x.pow(2)


def toy_noise_std(x: torch.Tensor) -> torch.Tensor:
    """The noise's standard deviation at ``x``: ``0.03 + 0.05 |x|``."""
    return 0.03 + 0.05 * x.abs()


@dataclass(frozen=True)
class RegressionToy:
    """The toy's samples and where its gap lies.

    Attributes:
        x_train, x_test: ``(N, 1)`` inputs, none inside ``(-gap, gap)``.
        y_train, y_test: ``(N,)`` noisy targets.
        gap: inputs in ``(-gap, gap)`` are never drawn.
        low, high: the range of the inputs.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    gap: float
    low: float
    high: float

    def grid(self, points: int = 201) -> torch.Tensor:
        """``(points, 1)`` evenly spaced inputs over ``[low, high]`` (to draw and to measure
        the band)."""
        return torch.linspace(self.low, self.high, points).unsqueeze(1)


def _draw(n: int, gap: float, low: float, high: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    left = torch.rand(n, generator=g) < 0.5
    u = torch.rand(n, generator=g)
    x = torch.where(left, low + u * (-gap - low), gap + u * (high - gap)).unsqueeze(1)
    y = toy_function(x[:, 0]) + toy_noise_std(x[:, 0]) * torch.randn(n, generator=g)
    return x, y


def gap_regression(
    n_train: int, n_test: int, seed: int = 0, gap: float = 1.5, low: float = -4.0, high: float = 4.0
) -> RegressionToy:
    """Draw the toy: ``n_train`` training and ``n_test`` test points, half on each side of the gap.

    Args:
        n_train, n_test: sample sizes, ``>= 1``.
        seed: the draw.
        gap: half the width of the empty middle, ``0 <= gap < min(-low, high)``.
        low, high: the range of the inputs, ``low < 0 < high``.

    Raises:
        ValueError: a size below 1 or a range that leaves no data.
    """
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"gap_regression: {name} must be an int >= 1, got {n!r}")
    if not (low < 0 < high and 0 <= gap < min(-low, high)):
        raise ValueError(f"gap_regression: expected low < 0 < high and 0 <= gap < min(-low, high), got low={low}, high={high}, gap={gap}")  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    x_train, y_train = _draw(n_train, gap, low, high, g)
    x_test, y_test = _draw(n_test, gap, low, high, g)
    return RegressionToy(x_train, y_train, x_test, y_test, float(gap), float(low), float(high))
