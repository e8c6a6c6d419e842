"""How well a signal is reconstructed, and what the reconstruction cost.

* :func:`psnr` - peak signal-to-noise ratio per sample, in dB.
* :func:`count_flops` - floating-point operations of the matrix products (and convolutions) a
  call performs, counted by ``torch.utils.flop_counter.FlopCounterMode``: the compute axis of
  a PSNR-against-compute comparison.

Example::

    >>> import torch
    >>> from hyperdnn.metrics.reconstruction import count_flops, psnr
    >>> target = torch.zeros(2, 4)
    >>> psnr(target + torch.tensor([[0.1], [0.01]]), target)   # MSE 1e-2 and 1e-4 of a peak of 1
    tensor([20., 40.])
    >>> count_flops(lambda: torch.ones(3, 5) @ torch.ones(5, 7))   # 2 * 3 * 5 * 7
    210
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["psnr", "count_flops"]


def psnr(prediction: torch.Tensor, target: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio of each sample, ``10 log10(peak^2 / MSE)`` in dB.

    Args:
        prediction: ``(B, ...)`` reconstructed values.
        target: ``(B, ...)`` the true values, of the same shape.
        peak: the largest possible value (1 for images in ``[0, 1]``).

    Returns:
        ``(B,)`` float: the PSNR of each sample over all its values (``inf`` for an exact
        reconstruction).

    Raises:
        TypeError: an argument that is not a tensor, or a ``peak`` that is not a number.
        ValueError: shapes that differ or have no batch dim, or a ``peak`` that is not > 0.
    """
    given = {"prediction": prediction, "target": target}
    bad = [f"{n} of type {type(t).__name__}" for n, t in given.items() if not isinstance(t, torch.Tensor)]
    if bad:
        raise TypeError(f"psnr: expected tensors, got {', '.join(bad)}")
    if prediction.shape != target.shape or prediction.dim() < 1:
        raise ValueError(
            f"psnr: expected prediction and target of one shape (B, ...), got {tuple(prediction.shape)} and "
            f"{tuple(target.shape)}"
        )
    if isinstance(peak, bool) or not isinstance(peak, (int, float)):
        raise TypeError(f"psnr: peak must be a number > 0, got {peak!r} ({type(peak).__name__})")
    if not peak > 0:
        raise ValueError(f"psnr: peak must be a number > 0, got {peak!r}")
    mse = (prediction.detach().double() - target.detach().double()).pow(2).reshape(prediction.shape[0], -1).mean(1)
    return (10.0 * torch.log10(float(peak) ** 2 / mse)).float()


def count_flops(fn: Callable[[], Any]) -> int:
    """The floating-point operations of the matrix products and convolutions ``fn()`` runs.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add is 2 operations;
    a backward pass inside ``fn`` is counted too); elementwise operations (activations, the
    optimizer's update) are not counted.

    Args:
        fn: the call to count, without arguments (``lambda: model(x)``).

    Returns:
        The total count.

    Raises:
        TypeError: ``fn`` is not callable.
    """
    if not callable(fn):
        raise TypeError(f"count_flops: expected a callable without arguments, got {type(fn).__name__}")
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())
