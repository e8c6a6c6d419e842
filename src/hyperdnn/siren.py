"""SIREN: coordinate networks with sine activations (Sitzmann et al., NeurIPS 2020).

A SIREN maps coordinates to values (a pixel position to its intensity) through layers
``sin(omega * (W x + b))``. Its initialisation is part of the method: the first layer's weights
are drawn from ``U(-1/fan_in, 1/fan_in)`` and every later layer's from
``U(-sqrt(6/fan_in)/omega, sqrt(6/fan_in)/omega)``, so that the pre-activations of every layer
start with the same distribution however deep the network is; the biases keep PyTorch's
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

* :class:`SirenLinear` - an ``nn.Linear`` with that initialisation. It keeps ``nn.Linear``'s own
  ``forward``, so a :class:`~hyperdnn.target.Target` runs it with the grouped ``Linear`` kernel,
  and :meth:`~hyperdnn.spec.WeightSpec.from_module` records its initialisation statistics,
  which hyperfan initialisation of a hypernetwork reproduces.
* :class:`Sine` - the activation ``sin(omega * x)``.
* :func:`siren` - ``SirenLinear -> Sine`` per hidden width, then a ``SirenLinear`` to the output
  (a linear output, as for images).

Example::

    >>> import torch
    >>> from hyperdnn.siren import siren, siren_parameters
    >>> net = siren(2, (32, 32), 1)
    >>> net
    Sequential(
      (0): SirenLinear(in_features=2, out_features=32, bias=True, first=True, omega=30.0)
      (1): Sine(omega=30.0)
      (2): SirenLinear(in_features=32, out_features=32, bias=True, first=False, omega=30.0)
      (3): Sine(omega=30.0)
      (4): SirenLinear(in_features=32, out_features=1, bias=True, first=False, omega=30.0)
    )
    >>> net(torch.zeros(5, 784, 2)).shape, siren_parameters(2, (32, 32), 1)
    (torch.Size([5, 784, 1]), 1185)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from hyperdnn._checks import check_bool, check_float, check_int

__all__ = ["Sine", "SirenLinear", "siren", "siren_parameters", "OMEGA"]

#: the frequency factor of the SIREN paper, for the first layer and the later ones
OMEGA = 30.0


class Sine(nn.Module):
    """The SIREN activation ``sin(omega * x)``, elementwise.

    Args:
        omega: the frequency factor (> 0).

    Example::

        >>> import torch
        >>> Sine(2.0)(torch.tensor([0.0, math.pi / 4]))
        tensor([0., 1.])
    """

    def __init__(self, omega: float = OMEGA):
        super().__init__()
        self.omega = _positive("Sine", "omega", omega)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``sin(omega * x)``, any shape."""
        return torch.sin(self.omega * x)

    def extra_repr(self) -> str:
        return f"omega={self.omega}"


class SirenLinear(nn.Linear):
    """``nn.Linear`` with SIREN's initialisation; the :class:`Sine` after it holds ``omega``.

    Args:
        in_features: input width ``F``.
        out_features: output width.
        bias: whether the layer has a bias.
        first: the network's first layer: weights from ``U(-1/F, 1/F)``; otherwise from
            ``U(-sqrt(6/F)/omega, sqrt(6/F)/omega)``.
        omega: the frequency factor of the sine that reads this layer's input (later layers
            only; the first layer's bound does not depend on it).

    The bias is drawn as ``nn.Linear`` draws it, ``U(-1/sqrt(F), 1/sqrt(F))``. ``forward`` is
    ``nn.Linear``'s, ``(..., F) -> (..., out_features)``.

    Example::

        >>> layer = SirenLinear(32, 32, omega=30.0)
        >>> layer.weight_bound == math.sqrt(6 / 32) / 30.0, bool(layer.weight.abs().max() <= layer.weight_bound)
        (True, True)
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, *, first: bool = False, omega: float = OMEGA
    ):
        check_int("SirenLinear", "in_features", in_features)
        check_int("SirenLinear", "out_features", out_features)
        check_bool("SirenLinear", "bias", bias)
        # nn.Linear.__init__ calls reset_parameters, which reads these two
        self.first = check_bool("SirenLinear", "first", first)
        self.omega = _positive("SirenLinear", "omega", omega)
        super().__init__(in_features, out_features, bias)

    @property
    def weight_bound(self) -> float:
        """``b`` of the weights' initial ``U(-b, b)``."""
        n = self.in_features
        return 1.0 / n if self.first else math.sqrt(6.0 / n) / self.omega

    @property
    def bias_bound(self) -> float:
        """``b`` of the bias's initial ``U(-b, b)`` (PyTorch's ``1/sqrt(in_features)``)."""
        return 1.0 / math.sqrt(self.in_features)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Draw the weights and bias from SIREN's initialisation (the global generator)."""
        self.weight.uniform_(-self.weight_bound, self.weight_bound)
        if self.bias is not None:
            self.bias.uniform_(-self.bias_bound, self.bias_bound)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, first={self.first}, omega={self.omega}"


