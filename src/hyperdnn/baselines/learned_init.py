"""A meta-learned initialisation for per-signal fitting: Reptile (Nichol et al., 2018).

Tancik et al. (CVPR 2021, *Learned initializations for optimizing coordinate-based neural
representations*) showed that a coordinate network fitted from a meta-learned initialisation
reaches in a few steps what a random initialisation needs hundreds for. :class:`Reptile`
learns such an initialisation ``theta0`` with the first-order Reptile rule: on a batch of
signals, fit one copy per signal for ``inner_steps`` Adam steps from ``theta0``
(:class:`~hyperdnn.baselines.inr_fitting.INRFitter`: one per-sample pass per step, all signals
at once), then move ``theta0`` towards the mean of the fitted weights, taking
``theta0 - mean(phi)`` as the gradient of an outer Adam step. At test time the signals are
fitted from ``theta0`` by the same fitter.

Example::

    >>> import torch
    >>> from hyperdnn import Target
    >>> from hyperdnn.baselines.learned_init import Reptile
    >>> from hyperdnn.methods.inr import coordinate_grid
    >>> from hyperdnn.siren import siren
    >>> _ = torch.manual_seed(0)
    >>> target = Target(siren(2, (16,), 1))
    >>> reptile = Reptile(target, target.default_weights(), inner_steps=3, inner_lr=1e-3, outer_lr=1e-3)
    >>> values = torch.rand(4, 64, 1)                     # four 8x8 signals
    >>> mse = reptile.step(coordinate_grid(8, 8), values)
    >>> reptile.theta0["0.weight"].shape
    torch.Size([16, 2])
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from hyperdnn.baselines.inr_fitting import INRFitter
from hyperdnn.target import Target

__all__ = ["Reptile"]


class Reptile:
    """Meta-learns the initialisation ``theta0`` of per-signal fitting (first-order Reptile).

    Args:
        target: the coordinate network's :class:`~hyperdnn.target.Target` (its spec names
            what is fitted and meta-learned).
        init: name -> ``(*shape)``: the starting ``theta0`` (e.g. ``target.default_weights()``);
            copied.
        inner_steps: Adam steps per signal in a meta step (>= 1).
        inner_lr: the inner Adam's learning rate (use the test-time fitting's).
        outer_lr: the outer Adam's learning rate on ``theta0``.

    Attributes:
        theta0: name -> tensor, the learned initialisation (leaf tensors).
        optimizer: the outer ``torch.optim.Adam`` over ``theta0`` (save and load its state).

    Raises:
        TypeError, ValueError: ``init`` that does not fit the spec or is batched, a step count
            that is not an int >= 1, a learning rate that is not > 0.
    """

    def __init__(
        self, target: Target, init: Mapping[str, torch.Tensor], inner_steps: int, inner_lr: float, outer_lr: float
    ):
        if not isinstance(target, Target):
            raise TypeError(f"Reptile: target must be a Target, got {type(target).__name__}")
        if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or inner_steps < 1:
            raise ValueError(f"Reptile: inner_steps must be an int >= 1, got {inner_steps!r}")
        bad = {k: v for k, v in (("inner_lr", inner_lr), ("outer_lr", outer_lr)) if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0}  # fmt: skip
        if bad:
            raise ValueError(f"Reptile: learning rates must be numbers > 0, got {bad}")
        target.spec.check(init, where="Reptile init", like=dict(target.module.named_parameters()))
        if len(target.spec.batch_shape(init)):
            raise ValueError(f"Reptile: init must be unbatched, got batch {tuple(target.spec.batch_shape(init))}")
        self.target, self.inner_steps, self.inner_lr = target, inner_steps, float(inner_lr)
        self.theta0 = {n: init[n].detach().clone().requires_grad_(True) for n in target.spec.names}
        self.optimizer = torch.optim.Adam(list(self.theta0.values()), lr=float(outer_lr))

    def initialisation(self) -> dict[str, torch.Tensor]:
        """``theta0`` now, detached copies (what test-time fitting starts from)."""
        return {n: t.detach().clone() for n, t in self.theta0.items()}

    def step(self, coords: torch.Tensor, values: torch.Tensor) -> float:
        """One meta step on a batch of signals.

        Args:
            coords: ``(P, D)`` shared coordinates or ``(B, P, D)``.
            values: ``(B, P, C)`` the signals.

        Returns:
            The signals' mean squared error before their last inner step (how well
            ``inner_steps`` steps fit them from the current ``theta0``).
        """
        fitter = INRFitter(self.target, self.initialisation(), coords, values, self.inner_lr)
        for _ in range(self.inner_steps):
            mse = fitter.step()
        fitted = fitter.detached()
        self.optimizer.zero_grad(set_to_none=True)
        for n, t in self.theta0.items():
            t.grad = t.detach() - fitted[n].mean(0)
        self.optimizer.step()
        return float(mse.mean())
