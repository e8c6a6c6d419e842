"""Trunks: the hypernetwork's body, mapping the conditioner's ``(B, d)`` to features ``(B, h)``.

The review's fifth design criterion is the hypernetwork's own architecture. :class:`MLP` is
the workhorse; :class:`ModuleTrunk` wraps any user module. Trunks are *bound* to their input
width by the :class:`~hyperdnn.hypernet.HyperNetwork` that owns them, so users only state what
is theirs to choose (hidden sizes, activation...).

Example::

    >>> import torch
    >>> from hyperdnn.trunks import MLP
    >>> trunk = MLP(hidden=(32, 32)); trunk.bind(8)
    >>> trunk(torch.randn(4, 8)).shape
    torch.Size([4, 32])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["Trunk", "MLP", "ModuleTrunk", "register_trunk", "create_trunk", "list_trunks", "ACTIVATIONS"]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


def make_activation(name: str) -> nn.Module:
    """An activation module by name (see ``ACTIVATIONS``)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class Trunk(nn.Module, ABC):
    """Abstract trunk: ``bind(in_features)`` creates parameters; ``forward`` maps
    ``(B, in_features)`` to ``(B, out_features)``."""

    @abstractmethod
    def bind(self, in_features: int) -> None:
        """Create the parameters for inputs of width ``in_features``."""

    @property
    @abstractmethod
    def out_features(self) -> int:
        """Output width (known after :meth:`bind`)."""

    def _require_bound(self, bound: bool) -> None:
        if not bound:
            raise RuntimeError(
                f"{type(self).__name__} is not bound: pass it to a HyperNetwork or call bind(in_features)"
            )


class MLP(Trunk):
    """Fully connected trunk.

    Args:
        hidden: hidden layer widths; ``()`` makes the trunk the identity.
        activation: activation name (``relu``, ``gelu``, ``elu``, ``tanh``, ``silu``, ``leaky_relu``).
        dropout: dropout probability after each hidden layer (also a cheap MC-dropout ensemble).
        spectral_norm: wrap each linear layer in spectral normalisation (stabilises training).
    """

    def __init__(
        self,
        hidden: Sequence[int] = (100, 100),
        activation: str = "relu",
        dropout: float = 0.0,
        spectral_norm: bool = False,
    ):
        super().__init__()
        hidden = tuple(hidden)
        if not all(isinstance(h, int) and h > 0 for h in hidden):
            raise ValueError(f"MLP: hidden widths must be positive ints, got {hidden!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MLP: dropout must be in [0, 1), got {dropout!r}")
        make_activation(activation)
        self.hidden, self.activation, self.dropout, self.spectral_norm = hidden, activation, dropout, spectral_norm
        self.net: nn.Module | None = None
        self._in: int | None = None

    def bind(self, in_features: int) -> None:
        layers: list[nn.Module] = []
        width = in_features
        for h in self.hidden:
            lin = nn.Linear(width, h)
            if self.spectral_norm:
                lin = nn.utils.parametrizations.spectral_norm(lin)
            layers += [lin, make_activation(self.activation)]
            if self.dropout:
                layers.append(nn.Dropout(self.dropout))
            width = h
        self.net = nn.Sequential(*layers)
        self._in = in_features

    @property
    def out_features(self) -> int:
        self._require_bound(self._in is not None)
        return self.hidden[-1] if self.hidden else self._in  # type: ignore[return-value]

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        self._require_bound(self.net is not None)
        return self.net(c)


class ModuleTrunk(Trunk):
    """Any user module as a trunk.

    Args:
        module: maps ``(B, in_features)`` to ``(B, out_features)``; its input width is the
            user's to match (:meth:`bind` checks it when ``in_features`` is given).
        out_features: the module's output width.
        in_features: the input width the module expects (optional, checked at bind).
    """

    def __init__(self, module: nn.Module, out_features: int, in_features: int | None = None):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"ModuleTrunk: expected an nn.Module, got {type(module).__name__}")
        self.module = module
        self._out = out_features
        self._expect_in = in_features

    def bind(self, in_features: int) -> None:
        if self._expect_in is not None and self._expect_in != in_features:
            raise ValueError(
                f"ModuleTrunk: the module expects inputs of width {self._expect_in}, but the conditioner gives {in_features}"
            )

    @property
    def out_features(self) -> int:
        return self._out

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.module(c)


_TRUNKS: dict[str, Callable[..., Trunk]] = {}


def register_trunk(name: str, factory: Callable[..., Trunk]) -> None:
    """Register a trunk factory under ``name`` (used by the CLI, tests and benchmarks)."""
    if name in _TRUNKS:
        raise ValueError(f"trunk {name!r} is already registered")
    _TRUNKS[name] = factory


def create_trunk(name: str, **kwargs) -> Trunk:
    """Create a registered trunk by name."""
    if name not in _TRUNKS:
        raise ValueError(f"unknown trunk {name!r}; registered: {list_trunks()}")
    return _TRUNKS[name](**kwargs)


def list_trunks() -> list[str]:
    """Names of the registered trunks."""
    return sorted(_TRUNKS)


register_trunk("mlp", MLP)