def _positive(where: str, name: str, value: object) -> float:
    """``value`` as a finite float > 0 (``TypeError``/``ValueError`` naming ``where`` and ``name``)."""
    number = check_float(where, name, value)
    if number <= 0.0:
        raise ValueError(f"{where}: {name} must be a finite number > 0, got {number!r}")
    return number


def _check_sizes(in_features: int, hidden: Sequence[int], out_features: int, where: str) -> tuple[int, ...]:
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise TypeError(f"{where}: hidden must be a sequence of ints, got {type(hidden).__name__}")
    widths = {"in_features": in_features, "out_features": out_features}
    widths.update({f"hidden[{i}]": h for i, h in enumerate(hidden)})
    bad = {k: v for k, v in widths.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
    if bad:
        raise ValueError(f"{where}: widths must be ints >= 1, got {', '.join(f'{k}={v!r}' for k, v in bad.items())}")
    if not hidden:
        raise ValueError(f"{where}: hidden must name at least one hidden width (a SIREN has sine layers), got ()")
    return tuple(hidden)


def siren(
    in_features: int, hidden: Sequence[int], out_features: int, omega_0: float = OMEGA, omega: float = OMEGA
) -> nn.Sequential:
    """A SIREN: ``SirenLinear -> Sine`` per hidden width, then a linear ``SirenLinear`` output.

    Args:
        in_features: coordinate dimensions ``D`` (2 for an image).
        hidden: hidden widths, in order (at least one).
        out_features: values per coordinate ``C`` (1 for a grey image, 3 for colour).
        omega_0: the first sine's frequency factor (30 in the paper: the first layer's
            frequencies span the signal's).
        omega: the later sines' factor, which the later layers' initialisation divides by.

    Returns:
        An ``nn.Sequential`` mapping ``(..., D)`` to ``(..., C)``; its linear layers are at
        ``0, 2, 4, ...``. The layers draw from the global generator in order.

    Raises:
        TypeError, ValueError: a width that is not an int >= 1 (all named), no hidden width, an
            ``omega`` that is not a float > 0.
    """
    hidden = _check_sizes(in_features, hidden, out_features, "siren")
    _positive("siren", "omega_0", omega_0)
    _positive("siren", "omega", omega)
    layers: list[nn.Module] = []
    width = in_features
    for i, h in enumerate(hidden):
        layers += [SirenLinear(width, h, first=i == 0, omega=omega), Sine(omega_0 if i == 0 else omega)]
        width = h
    layers.append(SirenLinear(width, out_features, omega=omega))
    return nn.Sequential(*layers)


def siren_parameters(in_features: int, hidden: Sequence[int], out_features: int) -> int:
    """The parameters of ``siren(in_features, hidden, out_features)``, counted without building it."""
    widths = (in_features, *_check_sizes(in_features, hidden, out_features, "siren_parameters"), out_features)
    return sum(a * b + b for a, b in zip(widths, widths[1:]))
