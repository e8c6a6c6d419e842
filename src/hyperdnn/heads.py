"""Heads: how the hypernetwork's features become weights (the review's output strategies).

Every head maps trunk features ``(B, d)`` to a *raw* flat vector ``(B, numel)`` in the
spec's layout; :class:`~hyperdnn.hypernet.HyperNetwork` turns raw outputs into weights with
the hyperfan scale (see :mod:`hyperdnn.init`).

* :class:`Once` - generate once: one linear map to every number.
* :class:`MultiHead` - one head per tensor or per layer (or per glob group).
* :class:`ComponentWise` - a learned embedding per component (a tensor, or an output unit,
  i.e. a row of a weight matrix); one shared generator makes every component.
* :class:`Chunked` - a learned embedding per fixed-size chunk; one shared generator makes
  every chunk; the tail of the last chunk is discarded.
* :class:`LowRank` - a learned embedding per layer; one generator shared by the layers of the
  same shapes, each matrix made as the product of two generated low-rank factors: the head
  for adapters and LoRA factors (:mod:`hyperdnn.adapters`).

Component-wise and chunked heads run all components in one batched pass.

A :class:`Head` is a frozen description of what the user chooses (``Chunked(256, 4)``,
``Once()``): the :class:`~hyperdnn.hypernet.HyperNetwork` that uses it calls
:meth:`Head.build` with the spec, the trunk's width and the trunk, and gets the complete head
module (a :class:`HeadModule`: ``OnceModule``, ``MultiHeadModule``, ``ChunkedModule``,
``ComponentWiseModule``, ``LowRankModule``) in one step, parameters and all. Built-in heads
are registered by name (:func:`create_head`, :func:`list_heads`, :func:`register_head`;
installed packages add theirs through the ``hyperdnn.heads`` entry-point group).

Every head generates *tokens* (one for generate-once, one per group, component or chunk) and
takes its token architecture from the trunk it is built with (see :mod:`hyperdnn.trunks`):
with an ``MLP`` trunk tokens are independent and read out linearly (the descriptions above);
an ``rnn`` trunk generates them in order with a GRU/LSTM, an ``attention`` trunk runs a
transformer over them, and a ``cnn`` trunk reads each one out as a deconvolved image.

Example::

    >>> import torch, torch.nn as nn
    >>> from hyperdnn import HyperNetwork, LearnedLatent, Chunked, Target, create_trunk
    >>> target = Target(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    >>> for arch in ("mlp", "rnn", "attention", "cnn"):
    ...     hnet = HyperNetwork(target, LearnedLatent(4), create_trunk(arch), Chunked(16))
    ...     print(arch, tuple(hnet()["0.weight"].shape))
    mlp (8, 4)
    rnn (8, 4)
    attention (8, 4)
    cnn (8, 4)
"""

from __future__ import annotations

import fnmatch
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn._checks import check_choice, check_int, check_optional_int, check_widths, set_frozen
from hyperdnn._factories import factory_registry
from hyperdnn.spec import WeightSpec
from hyperdnn.target.kernels import row_linear
from hyperdnn.target.structure import call_sequential, plain_linear
from hyperdnn.target.swap import hooked
from hyperdnn.trunks import ACTIVATIONS, TokenMixer, TokenReadout, Trunk, make_activation

__all__ = [
    "Head",
    "HeadModule",
    "Once",
    "MultiHead",
    "ComponentWise",
    "Chunked",
    "LowRank",
    "OnceModule",
    "MultiHeadModule",
    "ChunkedModule",
    "ComponentWiseModule",
    "LowRankModule",
    "TokenEncoder",
    "TokenGenerator",
    "register_head",
    "create_head",
    "list_heads",
]


def _check_activation(where: str, activation: str) -> str:
    return check_choice(where, "activation", activation, sorted(ACTIVATIONS))


def _zero_bias(lin: nn.Linear) -> nn.Linear:
    if lin.bias is not None:
        nn.init.zeros_(lin.bias)
    return lin


def _token_parts(trunk: Trunk | None) -> TokenMixer | None:
    if trunk is not None and not isinstance(trunk, Trunk):
        raise TypeError(f"head.build: trunk must be a Trunk or None, got {type(trunk).__name__}")
    return None if trunk is None else trunk.token_mixer()


def _readout(trunk: Trunk | None, in_features: int, out_features: int) -> TokenReadout | None:
    return None if trunk is None else trunk.token_readout(in_features, out_features)


