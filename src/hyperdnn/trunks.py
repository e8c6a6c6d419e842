"""Trunks: the hypernetwork's architecture (the review's fifth design criterion).

A trunk has two jobs:

* **context encoder** - ``forward`` maps the conditioner's ``(B, d)`` to features ``(B, h)``;
* **token architecture** - every head generates its numbers as *tokens* (generate-once: one
  token; multi-head: one per group; component-wise: one per component; chunk-wise: one per
  chunk). The trunk decides how tokens interact and how a token becomes numbers:
  :meth:`Trunk.token_mixer` returns a module that mixes the token sequence
  ``(B, n, width) -> (B, n, width)`` (``None``: tokens are independent) and
  :meth:`Trunk.token_readout` returns a module that turns one token into its numbers
  (``None``: a linear layer).

========== ============================= ============================================
trunk      token mixer                   token readout
========== ============================= ============================================
``mlp``    none (pointwise)              linear
``rnn``    GRU/LSTM over tokens in order linear (each step emits its component)
``attention`` transformer over tokens    linear
``cnn``    none                          deconvolution: each token becomes an image
========== ============================= ============================================

:class:`MLP` is the workhorse; :class:`ModuleTrunk` wraps any user module. A :class:`Trunk` is
a frozen description of what the user chooses (hidden sizes, activation...): the
:class:`~hyperdnn.hypernet.HyperNetwork` that uses it calls :meth:`Trunk.build` with the
conditioner's width and gets the complete context encoder (a :class:`TrunkModule`) in one
step. Heads build their own mixer and readout from the description (so those parameters live
in the head). Built-in trunks are registered by name (:func:`create_trunk`,
:func:`list_trunks`, :func:`register_trunk`; installed packages add theirs through the
``hyperdnn.trunks`` entry-point group).

Example::

    >>> import torch
    >>> from hyperdnn.trunks import MLP, create_trunk
    >>> encoder = MLP(hidden=(32, 32)).build(8)
    >>> encoder(torch.randn(4, 8)).shape
    torch.Size([4, 32])
    >>> create_trunk("rnn", width=16).token_mixer()(torch.randn(4, 10, 16)).shape   # 10 tokens, mixed in order
    torch.Size([4, 10, 16])
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn._checks import (
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_optional_int,
    check_widths,
    set_frozen,
)
from hyperdnn._factories import factory_registry
from hyperdnn.target.structure import call_sequential

__all__ = [
    "Trunk",
    "TrunkModule",
    "ContextEncoder",
    "ModuleEncoder",
    "MLP",
    "ModuleTrunk",
    "RNN",
    "Attention",
    "CNN",
    "TokenMixer",
    "TokenReadout",
    "RecurrentMixer",
    "AttentionMixer",
    "DeconvReadout",
    "register_trunk",
    "create_trunk",
    "list_trunks",
    "ACTIVATIONS",
]

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


def _check_activation(where: str, activation: str) -> str:
    return check_choice(where, "activation", activation, sorted(ACTIVATIONS))


# --------------------------------------------------------------------- token stages


class TokenMixer(nn.Module, ABC):
    """Mixes a sequence of token features: ``(B, n, width) -> (B, n, width)``.

    Tokens come in the spec's layout order (layers, then tensors, then rows or chunks). A
    mixer must treat every batch row independently and accept any ``n >= 1``.
    """

    width: int

    @abstractmethod
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, n, width)`` -> ``(B, n, width)``."""


