"""Fitting an implicit neural representation per image by gradient descent.

The baseline a hypernetwork that writes an INR in one forward pass is compared with: each image
gets its own coordinate network (a :func:`~hyperdnn.siren.siren`), fitted to the image's pixels
with Adam from an initialisation, a random one (:func:`stacked_inits`) or a meta-learned one
(:mod:`hyperdnn.baselines.learned_init`).

:class:`INRFitter` fits ``B`` images at once: their weights are ``(B, ...)`` tensors and every
step is one per-sample pass of the :class:`~hyperdnn.target.Target` (never a loop over
images). The loss is the sum over images of each image's mean squared error, so each image's
weights receive exactly the gradient they would receive if that image were fitted alone, and
Adam (elementwise) takes the same steps as it would for each image alone.

Example::

    >>> import torch
    >>> from hyperdnn import Target
    >>> from hyperdnn.baselines.inr_fitting import INRFitter, stacked_inits
    >>> from hyperdnn.methods.inr import coordinate_grid, image_values
    >>> from hyperdnn.siren import siren
    >>> _ = torch.manual_seed(0)
    >>> images = torch.rand(3, 64)                                  # three 8x8 grey images
    >>> make = lambda: siren(2, (16,), 1)
    >>> fitter = INRFitter(Target(make()), stacked_inits(make, 3), coordinate_grid(8, 8), image_values(images, (1, 8, 8)), lr=1e-3)
    >>> before = fitter.psnr()
    >>> for _ in range(50):
    ...     _ = fitter.step()
    >>> bool((fitter.psnr() > before).all())
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from hyperdnn.metrics.reconstruction import psnr
from hyperdnn.target import Target

__all__ = ["INRFitter", "stacked_inits"]


def stacked_inits(make: Callable[[], nn.Module], count: int) -> dict[str, torch.Tensor]:
    """The initial weights of ``count`` networks built by ``make()``, stacked.

    Args:
        make: builds one network (it draws its initialisation from the global generator).
        count: how many (>= 1); network ``i`` is the ``i``-th built, in order.

    Returns:
        name -> ``(count, *shape)``: every parameter of the networks (keys of
        ``named_parameters()``), detached.

    Raises:
        ValueError: ``count`` is not an int >= 1.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"stacked_inits: count must be an int >= 1, got {count!r}")
    nets = [make() for _ in range(count)]
    return {name: torch.stack([dict(n.named_parameters())[name].detach() for n in nets]) for name, _ in nets[0].named_parameters()}  # fmt: skip


class INRFitter:
    """``B`` coordinate networks fitted to ``B`` signals by Adam, all in one per-sample pass.

    Args:
        target: the :class:`~hyperdnn.target.Target` of the coordinate network (its spec
            names the fitted tensors; the module's other parameters stay shared and fixed).
        init: name -> ``(B, *shape)`` initial weights of every spec tensor, or ``(*shape)``
            (one initialisation for every signal, e.g. a meta-learned one); copied.
        coords: ``(P, D)`` coordinates shared by every signal, or ``(B, P, D)``.
        values: ``(B, P, C)`` the values the networks should output there.
        lr: Adam's learning rate.

    Attributes:
        weights: name -> ``(B, *shape)`` the fitted tensors (leaf tensors with gradients).
        optimizer: the ``torch.optim.Adam`` over them (its state can be saved and loaded).
        steps: the steps taken.

    Raises:
        TypeError, ValueError: ``init`` that does not fit the spec (every problem named),
            ``values`` that are not ``(B, P, C)``, coordinates that do not fit them, a
            learning rate that is not > 0.
    """

    def __init__(
        self,
        target: Target,
        init: Mapping[str, torch.Tensor],
        coords: torch.Tensor,
        values: torch.Tensor,
        lr: float,
    ):
        if not isinstance(target, Target):
            raise TypeError(f"INRFitter: target must be a Target, got {type(target).__name__}")
        if not isinstance(values, torch.Tensor) or values.dim() != 3:
            raise ValueError(f"INRFitter: values must be a tensor (B, P, C), got {getattr(values, 'shape', values)!r}")
        B, P, _ = values.shape
        if not isinstance(coords, torch.Tensor) or coords.dim() not in (2, 3):
            raise ValueError(f"INRFitter: coords must be a tensor (P, D) or (B, P, D), got {getattr(coords, 'shape', coords)!r}")  # fmt: skip
        if coords.dim() == 2:
            coords = coords.expand(B, -1, -1)
        if tuple(coords.shape[:2]) != (B, P):
            raise ValueError(
                f"INRFitter: coords {tuple(coords.shape)} do not fit values {tuple(values.shape)}: expected ({B}, {P}, D)"
            )
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"INRFitter: lr must be a number > 0, got {lr!r}")
        spec = target.spec
        spec.check(init, where="INRFitter init", like=dict(target.module.named_parameters()))
        batch = spec.batch_shape(init)
        if tuple(batch) not in ((), (B,)):
            raise ValueError(
                f"INRFitter: init must be unbatched or of batch ({B},) for {B} signals, got {tuple(batch)}"
            )
        self.target, self.coords, self.values = target, coords, values
        self.weights = {n: init[n].detach().expand(B, *spec[n].shape).clone().requires_grad_(True) for n in spec.names}
        self.optimizer = torch.optim.Adam(list(self.weights.values()), lr=float(lr))
        self.steps = 0

    def predict(self, coords: torch.Tensor | None = None) -> torch.Tensor:
        """The networks' outputs ``(B, P, C)`` at ``coords`` (default: the fitted ones), one pass."""
        coords = self.coords if coords is None else coords
        return self.target.run(self.weights, coords, mode="per_sample")

    def step(self) -> torch.Tensor:
        """One Adam step on every network; returns each signal's mean squared error ``(B,)``
        before the step."""
        mse = (self.predict() - self.values).pow(2).flatten(1).mean(1)
        self.optimizer.zero_grad(set_to_none=True)
        mse.sum().backward()
        self.optimizer.step()
        self.steps += 1
        return mse.detach()

    @torch.no_grad()
    def psnr(self, peak: float = 1.0) -> torch.Tensor:
        """Each signal's PSNR ``(B,)`` in dB at the fitted coordinates, now."""
        return psnr(self.predict(), self.values, peak)

    def detached(self) -> dict[str, torch.Tensor]:
        """The fitted weights now, detached copies ``(B, *shape)``."""
        return {n: w.detach().clone() for n, w in self.weights.items()}

    def load(self, weights: Mapping[str, torch.Tensor], steps: int) -> None:
        """Put saved weights (of :meth:`detached`) back, after ``steps`` steps.

        Raises:
            ValueError: names or shapes that differ from the fitted ones.
        """
        shapes = {n: tuple(w.shape) for n, w in self.weights.items()}
        given = {n: tuple(w.shape) for n, w in weights.items()}
        if shapes != given:
            raise ValueError(f"INRFitter.load: expected weights {shapes}, got {given}")
        with torch.no_grad():
            for n, w in self.weights.items():
                w.copy_(weights[n])
        self.steps = int(steps)
