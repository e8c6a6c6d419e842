"""One network for a whole range of a hyper-parameter (hyper-parameter-conditioned hypernetworks).

A hypernetwork reads the value ``lambda`` of a continuous hyper-parameter (a penalty strength,
a loss weight, a regularisation coefficient) and generates the weights of a target network
trained *for that value*: ``theta(lambda)``. Trained on values drawn at every step, it replaces
a sweep of separately trained models; the user picks the value afterwards (Lorraine and
Duvenaud 2018; self-tuning networks, MacKay et al. 2019; HyperMorph, Hoopes et al. 2021).

:class:`HyperparameterNetwork` uses the residual parametrisation ``theta(lambda) = theta_0 +
delta(lambda)`` with a learned base ``theta_0`` (``HyperNetwork(..., residual="target",
learn_theta0=True)``): the base starts at the target's own initial weights, so the generated
networks start where ordinary training starts, and the hypernetwork only learns how the
weights move with the value (the magnitude-invariant form of Ortiz et al., ICLR 2024, whose
other half, an input of constant magnitude, is the conditioner's ``[-1, 1]`` scaling or its
Fourier features). The value is read on a log scale by default (a penalty over four decades).
``K`` values run on one shared batch (a :class:`~hyperdnn.Continuous` conditioner with
``execution="ensemble"``: outputs ``(K, N, ...)``). A value outside the trained range still
gets weights, with a ``UserWarning`` naming the range: the hypernetwork never saw it.

:func:`l2_penalty` is the penalty of one weight set or ``K`` of them.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from hyperdnn import MLP, Target
    >>> from hyperdnn.methods.hyperparameter import HyperparameterNetwork, l2_penalty
    >>> _ = torch.manual_seed(0)
    >>> net = HyperparameterNetwork(Target(nn.Linear(4, 3)), 1e-4, 1e-1, MLP((8,)))
    >>> values = net.sample(5, torch.Generator().manual_seed(0))       # log-uniform in [1e-4, 1e-1]
    >>> weights = net.generate(values)
    >>> net.apply(weights, torch.randn(7, 4)).shape                     # 5 networks on one batch
    torch.Size([5, 7, 3])
    >>> l2_penalty(weights).shape                                       # one penalty per network
    torch.Size([5])
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from hyperdnn.conditioners import Continuous
from hyperdnn.heads import Head, Once
from hyperdnn.hypernet import HyperNetwork
from hyperdnn.target import Target
from hyperdnn.trunks import MLP, Trunk

__all__ = ["HyperparameterNetwork", "l2_penalty"]


def l2_penalty(
    weights: Mapping[str, torch.Tensor], batched: bool = True, select: Callable[[str], bool] | None = None
) -> torch.Tensor:
    """The sum of squares of the selected tensors: ``(K,)`` for ``K`` weight sets, or a scalar.

    Args:
        weights: name -> tensor, with a leading ``K`` when ``batched`` (generated weights), or a
            module's ``named_parameters()`` as a dict with ``batched=False``.
        batched: whether the tensors carry a leading weight-set dim.
        select: which names are penalised (default: names ending in ``"weight"``: the weights
            of linear and convolution layers, not biases).

    Returns:
        ``(K,)`` when ``batched``, else a 0-dim tensor.

    Raises:
        ValueError: no tensor is selected, or batched tensors disagree on ``K``.
    """
    chosen = select or (lambda name: name.endswith("weight"))
    picked = {n: w for n, w in weights.items() if chosen(n)}
    if not picked:
        raise ValueError(f"l2_penalty: no tensor selected among {sorted(weights)}")
    if not batched:
        return sum(w.pow(2).sum() for w in picked.values())  # type: ignore[return-value]
    sizes = {n: (w.shape[0] if w.dim() else None) for n, w in picked.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise ValueError(f"l2_penalty: batched tensors need one leading K, got {sizes}")
    return sum(w.pow(2).flatten(1).sum(1) for w in picked.values())  # type: ignore[return-value]


class HyperparameterNetwork(nn.Module):
    """A network for every value of a hyper-parameter in ``[low, high]``: ``model(x, values)``.

    Args:
        target: the :class:`~hyperdnn.Target` whose weights are generated.
        low, high: the range trained on, ``0 < low < high`` on a log scale (any
            ``low < high`` with ``log=False``).
        trunk: the hypernetwork's trunk; a narrow last layer suffices (the weights move along
            a one-dimensional curve), e.g. ``MLP((64, 16))``.
        head: its head (default: one linear layer, :class:`~hyperdnn.Once`).
        log: read the value on a log scale (draws in :meth:`sample` are then log-uniform).
        encoding: the conditioner's ``"identity"`` or ``"fourier"`` encoding of the (log) value.
        residual_scale: the scale of ``delta`` relative to the hyperfan scale (the head's raw
            outputs are multiplied by it: with Adam, how fast ``delta`` moves).
        zero_delta: start the head's last layers at zero, so that every value's network starts
            at ``theta_0`` exactly (the target's initial weights: ordinary training's start);
            otherwise ``delta`` starts calibrated to ``residual_scale`` times the hyperfan scale.

    Attributes:
        hypernet: the :class:`~hyperdnn.HyperNetwork`; ``target``: the target.
    """

    def __init__(
        self,
        target: Target,
        low: float,
        high: float,
        trunk: Trunk | None = None,
        head: Head | None = None,
        *,
        log: bool = True,
        encoding: str = "identity",
        residual_scale: float = 1.0,
        zero_delta: bool = True,
    ):
        super().__init__()
        if not isinstance(target, Target):
            raise TypeError(f"HyperparameterNetwork: target must be a Target, got {type(target).__name__}")
        bounds_ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (low, high)) and low < high
        if not bounds_ok or (log and low <= 0):
            need = "0 < low < high" if log else "low < high"
            raise ValueError(f"HyperparameterNetwork: expected finite {need}, got low={low!r}, high={high!r}")
        self.low, self.high, self.log = float(low), float(high), bool(log)
        lo, hi = (math.log10(low), math.log10(high)) if log else (low, high)
        conditioner = Continuous(1, encoding=encoding, low=lo, high=hi, execution="ensemble")
        self.hypernet = HyperNetwork(
            target, conditioner, trunk or MLP((64, 16)), head or Once(),
            residual="target", learn_theta0=True, residual_scale=residual_scale,
        )  # fmt: skip
        if zero_delta:
            with torch.no_grad():
                for finals, _ in self.hypernet.head.calibration_groups():
                    for layer in finals:
                        for p in layer.parameters(recurse=False):
                            p.zero_()
        self.target = target

    def _context(self, values: Any) -> torch.Tensor:
        try:
            v = torch.as_tensor(values, dtype=torch.float64).flatten()
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"HyperparameterNetwork: values must be numbers, got {values!r}") from None
        if v.numel() == 0 or not bool(torch.isfinite(v).all()) or (self.log and bool((v <= 0).any())):
            need = "finite numbers > 0 (a log scale)" if self.log else "finite numbers"
            raise ValueError(f"HyperparameterNetwork: values must be {need}, got {v.tolist()}")
        # the ends are inside, also as rounded by the dtype the values came in (1e-4 as float32 is 0.99999997e-4)
        given = values.dtype if isinstance(values, torch.Tensor) and values.dtype.is_floating_point else torch.float64
        tol = max(1e-9, 4 * torch.finfo(given).eps)
        outside = v[(v < self.low * (1 - tol)) | (v > self.high * (1 + tol))]
        if outside.numel():
            warnings.warn(
                f"HyperparameterNetwork: values {[float(f'{x:.6g}') for x in outside.tolist()]} lie outside the "
                f"trained range [{self.low:g}, {self.high:g}]; their weights are an extrapolation",
                UserWarning,
                stacklevel=3,
            )
        ref = self.hypernet.theta_scale
        return (torch.log10(v) if self.log else v).unsqueeze(1).to(device=ref.device, dtype=ref.dtype)

    def sample(self, k: int, generator: torch.Generator) -> torch.Tensor:
        """``k`` values drawn from the trained range (log-uniform with ``log``), float64 ``(k,)``."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"HyperparameterNetwork.sample: k must be an int >= 1, got {k!r}")
        u = torch.rand(k, generator=generator, dtype=torch.float64)
        if self.log:
            return 10 ** (math.log10(self.low) + u * (math.log10(self.high) - math.log10(self.low)))
        return self.low + u * (self.high - self.low)

    def generate(self, values: Any) -> dict[str, torch.Tensor]:
        """The weights for ``K`` values (a number or ``(K,)``): name -> ``(K, *shape)``; warns for
        values outside ``[low, high]``."""
        return self.hypernet(self._context(values))

    def apply(self, weights: Mapping[str, torch.Tensor], *inputs: Any) -> Any:
        """The target with ``K`` generated weight sets on one batch: ``(K, N, ...)``."""
        return self.target.run(weights, *inputs, mode="ensemble", validate=False)

    def forward(self, x: Any, values: Any) -> Any:
        """The target's outputs for every value on the batch ``x``: ``(K, N, ...)``."""
        return self.apply(self.generate(values), x)