class TokenReadout(nn.Module, ABC):
    """Turns each token's features into its numbers: ``(..., in_features) -> (..., out_features)``."""

    in_features: int
    out_features: int

    @abstractmethod
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(..., in_features)`` -> raw ``(..., out_features)``."""

    @abstractmethod
    def final_layers(self) -> list[nn.Module]:
        """Last layers whose scale sets the output variance; initialisation re-draws them
        together. Each has ``weight``, ``bias`` and ``in_features`` (the number of inputs
        summed into one output)."""


class RecurrentMixer(TokenMixer):
    """Recurrent generation over the token sequence (HyperLSTM-style, layer by layer).

    Step ``i`` reads token ``i`` (its embedding plus the context) and the state left by the
    previous tokens; its output is what the readout turns into token ``i``'s numbers. A
    residual connection and a final ``LayerNorm`` keep every step's features at unit scale,
    so all tokens start with the same output variance.

    Args:
        width: token feature width (the recurrent hidden size).
        cell: ``"gru"`` or ``"lstm"``.
        layers: stacked recurrent layers.
    """

    def __init__(self, width: int, cell: str = "gru", layers: int = 1):
        super().__init__()
        check_choice("RecurrentMixer", "cell", cell, ("gru", "lstm"))
        self.width = check_int("RecurrentMixer", "width", width)
        check_int("RecurrentMixer", "layers", layers)
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(width, width, num_layers=layers, batch_first=True)
        self.norm = nn.LayerNorm(width)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(z)
        return self.norm(z + out)


class AttentionMixer(TokenMixer):
    """A transformer encoder over the token sequence (pre-norm, final ``LayerNorm``).

    Tokens carry their identity in their embeddings, so no positional encoding is added.

    Args:
        width: token feature width (``d_model``); must be divisible by ``heads``.
        heads: attention heads.
        layers: encoder layers.
        ff: feed-forward width (default ``2 * width``).
        dropout: dropout inside the encoder layers.
    """

    def __init__(self, width: int, heads: int = 4, layers: int = 2, ff: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.width = check_int("AttentionMixer", "width", width)
        check_int("AttentionMixer", "heads", heads)
        check_int("AttentionMixer", "layers", layers)
        check_optional_int("AttentionMixer", "ff", ff)
        check_float("AttentionMixer", "dropout", dropout, 0.0, 1.0, high_open=True)
        if width % heads:
            raise ValueError(f"AttentionMixer: width must be divisible by heads, got width={width}, heads={heads}")
        layer = nn.TransformerEncoderLayer(
            width, heads, ff or 2 * width, dropout=dropout, batch_first=True, norm_first=True, activation="gelu"
        )
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(width), enable_nested_tensor=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.encoder(z)


class _CircularDeconv(nn.Module):
    """A stride-2 transposed convolution (kernel 4) on the torus: output ``2H x 2W``.

    Wrapping the input circularly gives every output pixel the same number of kernel taps,
    so all pixels (all generated numbers) start with the same variance; a zero-padded
    transposed convolution gives border pixels a quarter of it.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (1, 1, 1, 1), mode="circular"))


class _PixelProjection(nn.Module):
    """Per-pixel 1x1 projection ``(N, C, k) -> (N, k)`` with its own weights at each of the
    ``k`` pixels (a locally connected 1x1 layer): every generated number gets independent
    output weights, as in a linear readout, so a fresh draw of this layer gives every token
    the calibrated variance, not one shared fluctuation."""

    def __init__(self, channels: int, pixels: int):
        super().__init__()
        self.in_features = channels
        bound = 1.0 / math.sqrt(channels)
        self.weight = nn.Parameter(torch.empty(pixels, channels).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(pixels))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nck,kc->nk", feats, self.weight) + self.bias