class _Stack(nn.Module):
    """Pointwise hidden layers and a readout: ``(..., in) -> (..., out)``.

    ``lead_activation`` puts an activation first (the input is a pre-activation sum).
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        activation: str,
        trunk: Trunk | None,
        lead_activation: bool = False,
        readout: TokenReadout | None = None,
    ):
        super().__init__()
        layers: list[nn.Module] = [make_activation(activation)] if lead_activation else []
        w = in_features
        for hd in hidden:
            layers += [nn.Linear(w, hd), make_activation(activation)]
            w = hd
        if readout is None:
            readout = _readout(trunk, w, out_features)
        final = readout if readout is not None else _zero_bias(nn.Linear(w, out_features))
        layers.append(final)
        self.net = nn.Sequential(*layers)
        self._finals = readout.final_layers() if readout is not None else [final]  # plain list: not re-registered

    def final_layers(self) -> list[nn.Module]:
        return list(self._finals)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return call_sequential(self._modules["net"], z)


class TokenEncoder(nn.Module):
    """Token features ``z[b, i] = mix(W_h h_b + W_e e_i + b)``: ``(B, d) -> (B, n, width)``.

    ``h`` and the ``n`` embeddings are each projected once and broadcast, never concatenated
    per token (the two projections are one linear layer over ``[h ; e]``, initialised as
    such). The mixer, if any, then lets tokens interact.

    Args:
        in_features: trunk feature width ``d``.
        num_tokens: learned embeddings to hold (``None``: embeddings are passed to
            :meth:`forward`, e.g. computed from component descriptions).
        embed_dim: embedding width (``0``: no embeddings, one token from ``h`` alone).
        width: token feature width.
        mixer: a :class:`~hyperdnn.trunks.TokenMixer` of that width, or ``None``.

    Example::

        >>> import torch
        >>> from hyperdnn.heads import TokenEncoder
        >>> enc = TokenEncoder(in_features=16, num_tokens=5, embed_dim=4, width=8)
        >>> enc(torch.randn(3, 16)).shape
        torch.Size([3, 5, 8])

    Raises:
        ValueError: (at construction) a mixer of another width; (in :meth:`forward`) no
            embeddings of shape ``(n, embed_dim)`` where the encoder holds none.
    """

    def __init__(
        self,
        in_features: int,
        num_tokens: int | None,
        embed_dim: int,
        width: int,
        mixer: TokenMixer | None = None,
    ):
        super().__init__()
        check_int("TokenEncoder", "in_features", in_features)
        check_optional_int("TokenEncoder", "num_tokens", num_tokens)
        check_int("TokenEncoder", "embed_dim", embed_dim, low=0)
        check_int("TokenEncoder", "width", width)
        if mixer is not None and not isinstance(mixer, TokenMixer):
            raise TypeError(f"TokenEncoder: mixer must be a TokenMixer or None, got {type(mixer).__name__}")
        if mixer is not None and mixer.width != width:
            raise ValueError(f"TokenEncoder: the mixer has width {mixer.width}, tokens have width {width}")
        self.embed_dim, self.width = embed_dim, width
        self.embeddings = (
            nn.Parameter(torch.randn(num_tokens, embed_dim)) if num_tokens is not None and embed_dim else None
        )
        self.proj_h = nn.Linear(in_features, width, bias=not embed_dim)
        # default init as if one Linear over the concatenation [h ; e]
        bound = 1.0 / math.sqrt(in_features + embed_dim)
        nn.init.uniform_(self.proj_h.weight, -bound, bound)
        if embed_dim:
            self.proj_e = nn.Linear(embed_dim, width)
            nn.init.uniform_(self.proj_e.weight, -bound, bound)
            nn.init.uniform_(self.proj_e.bias, -bound, bound)
        else:
            self.proj_e = None
            nn.init.uniform_(self.proj_h.bias, -bound, bound)
        self.mixer = mixer

    def forward(self, h: torch.Tensor, embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """``h (B, d)``, optional ``embeddings (n, embed_dim)`` -> ``(B, n, width)``."""
        # hot path: submodules and parameters read from their dicts (no nn.Module.__getattr__)
        modules = self._modules
        z = modules["proj_h"](h).unsqueeze(1)
        proj_e = modules.get("proj_e")
        if proj_e is not None:
            if embeddings is None:
                e = self._parameters.get("embeddings")  # its own: (num_tokens, embed_dim) by construction
                if e is None:
                    raise ValueError("TokenEncoder: this encoder holds no embeddings; pass embeddings (n, embed_dim)")
            else:
                e = embeddings
                if e.dim() != 2 or e.shape[1] != self.embed_dim:
                    raise ValueError(
                        f"TokenEncoder: expected embeddings of shape (n, {self.embed_dim}), got {tuple(e.shape)}"
                    )
            z = z + proj_e(e).unsqueeze(0)
        mixer = modules.get("mixer")
        return z if mixer is None else mixer(z)


class TokenGenerator(nn.Module):
    """Shared generator over tokens: ``out[b, i] = readout(mix(g([h_b ; e_i])))``.

    With no mixer and a linear readout (an ``MLP`` trunk, or no trunk) the first layer
    ``W_h h + W_e e`` is the first hidden layer (or, with ``hidden=()``, the output layer
    itself); a mixing trunk runs its mixer over the projected tokens and the pointwise
    ``hidden`` layers after it; a ``cnn`` trunk reads each token out as an image.

    Args:
        in_features: trunk feature width.
        num_tokens: number of tokens (chunks or components) with learned embeddings
            (``None``: pass embeddings to :meth:`forward`).
        embed_dim: token embedding width.
        hidden: hidden widths of the shared pointwise generator.
        out_features: numbers per token.
        activation: activation of those hidden layers.
        trunk: the trunk lending its token mixer and readout (``None``: pointwise, linear).

    Example::

        >>> import torch
        >>> from hyperdnn.heads import TokenGenerator
        >>> from hyperdnn.trunks import Attention
        >>> gen = TokenGenerator(16, 6, 4, (), 10, trunk=Attention(width=8, heads=2))
        >>> gen(torch.randn(3, 16)).shape
        torch.Size([3, 6, 10])
    """

    def __init__(
        self,
        in_features: int,
        num_tokens: int | None,
        embed_dim: int,
        hidden: Sequence[int],
        out_features: int,
        activation: str = "relu",
        trunk: Trunk | None = None,
    ):
        super().__init__()
        check_int("TokenGenerator", "in_features", in_features)
        check_optional_int("TokenGenerator", "num_tokens", num_tokens)
        check_int("TokenGenerator", "embed_dim", embed_dim, low=0)
        hidden = check_widths("TokenGenerator", "hidden", hidden)
        check_int("TokenGenerator", "out_features", out_features)
        _check_activation("TokenGenerator", activation)
        mixer = _token_parts(trunk)
        self.hidden = hidden
        if mixer is not None:
            self.encoder = TokenEncoder(in_features, num_tokens, embed_dim, mixer.width, mixer)
            self.body: _Stack | None = _Stack(mixer.width, hidden, out_features, activation, trunk)
        elif hidden:
            self.encoder = TokenEncoder(in_features, num_tokens, embed_dim, hidden[0])
            self.body = _Stack(hidden[0], hidden[1:], out_features, activation, trunk, lead_activation=True)
        else:
            readout = _readout(trunk, in_features, out_features)
            if readout is None:  # fused: the projection is the output layer
                self.encoder = TokenEncoder(in_features, num_tokens, embed_dim, out_features)
                if self.encoder.proj_e is not None:
                    nn.init.zeros_(self.encoder.proj_e.bias)
                else:
                    nn.init.zeros_(self.encoder.proj_h.bias)
                self.body = None
            else:
                self.encoder = TokenEncoder(in_features, num_tokens, embed_dim, in_features)
                self.body = _Stack(
                    in_features, (), out_features, activation, trunk, lead_activation=True, readout=readout
                )

    @property
    def fused(self) -> bool:
        """Whether the first projection is the output layer (no mixer, no hidden layers,
        linear readout)."""
        return self.body is None

    @property
    def embeddings(self) -> torch.Tensor | None:
        """The learned token embeddings ``(num_tokens, embed_dim)`` (``None`` if external)."""
        return self.encoder.embeddings

    @property
    def proj_h(self) -> nn.Linear:
        """The features' share of the first layer."""
        return self.encoder.proj_h

    @property
    def proj_e(self) -> nn.Linear | None:
        """The embeddings' share of the first layer."""
        return self.encoder.proj_e

    def final_layers(self) -> list[nn.Module]:
        """Layers whose scale sets the output variance."""
        if self.body is not None:
            return self.body.final_layers()
        return [m for m in (self.encoder.proj_h, self.encoder.proj_e) if m is not None]

    def forward(self, h: torch.Tensor, embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, in_features)`` (and optional ``(n, embed_dim)``) -> ``(B, n, out_features)``."""
        modules = self._modules  # hot path: no nn.Module.__getattr__
        z = modules["encoder"](h, embeddings)
        body = modules.get("body")
        return z if body is None else body(z)


# --------------------------------------------------------------------- built heads


class HeadModule(nn.Module, ABC):
    """What a :class:`Head` builds: ``forward(h)`` maps trunk features ``(B, in_features)`` to
    the raw flat output ``(B, spec.numel)`` in the spec's layout; complete (its parameters
    exist) when constructed.

    Args:
        spec: the tensors to generate.
        in_features: the trunk's feature width.
    """

    def __init__(self, spec: WeightSpec, in_features: int):
        super().__init__()
        where = type(self).__name__
        if not isinstance(spec, WeightSpec):
            raise TypeError(f"{where}: spec must be a WeightSpec, got {type(spec).__name__}")
        check_int(where, "in_features", in_features)
        self.spec = spec

    @abstractmethod
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``(B, in_features)`` -> raw ``(B, spec.numel)``."""

    @abstractmethod
    def calibration_groups(self) -> list[tuple[list[nn.Module], list[str]]]:
        """(final layers, tensor names they produce): each group is rescaled together so
        that its raw output has unit variance at initialisation."""


def _config(module: HeadModule, config: Any, kind: type) -> Any:
    """``config`` if it is a ``kind`` description (else a ``TypeError`` naming the module)."""
    if not isinstance(config, kind):
        raise TypeError(f"{type(module).__name__}: config must be a {kind.__name__}, got {type(config).__name__}")
    return config


class OnceModule(HeadModule):
    """Generate once, built: one token for all ``spec.numel`` numbers (see :class:`Once`).

    Args:
        spec: the tensors to generate.
        in_features: the trunk's feature width.
        trunk: the trunk lending its token mixer and readout (``None``: a linear layer).
    """

    def __init__(self, spec: WeightSpec, in_features: int, trunk: Trunk | None = None):
        super().__init__(spec, in_features)
        gen = TokenGenerator(in_features, 1, 0, (), spec.numel, trunk=trunk)
        self.linear: nn.Linear | None = None
        self.generator: TokenGenerator | None = None
        if gen.fused:  # a single linear layer from the features to every number
            self.linear = gen.encoder.proj_h
        else:
            self.generator = gen

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        linear = self._modules.get("linear")  # hot path: no nn.Module.__getattr__
        if linear is not None:
            if h.dim() == 2 and h.shape[0] == 1 and plain_linear(linear):  # (eager only)
                # one context: a matrix-vector product where it is faster (see row_linear)
                p = linear._parameters
                return row_linear(h, p["weight"], p["bias"])
            return linear(h)
        return self._modules["generator"](h)[:, 0]

    def scaled(self, h: torch.Tensor, scale: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor | None:
        """``mean + scale * self(h)`` with ``scale`` and ``mean`` (each ``(numel,)``) folded
        into the one linear layer, ``h @ (scale * W)^T + (scale * b + mean)``, where that
        passes over fewer numbers: more rows of ``h`` than features (weights for a batch of
        contexts). The same math; ``None`` where it does not apply (a generator instead of one
        layer, few rows, hooks, another scale or mean shape)."""
        lin = self.linear
        shape = (lin.out_features,) if lin is not None else None
        if (
            lin is None
            or h.dim() != 2
            or h.shape[0] <= h.shape[1]
            or scale.shape != shape
            or (mean is not None and mean.shape != shape)
            or hooked(self)
            or hooked(lin)
        ):
            return None
        bias = None if lin.bias is None else lin.bias * scale
        if mean is not None:
            bias = mean if bias is None else bias + mean
        return F.linear(h, lin.weight * scale.unsqueeze(1), bias)

    def calibration_groups(self):
        finals = [self.linear] if self.linear is not None else self.generator.final_layers()
        return [(finals, list(self.spec.names))]


class MultiHeadModule(HeadModule):
    """One output head per group of tensors, built (see :class:`MultiHead`).

    Args:
        spec, in_features, trunk: as for :class:`OnceModule`.
        config: the :class:`MultiHead` description (groups, hidden, activation, embed_dim).

    Raises:
        ValueError: a tensor matches no glob, or a glob matches no tensor.
    """

    def __init__(self, spec: WeightSpec, in_features: int, trunk: Trunk | None, config: MultiHead):
        super().__init__(spec, in_features)
        groups = _config(self, config, MultiHead).groups
        if groups == "tensor":
            members = [[t.name] for t in spec]
        elif groups == "layer":
            by_layer: dict[int, list[str]] = {}
            for t in spec:
                by_layer.setdefault(t.layer_index, []).append(t.name)
            members = list(by_layer.values())
        else:
            members = [[] for _ in groups]
            unmatched = []
            for t in spec:
                for i, pat in enumerate(groups):
                    if fnmatch.fnmatchcase(t.name, pat):
                        members[i].append(t.name)
                        break
                else:
                    unmatched.append(t.name)
            empty = [g for g, m in zip(groups, members, strict=False) if not m]
            if unmatched or empty:
                raise ValueError(
                    f"MultiHead: tensors {unmatched} match no group; groups {empty} match no tensor that an "
                    f"earlier group did not take (a tensor goes to the first group it matches)"
                )
        self.members = members
        mixer = _token_parts(trunk)
        if mixer is None:
            self.encoder = None
            width = in_features
        else:
            self.encoder = TokenEncoder(in_features, len(members), config.embed_dim, mixer.width, mixer)
            width = mixer.width
        self.heads = nn.ModuleList(
            _Stack(width, config.hidden, sum(spec[n].numel for n in names), config.activation, trunk)
            for names in members
        )
        # gather index from concatenated group outputs into spec order
        pos, offset = {}, 0
        for names in members:
            for n in names:
                pos[n] = offset
                offset += spec[n].numel
        idx = torch.cat([torch.arange(pos[t.name], pos[t.name] + t.numel) for t in spec])
        self._identity = bool(torch.equal(idx, torch.arange(spec.numel)))
        self.register_buffer("_order", idx, persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            out = torch.cat([head(h) for head in self.heads], dim=-1)
        else:
            z = self.encoder(h)
            out = torch.cat([head(z[:, g]) for g, head in enumerate(self.heads)], dim=-1)
        return out if self._identity else out.index_select(-1, self._order)

    def calibration_groups(self):
        return [(head.final_layers(), names) for head, names in zip(self.heads, self.members, strict=False)]


class ChunkedModule(HeadModule):
    """Chunk-wise generation, built (see :class:`Chunked`).

    Args:
        spec, in_features, trunk: as for :class:`OnceModule`.
        config: the :class:`Chunked` description (chunk_size, embed_dim, hidden, activation).
    """

    def __init__(self, spec: WeightSpec, in_features: int, trunk: Trunk | None, config: Chunked):
        super().__init__(spec, in_features)
        self.chunk_size = _config(self, config, Chunked).chunk_size
        self.generator = TokenGenerator(
            in_features, self.num_chunks, config.embed_dim, config.hidden, self.chunk_size, config.activation, trunk
        )

    @property
    def num_chunks(self) -> int:
        """``ceil(spec.numel / chunk_size)``."""
        return -(-self.spec.numel // self.chunk_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.forward_padded(h)[:, : self.spec.numel]

    def forward_padded(self, h: torch.Tensor) -> torch.Tensor:
        """Every chunk, the last one's tail included: ``(B, num_chunks * chunk_size)``, whose
        first ``spec.numel`` numbers per row are :meth:`forward`'s."""
        return self._modules["generator"](h).reshape(h.shape[0], -1)

    def calibration_groups(self):
        return [(self.generator.final_layers(), list(self.spec.names))]


class ComponentWiseModule(HeadModule):
    """Component-wise generation, built (see :class:`ComponentWise`).

    Args:
        spec, in_features, trunk: as for :class:`OnceModule`.
        config: the :class:`ComponentWise` description (granularity, embed_dim, hidden,
            activation).
    """

    def __init__(self, spec: WeightSpec, in_features: int, trunk: Trunk | None, config: ComponentWise):
        super().__init__(spec, in_features)
        comps = ComponentWise.components(spec, _config(self, config, ComponentWise).granularity)
        self.max_size = max(s for _, s in comps)
        self.num_components = len(comps)
        self.generator = TokenGenerator(
            in_features, len(comps), config.embed_dim, config.hidden, self.max_size, config.activation, trunk
        )
        idx = torch.cat([torch.arange(s) + i * self.max_size for i, (_, s) in enumerate(comps)])
        self.register_buffer("_gather", idx, persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.generator(h).reshape(h.shape[0], -1)  # (B, C * max)
        return out.index_select(1, self._gather)

    def calibration_groups(self):
        return [(self.generator.final_layers(), list(self.spec.names))]


#: added to the mean square of a LowRank factor before its inverse square root
_RMS_EPS = 1e-8


class LowRankModule(HeadModule):
    """Low-rank generation, built (see :class:`LowRank`).

    The spec's tensors are grouped by the module that owns them (a *layer*), and the layers by
    their tensors' shapes; each group has one :class:`TokenGenerator` with a learned embedding
    per layer, which emits, per layer, every matrix as two factors (``rows x rank`` and
    ``cols x rank``) and every other tensor whole. A matrix is ``U V^T / sqrt(rank)`` with
    ``V`` scaled to unit root-mean-square (per sample and layer; the scale lives in ``U``, so
    every rank-``rank`` matrix can still be made): its entries have exactly the variance of
    ``U``'s, which calibration makes 1, whatever the spread of the generator's features.

    Args:
        spec, in_features, trunk: as for :class:`OnceModule`.
        config: the :class:`LowRank` description (rank, embed_dim, hidden, activation).

    Raises:
        ValueError: a rank larger than a generated matrix (every such tensor named).
    """

    def __init__(self, spec: WeightSpec, in_features: int, trunk: Trunk | None, config: LowRank):
        super().__init__(spec, in_features)
        self.rank = _config(self, config, LowRank).rank
        layers: dict[int, list[str]] = {}
        for t in spec:
            layers.setdefault(t.layer_index, []).append(t.name)
        too_large = [
            f"{t.name!r} ({t.shape[0]} x {t.numel // t.shape[0]}: at most {min(t.shape[0], t.numel // t.shape[0])})"
            for t in spec
            if self.rank is not None and len(t.shape) >= 2 and self.rank > min(t.shape[0], t.numel // t.shape[0])
        ]
        if too_large:
            raise ValueError(
                f"LowRank: rank {self.rank} is larger than a generated matrix; it must be at most min(rows, "
                f"columns) of each: {', '.join(too_large)}"
            )
        by_shapes: dict[tuple[tuple[int, ...], ...], list[list[str]]] = {}
        for names in layers.values():
            by_shapes.setdefault(tuple(spec[n].shape for n in names), []).append(names)
        #: group -> layer -> the names of its tensors
        self.groups = list(by_shapes.values())
        #: per group, per tensor of a layer: (rows, columns, factored)
        self._layouts = [[self._layout(spec[n].shape) for n in group[0]] for group in self.groups]
        self.generators = nn.ModuleList(
            TokenGenerator(
                in_features,
                len(group),
                config.embed_dim,
                config.hidden,
                sum(self._numbers(layout) for layout in layouts),
                config.activation,
                trunk,
            )
            for group, layouts in zip(self.groups, self._layouts)
        )
        pos, offset = {}, 0
        for group in self.groups:
            for names in group:
                for n in names:
                    pos[n] = offset
                    offset += spec[n].numel
        idx = torch.cat([torch.arange(pos[t.name], pos[t.name] + t.numel) for t in spec])
        self._identity = bool(torch.equal(idx, torch.arange(spec.numel)))
        self.register_buffer("_order", idx, persistent=False)

    def _layout(self, shape: tuple[int, ...]) -> tuple[int, int, bool]:
        rows = shape[0] if shape else 1
        cols = math.prod(shape) // rows if rows else 0
        return rows, cols, self.rank is not None and len(shape) >= 2

    def _numbers(self, layout: tuple[int, int, bool]) -> int:
        rows, cols, factored = layout
        return self.rank * (rows + cols) if factored else rows * cols

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        parts = []
        for generator, layouts in zip(self.generators, self._layouts):
            out = generator(h)  # (B, layers, numbers per layer)
            pieces, at = [], 0
            for rows, cols, factored in layouts:
                if factored:
                    k = self.rank
                    u = out[..., at : at + rows * k].unflatten(-1, (rows, k))
                    v = out[..., at + rows * k : at + (rows + cols) * k].unflatten(-1, (cols, k))
                    v = v * torch.rsqrt(v.pow(2).mean(dim=(-2, -1), keepdim=True) + _RMS_EPS)  # unit RMS
                    pieces.append((u @ v.transpose(-1, -2)).flatten(-2) * k**-0.5)
                    at += (rows + cols) * k
                else:
                    pieces.append(out[..., at : at + rows * cols])
                    at += rows * cols
            parts.append(torch.cat(pieces, dim=-1).flatten(1))  # (B, layers * numel of a layer)
        out = torch.cat(parts, dim=-1)
        return out if self._identity else out.index_select(-1, self._order)

    def calibration_groups(self):
        return [
            (generator.final_layers(), [n for names in group for n in names])
            for generator, group in zip(self.generators, self.groups)
        ]


# --------------------------------------------------------------------- descriptions


class Head(ABC):
    """An output strategy: a frozen description of what the user chooses.

    :meth:`build` makes the complete :class:`HeadModule` for a spec, from trunk features of
    width ``in_features``, with the trunk's token mixer and readout. Every head generates
    *tokens* (one for :class:`Once`, one per group for :class:`MultiHead`, one per component
    or chunk for :class:`ComponentWise` and :class:`Chunked`); the trunk decides how tokens
    are mixed and read out (see :mod:`hyperdnn.trunks`). Without a trunk (or with an ``MLP``)
    tokens are independent and read out linearly. A description builds any number of
    independent modules and never changes.
    """

    @abstractmethod
    def build(self, spec: WeightSpec, in_features: int, trunk: Trunk | None = None) -> HeadModule:
        """The head module for ``spec`` from features of width ``in_features``.

        Raises:
            TypeError: ``spec`` is not a :class:`~hyperdnn.spec.WeightSpec`, ``trunk`` not a
                :class:`~hyperdnn.trunks.Trunk`.
            ValueError: the spec does not fit the head (a glob matching nothing, a token
                larger than the trunk's readout can emit).
        """


HEADS, register_head, create_head, list_heads = factory_registry("head", Head, "hyperdnn.heads")
"""``register_head(name, factory)`` (or ``@register_head(name)``), ``create_head(name, **kwargs)``,
``list_heads(pattern=None)``: head factories by name (see :mod:`hyperdnn._factories`)."""


@register_head("once")
@dataclass(frozen=True)
class Once(Head):
    """Generate once: one token for all ``numel`` numbers.

    With an ``MLP`` trunk this is a single linear layer from the features to every number;
    a mixing trunk (``rnn``, ``attention``) runs its mixer over the one token first, and the
    ``cnn`` trunk generates the whole flat vector as one image.
    """

    def build(self, spec: WeightSpec, in_features: int, trunk: Trunk | None = None) -> OnceModule:
        return OnceModule(spec, in_features, trunk)


@register_head("multihead")
@dataclass(frozen=True)
class MultiHead(Head):
    """One output head per group of tensors.

    Args:
        groups: ``"tensor"`` (a head per tensor), ``"layer"`` (a head per owning module), or
            a list of globs (a head per glob; every tensor must match one).
        hidden: hidden widths of each head's own MLP (``()``: a linear head).
        activation: activation of those hidden layers.
        embed_dim: width of each group's learned embedding, used when the trunk mixes
            tokens (``rnn``: the groups are generated in order, layer after layer;
            ``attention``: the groups attend to each other).
    """

    groups: str | Sequence[str] = "layer"
    hidden: Sequence[int] = ()
    activation: str = "relu"
    embed_dim: int = 8

    def __post_init__(self) -> None:
        groups = self.groups
        expected = "'tensor', 'layer' or a non-empty list of glob strings"
        if isinstance(groups, str):
            if groups not in ("tensor", "layer"):
                raise ValueError(f"MultiHead: groups must be {expected}, got {groups!r}")
        elif not isinstance(groups, Sequence) or not all(isinstance(g, str) for g in groups):
            shown = list(groups) if isinstance(groups, Sequence) else groups
            raise TypeError(f"MultiHead: groups must be {expected}, got {shown!r} ({type(groups).__name__})")
        elif not groups:
            raise ValueError(f"MultiHead: groups must be {expected}, got an empty {type(groups).__name__}")
        else:
            groups = tuple(groups)
        set_frozen(self, groups=groups, hidden=check_widths("MultiHead", "hidden", self.hidden))
        _check_activation("MultiHead", self.activation)
        check_int("MultiHead", "embed_dim", self.embed_dim)

    def build(self, spec: WeightSpec, in_features: int, trunk: Trunk | None = None) -> MultiHeadModule:
        return MultiHeadModule(spec, in_features, trunk, self)


@register_head("chunked")
@dataclass(frozen=True)
class Chunked(Head):
    """Chunk-wise generation: ``ceil(numel / chunk_size)`` chunks, each from one shared
    generator fed the features and the chunk's learned embedding; tail discarded.

    Args:
        chunk_size: numbers per chunk.
        embed_dim: chunk embedding width.
        hidden: hidden widths of the shared chunk generator.
        activation: activation of those hidden layers.
    """

    chunk_size: int
    embed_dim: int = 8
    hidden: Sequence[int] = ()
    activation: str = "relu"

    def __post_init__(self) -> None:
        check_int("Chunked", "chunk_size", self.chunk_size)
        check_int("Chunked", "embed_dim", self.embed_dim)
        set_frozen(self, hidden=check_widths("Chunked", "hidden", self.hidden))
        _check_activation("Chunked", self.activation)

    def build(self, spec: WeightSpec, in_features: int, trunk: Trunk | None = None) -> ChunkedModule:
        return ChunkedModule(spec, in_features, trunk, self)


@register_head("componentwise")
@dataclass(frozen=True)
class ComponentWise(Head):
    """Component-wise generation: one learned embedding per component, one shared generator.

    Args:
        granularity: ``"tensor"`` (a component per generated tensor) or ``"unit"`` (a
            component per output unit: each row along dim 0 of a tensor with 2+ dims; 1-D
            tensors are one component each).
        embed_dim: component embedding width.
        hidden: hidden widths of the shared generator.
        activation: activation of those hidden layers.

    The generator emits the size of the largest component; each component keeps its first
    ``size`` numbers, gathered into the spec layout with one index (no loop).
    """

    granularity: str = "unit"
    embed_dim: int = 8
    hidden: Sequence[int] = ()
    activation: str = "relu"

    def __post_init__(self) -> None:
        check_choice("ComponentWise", "granularity", self.granularity, ("tensor", "unit"))
        check_int("ComponentWise", "embed_dim", self.embed_dim)
        set_frozen(self, hidden=check_widths("ComponentWise", "hidden", self.hidden))
        _check_activation("ComponentWise", self.activation)

    @staticmethod
    def components(spec: WeightSpec, granularity: str) -> list[tuple[str, int]]:
        """(tensor name, component size) in spec layout order."""
        comps = []
        for t in spec:
            if granularity == "unit" and len(t.shape) >= 2:
                comps += [(t.name, t.numel // t.shape[0])] * t.shape[0]
            else:
                comps.append((t.name, t.numel))
        return comps

    def build(self, spec: WeightSpec, in_features: int, trunk: Trunk | None = None) -> ComponentWiseModule:
        return ComponentWiseModule(spec, in_features, trunk, self)


@register_head("lowrank")
@dataclass(frozen=True)
class LowRank(Head):
    """Low-rank generation, the head for adapters and LoRA factors: a token per layer, one
    generator shared by the layers of the same shapes, every matrix a product of two low-rank
    factors.

    A *layer* is the module that owns a group of tensors (an adapter's ``down`` or ``up``, a
    LoRA factor, a ``Linear``). Layers with the same tensor shapes share one generator and
    differ by a learned layer embedding (the layer-shared hypernetwork of HyperFormer++, Karimi
    Mahabadi et al., 2021): the generator's size does not grow with the number of adapted
    layers. With ``rank``, a matrix of ``rows x cols`` (a tensor of 2+ dims, flattened after
    its first) is generated as ``U V^T / sqrt(rank)`` (``V`` at unit root-mean-square) from
    ``rank * (rows + cols)`` numbers instead of ``rows * cols``, which shrinks the generator's
    last layer by the same factor; vectors (biases, norm scales) are generated whole.

    Args:
        rank: the rank of every generated matrix, at most ``min(rows, cols)`` of each
            (``None``: matrices are generated whole).
        embed_dim: width of each layer's learned embedding.
        hidden: hidden widths of the shared generator (with ``()`` and an ``MLP`` trunk the
            layer embedding only shifts the output; a hidden layer mixes context and layer).
        activation: activation of those hidden layers.

    A mixing trunk (``rnn``, ``attention``) mixes the tokens of one group (its layers in
    order); a ``cnn`` trunk reads each layer's numbers out as an image.

    Example::

        >>> import torch, torch.nn as nn
        >>> from hyperdnn import HyperNetwork, LowRank, Target, TaskEmbedding, insert_adapters
        >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> names = insert_adapters(net, ["0", "2"], bottleneck=4)
        >>> hnet = HyperNetwork(Target(net, select=names), TaskEmbedding(5, 4), head=LowRank(rank=2, hidden=(8,)))
        >>> len(hnet.head.generators)     # every down shares one generator, every up another
        2
        >>> hnet(3)["2.adapter.down.weight"].shape
        torch.Size([4, 16])
    """

    rank: int | None = None
    embed_dim: int = 8
    hidden: Sequence[int] = ()
    activation: str = "relu"

    def __post_init__(self) -> None:
        check_optional_int("LowRank", "rank", self.rank)
        check_int("LowRank", "embed_dim", self.embed_dim)
        set_frozen(self, hidden=check_widths("LowRank", "hidden", self.hidden))
        _check_activation("LowRank", self.activation)

    def build(self, spec: WeightSpec, in_features: int, trunk: Trunk | None = None) -> LowRankModule:
        return LowRankModule(spec, in_features, trunk, self)