class DeconvReadout(TokenReadout):
    """Deconvolutional readout: each token becomes a ``size x size`` image of numbers.

    ``token -> Linear -> (channels[0], base, base) -> [x2 transposed-convolution upsampling]
    x len(channels) -> (channels[-1], size, size) -> 1x1 projection -> one number per pixel``,
    with ``size = base * 2 ** len(channels)`` (stage ``i`` maps ``channels[i]`` to
    ``channels[i + 1]`` channels, the last keeps ``channels[-1]``). A token of ``k`` numbers
    reads the top-left ``ceil(k / w) x w`` block (``w = ceil(sqrt(k))``) in raster order, so a
    square component (an 8x8 input filter, a k x k kernel) keeps its 2-D neighbourhoods.

    The transposed convolutions, shared over positions, give the numbers their spatial
    structure; the final 1x1 projection has its own weights at each of the ``k`` pixels, so
    every number has independent output weights, as in a linear readout, and initialisation
    (which draws this projection, measured on exactly the ``k`` pixels it emits) gives each
    draw the calibrated variance.

    Args:
        in_features: token feature width.
        out_features: numbers per token; at most ``size * size``.
        channels: channels before each upsampling stage.
        base: side of the first feature map.
        activation: activation between stages.

    Raises:
        ValueError: ``out_features`` exceeds ``size * size`` (the message names the limit).

    Example::

        >>> import torch
        >>> from hyperdnn.trunks import DeconvReadout
        >>> readout = DeconvReadout(16, 64, channels=(8, 4), base=2)   # 8x8 images
        >>> readout(torch.randn(3, 5, 16)).shape
        torch.Size([3, 5, 64])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        channels: Sequence[int] = (32, 16),
        base: int = 4,
        activation: str = "relu",
    ):
        super().__init__()
        channels = check_widths("DeconvReadout", "channels", channels)
        if not channels:
            raise ValueError("DeconvReadout: channels must name at least one upsampling stage, got ()")
        check_int("DeconvReadout", "base", base)
        _check_activation("DeconvReadout", activation)
        self.in_features = check_int("DeconvReadout", "in_features", in_features)
        self.out_features = check_int("DeconvReadout", "out_features", out_features)
        self.channels, self.base = channels, base
        self.size = base * 2 ** len(channels)
        if out_features > self.size**2:
            raise ValueError(
                f"DeconvReadout: a token of {out_features} numbers does not fit the deconvolutional "
                f"generator's {self.size}x{self.size} = {self.size**2}-pixel output (base={base}, "
                f"{len(channels)} upsampling stages); use smaller chunks or components, or raise "
                f"base or add a stage"
            )
        self.lift = nn.Linear(in_features, channels[0] * base * base)
        stages: list[nn.Module] = [make_activation(activation)]
        for c_in, c_out in zip(channels, channels[1:] + channels[-1:]):
            stages += [_CircularDeconv(c_in, c_out), make_activation(activation)]
        self.stages = nn.Sequential(*stages)
        self.pixel = _PixelProjection(channels[-1], out_features)
        w = math.ceil(math.sqrt(out_features))
        idx = torch.tensor([(i // w) * self.size + (i % w) for i in range(out_features)], dtype=torch.long)
        self.register_buffer("_crop", idx, persistent=False)

    def _features(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, in_features)`` -> pixel features ``(N, channels[-1], size * size)``."""
        x = self.lift(z).reshape(-1, self.channels[0], self.base, self.base)
        return self.stages(x).flatten(2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        feats = self._features(z.reshape(-1, self.in_features)).index_select(2, self._crop)
        return self.pixel(feats).reshape(*lead, self.out_features)

    def final_layers(self) -> list[nn.Module]:
        return [self.pixel]


# --------------------------------------------------------------------- built encoders


class TrunkModule(nn.Module, ABC):
    """What a :class:`Trunk` builds: the context encoder ``(B, in_features) -> (B, out_features)``,
    complete (its parameters exist) when constructed."""

    in_features: int
    out_features: int

    @abstractmethod
    def forward(self, c: torch.Tensor) -> torch.Tensor:
        """``(B, in_features)`` -> features ``(B, out_features)``."""


class ContextEncoder(TrunkModule):
    """An MLP context encoder (the built :class:`MLP`, and the encoder of the token trunks).

    Args:
        in_features: the conditioner's width.
        hidden: hidden widths; ``()`` makes the encoder the identity.
        activation: activation name (see ``ACTIVATIONS``).
        dropout: dropout probability after each hidden layer.
        spectral_norm: wrap each linear layer in spectral normalisation.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (),
        activation: str = "relu",
        dropout: float = 0.0,
        spectral_norm: bool = False,
    ):
        super().__init__()
        self.in_features = check_int("ContextEncoder", "in_features", in_features)
        hidden = check_widths("ContextEncoder", "hidden", hidden)
        _check_activation("ContextEncoder", activation)
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            lin = nn.Linear(width, h)
            if spectral_norm:
                lin = nn.utils.parametrizations.spectral_norm(lin)
            layers += [lin, make_activation(activation)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        self.net = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        # no layers (``MLP(())``): the context itself, without a call to the empty Sequential
        net = self._modules["net"]
        return call_sequential(net, c) if net._modules else c


class ModuleEncoder(TrunkModule):
    """A user's module as the context encoder (the built :class:`ModuleTrunk`).

    Args:
        module: maps ``(B, in_features)`` to ``(B, out_features)``.
        in_features: the conditioner's width.
        out_features: the module's output width.
    """

    def __init__(self, module: nn.Module, in_features: int, out_features: int):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"ModuleEncoder: expected an nn.Module, got {type(module).__name__}")
        self.in_features = check_int("ModuleEncoder", "in_features", in_features)
        self.out_features = check_int("ModuleEncoder", "out_features", out_features)
        self.module = module

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.module(c)


# --------------------------------------------------------------------- trunks


class Trunk(ABC):
    """A hypernetwork architecture: a frozen description (hidden sizes, activation...).

    :meth:`build` makes the context encoder for a conditioner of width ``in_features``;
    :meth:`token_mixer` and :meth:`token_readout` give heads the trunk's token architecture.
    A description builds any number of independent modules and never changes.
    """

    @abstractmethod
    def build(self, in_features: int) -> TrunkModule:
        """The context encoder for inputs of width ``in_features``, with its parameters.

        Raises:
            TypeError, ValueError: ``in_features`` is not an int >= 1, or not the width the
                trunk expects.
        """

    @abstractmethod
    def token_mixer(self) -> TokenMixer | None:
        """A new module mixing a head's token sequence, or ``None`` (tokens independent)."""

    @abstractmethod
    def token_readout(self, in_features: int, out_features: int) -> TokenReadout | None:
        """A new module turning a token of ``in_features`` into ``out_features`` numbers, or
        ``None`` (the head uses a linear layer).

        Raises:
            ValueError: the trunk cannot produce ``out_features`` numbers per token.
        """


TRUNKS, register_trunk, create_trunk, list_trunks = factory_registry("trunk", Trunk, "hyperdnn.trunks")
"""``register_trunk(name, factory)`` (or ``@register_trunk(name)``), ``create_trunk(name, **kwargs)``,
``list_trunks(pattern=None)``: trunk factories by name (see :mod:`hyperdnn._factories`)."""


@register_trunk("mlp")
@dataclass(frozen=True)
class MLP(Trunk):
    """Fully connected trunk; tokens are generated independently (pointwise).

    Args:
        hidden: hidden layer widths; ``()`` makes the trunk the identity.
        activation: activation name (``relu``, ``gelu``, ``elu``, ``tanh``, ``silu``, ``leaky_relu``).
        dropout: dropout probability after each hidden layer (also a cheap MC-dropout ensemble).
        spectral_norm: wrap each linear layer in spectral normalisation (stabilises training).

    Example::

        >>> import torch
        >>> from hyperdnn import MLP
        >>> encoder = MLP((16,)).build(4)          # the context encoder: (B, 4) -> (B, 16)
        >>> encoder.out_features, encoder(torch.randn(2, 4)).shape
        (16, torch.Size([2, 16]))
    """

    hidden: Sequence[int] = (100, 100)
    activation: str = "relu"
    dropout: float = 0.0
    spectral_norm: bool = False

    def __post_init__(self) -> None:
        hidden = check_widths("MLP", "hidden", self.hidden)
        _check_activation("MLP", self.activation)
        dropout = check_float("MLP", "dropout", self.dropout, 0.0, 1.0, high_open=True)
        check_bool("MLP", "spectral_norm", self.spectral_norm)
        set_frozen(self, hidden=hidden, dropout=dropout)

    def build(self, in_features: int) -> ContextEncoder:
        check_int("MLP.build", "in_features", in_features)
        return ContextEncoder(in_features, self.hidden, self.activation, self.dropout, self.spectral_norm)

    def token_mixer(self) -> None:
        return None

    def token_readout(self, in_features: int, out_features: int) -> None:
        return None


@dataclass(frozen=True)
class ModuleTrunk(Trunk):
    """Any user module as a trunk (tokens are generated independently, linear readout).

    Args:
        module: maps ``(B, in_features)`` to ``(B, out_features)``; its input width is the
            user's to match (:meth:`build` checks it when ``in_features`` is given). Every
            module built from this description holds this same module.
        out_features: the module's output width.
        in_features: the input width the module expects (optional, checked at build).
    """

    module: nn.Module
    out_features: int
    in_features: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.module, nn.Module):
            raise TypeError(f"ModuleTrunk: expected an nn.Module, got {type(self.module).__name__}")
        check_int("ModuleTrunk", "out_features", self.out_features)
        check_optional_int("ModuleTrunk", "in_features", self.in_features)

    def build(self, in_features: int) -> ModuleEncoder:
        check_int("ModuleTrunk.build", "in_features", in_features)
        if self.in_features is not None and self.in_features != in_features:
            raise ValueError(
                f"ModuleTrunk: the module expects inputs of width {self.in_features}, but the conditioner gives {in_features}"
            )
        return ModuleEncoder(self.module, in_features, self.out_features)

    def token_mixer(self) -> None:
        return None

    def token_readout(self, in_features: int, out_features: int) -> None:
        return None


class _TokenTrunk(Trunk):
    """What the token trunks (:class:`RNN`, :class:`Attention`, :class:`CNN`) share: an MLP
    context encoder of widths ``hidden`` with ``activation``."""

    hidden: Sequence[int]
    activation: str

    def _check_encoder(self, *ints: str) -> None:
        """Check ``hidden``, ``activation`` and the int fields ``ints`` (each ``>= 1``)."""
        where = type(self).__name__
        set_frozen(self, hidden=check_widths(where, "hidden", self.hidden))
        _check_activation(where, self.activation)
        for name in ints:
            check_int(where, name, getattr(self, name))

    def build(self, in_features: int) -> ContextEncoder:
        check_int(f"{type(self).__name__}.build", "in_features", in_features)
        return ContextEncoder(in_features, self.hidden, self.activation)


@register_trunk("rnn")
@dataclass(frozen=True)
class RNN(_TokenTrunk):
    """Recurrent hypernetwork: generates the target layer by layer, chunk by chunk.

    Each head's tokens (components, chunks, layer groups) are run as a sequence through a
    GRU or LSTM (:class:`RecurrentMixer`); step ``i`` sees token ``i``'s embedding plus the
    context and the state left by the tokens before it, and emits token ``i``'s numbers
    through a linear readout.

    Args:
        hidden: hidden widths of the context encoder MLP.
        width: recurrent state (token feature) width.
        cell: ``"gru"`` or ``"lstm"``.
        layers: stacked recurrent layers.
        activation: activation of the context encoder.

    Example::

        >>> import torch, torch.nn as nn
        >>> from hyperdnn import HyperNetwork, TaskEmbedding, RNN, ComponentWise, Target
        >>> target = Target(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
        >>> hnet = HyperNetwork(target, TaskEmbedding(2, 4), RNN(width=16), ComponentWise("unit"))
        >>> hnet(torch.tensor([0, 1]))["0.weight"].shape
        torch.Size([2, 8, 4])
    """

    hidden: Sequence[int] = (64,)
    width: int = 64
    cell: str = "gru"
    layers: int = 1
    activation: str = "relu"

    def __post_init__(self) -> None:
        self._check_encoder("width", "layers")
        check_choice("RNN", "cell", self.cell, ("gru", "lstm"))

    def token_mixer(self) -> RecurrentMixer:
        return RecurrentMixer(self.width, self.cell, self.layers)

    def token_readout(self, in_features: int, out_features: int) -> None:
        return None


@register_trunk("attention")
@dataclass(frozen=True)
class Attention(_TokenTrunk):
    """Attention hypernetwork: a transformer over the head's tokens.

    Each token is its component or chunk embedding plus the context (both projected to
    ``width``); a pre-norm transformer encoder (:class:`AttentionMixer`) lets every token see
    every other before a linear readout emits its numbers.

    Args:
        hidden: hidden widths of the context encoder MLP.
        width: token width (``d_model``), divisible by ``heads``.
        heads: attention heads.
        layers: encoder layers.
        ff: feed-forward width (default ``2 * width``).
        dropout: dropout inside the encoder.
        activation: activation of the context encoder.

    Example::

        >>> import torch, torch.nn as nn
        >>> from hyperdnn import HyperNetwork, LearnedLatent, Attention, Chunked, Target
        >>> target = Target(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
        >>> hnet = HyperNetwork(target, LearnedLatent(4), Attention(width=16, heads=2), Chunked(16))
        >>> hnet()["2.weight"].shape
        torch.Size([2, 8])
    """

    hidden: Sequence[int] = (64,)
    width: int = 64
    heads: int = 4
    layers: int = 2
    ff: int | None = None
    dropout: float = 0.0
    activation: str = "relu"

    def __post_init__(self) -> None:
        self._check_encoder("width", "heads", "layers")
        if self.width % self.heads:
            raise ValueError(f"Attention: width must be divisible by heads, got width={self.width}, heads={self.heads}")
        check_optional_int("Attention", "ff", self.ff)
        set_frozen(self, dropout=check_float("Attention", "dropout", self.dropout, 0.0, 1.0, high_open=True))

    def token_mixer(self) -> AttentionMixer:
        return AttentionMixer(self.width, self.heads, self.layers, self.ff, self.dropout)

    def token_readout(self, in_features: int, out_features: int) -> None:
        return None


@register_trunk("cnn")
@dataclass(frozen=True)
class CNN(_TokenTrunk):
    """Deconvolutional hypernetwork: every token (a chunk, a component, a whole tensor) is
    generated as an image by transposed-convolution upsampling (:class:`DeconvReadout`).

    The output image is ``size x size`` with ``size = base * 2 ** len(channels)``; a head
    whose tokens need more numbers than that is refused when it is built.

    Args:
        hidden: hidden widths of the context encoder MLP.
        channels: channels before each x2 upsampling stage.
        base: side of the first feature map.
        activation: activation of the encoder and between stages.

    Example::

        >>> import torch, torch.nn as nn
        >>> from hyperdnn import HyperNetwork, LearnedLatent, CNN, ComponentWise, Target
        >>> target = Target(nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)))
        >>> hnet = HyperNetwork(target, LearnedLatent(8), CNN(channels=(8, 4), base=2), ComponentWise("unit"))
        >>> hnet()["0.weight"].shape   # each row: an 8x8 block of an 8x8 generated image
        torch.Size([16, 64])
    """

    hidden: Sequence[int] = (64,)
    channels: Sequence[int] = (32, 16)
    base: int = 4
    activation: str = "relu"

    def __post_init__(self) -> None:
        self._check_encoder("base")
        channels = check_widths("CNN", "channels", self.channels)
        if not channels:
            raise ValueError("CNN: channels must name at least one upsampling stage, got ()")
        set_frozen(self, channels=channels)

    @property
    def image_size(self) -> int:
        """Side of the generated images; a token holds at most ``image_size ** 2`` numbers."""
        return self.base * 2 ** len(self.channels)

    def token_mixer(self) -> None:
        return None

    def token_readout(self, in_features: int, out_features: int) -> DeconvReadout:
        return DeconvReadout(in_features, out_features, self.channels, self.base, self.activation)


def build_trunk(where: str, trunk: Trunk | None, in_features: int, default: Trunk) -> tuple[Trunk, TrunkModule]:
    """``trunk`` (``default`` when ``None``), checked, and its encoder built for ``in_features``.

    Raises:
        TypeError: ``trunk`` is not a :class:`Trunk` (the message names ``where``).
    """
    trunk = default if trunk is None else trunk
    if not isinstance(trunk, Trunk):
        raise TypeError(f"{where}: trunk must be a Trunk (wrap a module in ModuleTrunk), got {type(trunk).__name__}")
    return trunk, trunk.build(in_features)
