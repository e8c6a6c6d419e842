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

Component-wise and chunked heads run all components in one batched pass.
"""

from __future__ import annotations

import fnmatch
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import nn

from hyperdnn.spec import WeightSpec
from hyperdnn.trunks import make_activation

__all__ = [
    "Head",
    "Once",
    "MultiHead",
    "ComponentWise",
    "Chunked",
    "TokenGenerator",
    "register_head",
    "create_head",
    "list_heads",
]


class Head(nn.Module, ABC):
    """Abstract head: ``bind(spec, in_features)`` creates parameters; ``forward(h)`` returns
    the raw flat output ``(B, spec.numel)``."""

    spec: WeightSpec | None = None

    @abstractmethod
    def bind(self, spec: WeightSpec, in_features: int) -> None:
        """Create the parameters for ``spec`` from features of width ``in_features``."""

    @abstractmethod
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``(B, in_features)`` -> raw ``(B, spec.numel)``."""

    @abstractmethod
    def calibration_groups(self) -> list[tuple[list[nn.Linear], list[str]]]:
        """(final layers, tensor names they produce): each group is rescaled together so
        that its raw output has unit variance at initialisation."""

    def _require_bound(self) -> WeightSpec:
        if self.spec is None:
            raise RuntimeError(
                f"{type(self).__name__} is not bound: pass it to a HyperNetwork or call bind(spec, in_features)"
            )
        return self.spec


def _zero_bias(lin: nn.Linear) -> nn.Linear:
    if lin.bias is not None:
        nn.init.zeros_(lin.bias)
    return lin


class Once(Head):
    """Generate once: a single linear layer from features to all ``numel`` numbers."""

    def bind(self, spec: WeightSpec, in_features: int) -> None:
        self.spec = spec
        self.linear = _zero_bias(nn.Linear(in_features, spec.numel))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        self._require_bound()
        return self.linear(h)

    def calibration_groups(self):
        spec = self._require_bound()
        return [([self.linear], list(spec.names))]


def _mlp(
    in_features: int, hidden: Sequence[int], out_features: int, activation: str
) -> tuple[nn.Sequential, nn.Linear]:
    layers: list[nn.Module] = []
    w = in_features
    for h in hidden:
        layers += [nn.Linear(w, h), make_activation(activation)]
        w = h
    final = _zero_bias(nn.Linear(w, out_features))
    layers.append(final)
    return nn.Sequential(*layers), final


class MultiHead(Head):
    """One output head per group of tensors.

    Args:
        groups: ``"tensor"`` (a head per tensor), ``"layer"`` (a head per owning module), or
            a list of globs (a head per glob; every tensor must match one).
        hidden: hidden widths of each head's own MLP (``()``: a linear head).
        activation: activation of those hidden layers.
    """

    def __init__(self, groups: str | Sequence[str] = "layer", hidden: Sequence[int] = (), activation: str = "relu"):
        super().__init__()
        if isinstance(groups, str) and groups not in ("tensor", "layer"):
            raise ValueError(f"MultiHead: groups must be 'tensor', 'layer' or a list of globs, got {groups!r}")
        self.groups, self.hidden, self.activation = groups, tuple(hidden), activation

    def bind(self, spec: WeightSpec, in_features: int) -> None:
        self.spec = spec
        if self.groups == "tensor":
            members = [[t.name] for t in spec]
        elif self.groups == "layer":
            by_layer: dict[int, list[str]] = {}
            for t in spec:
                by_layer.setdefault(t.layer_index, []).append(t.name)
            members = list(by_layer.values())
        else:
            members = [[] for _ in self.groups]
            unmatched = []
            for t in spec:
                for i, pat in enumerate(self.groups):
                    if fnmatch.fnmatchcase(t.name, pat):
                        members[i].append(t.name)
                        break
                else:
                    unmatched.append(t.name)
            empty = [g for g, m in zip(self.groups, members, strict=False) if not m]
            if unmatched or empty:
                raise ValueError(f"MultiHead: tensors {unmatched} match no group; groups {empty} match no tensor")
        self.members = members
        heads, finals = [], []
        for names in members:
            net, final = _mlp(in_features, self.hidden, sum(spec[n].numel for n in names), self.activation)
            heads.append(net)
            finals.append(final)
        self.heads = nn.ModuleList(heads)
        self._finals = finals
        order = {n: i for i, n in enumerate(spec.names)}
        # gather index from concatenated group outputs into spec order
        pos, offset = {}, 0
        for names in members:
            for n in names:
                pos[n] = offset
                offset += spec[n].numel
        idx = torch.cat([torch.arange(pos[t.name], pos[t.name] + t.numel) for t in spec])
        self._identity = bool(torch.equal(idx, torch.arange(spec.numel)))
        self.register_buffer("_order", idx, persistent=False)
        del order

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        self._require_bound()
        out = torch.cat([head(h) for head in self.heads], dim=-1)
        return out if self._identity else out.index_select(-1, self._order)

    def calibration_groups(self):
        self._require_bound()
        return [([final], names) for final, names in zip(self._finals, self.members, strict=False)]


class TokenGenerator(nn.Module):
    """Shared generator over tokens: ``out[b, i] = g([h_b ; e_i])``.

    The first layer is split as ``W_h h + W_e e`` so that ``h`` and the ``n`` embeddings are
    each projected once and broadcast, never concatenated per token.

    Args:
        in_features: trunk feature width.
        num_tokens: number of tokens (chunks or components).
        embed_dim: token embedding width.
        hidden: hidden widths of the shared generator (``()``: one linear layer).
        out_features: numbers per token.
    """

    def __init__(
        self,
        in_features: int,
        num_tokens: int,
        embed_dim: int,
        hidden: Sequence[int],
        out_features: int,
        activation: str = "relu",
    ):
        super().__init__()
        self.embeddings = nn.Parameter(torch.randn(num_tokens, embed_dim))
        first = hidden[0] if hidden else out_features
        self.proj_h = nn.Linear(in_features, first, bias=False)
        self.proj_e = nn.Linear(embed_dim, first)
        # default init as if one Linear over the concatenation [h ; e]
        bound = 1.0 / math.sqrt(in_features + embed_dim)
        for lin in (self.proj_h, self.proj_e):
            nn.init.uniform_(lin.weight, -bound, bound)
        nn.init.uniform_(self.proj_e.bias, -bound, bound)
        rest: list[nn.Module] = []
        if hidden:
            rest.append(make_activation(activation))
            w = hidden[0]
            for hd in hidden[1:]:
                rest += [nn.Linear(w, hd), make_activation(activation)]
                w = hd
            self.final = _zero_bias(nn.Linear(w, out_features))
            rest.append(self.final)
        else:
            nn.init.zeros_(self.proj_e.bias)
        self.rest = nn.Sequential(*rest)
        self.hidden = tuple(hidden)

    def final_layers(self) -> list[nn.Linear]:
        """Layers whose scale sets the output variance."""
        return [self.final] if self.hidden else [self.proj_h, self.proj_e]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``(B, in_features)`` -> ``(B, num_tokens, out_features)``."""
        z = self.proj_h(h).unsqueeze(1) + self.proj_e(self.embeddings).unsqueeze(0)
        return self.rest(z) if self.hidden else z


class Chunked(Head):
    """Chunk-wise generation: ``ceil(numel / chunk_size)`` chunks, each from one shared
    generator fed the features and the chunk's learned embedding; tail discarded.

    Args:
        chunk_size: numbers per chunk.
        embed_dim: chunk embedding width.
        hidden: hidden widths of the shared chunk generator.
        activation: activation of those hidden layers.
    """

    def __init__(self, chunk_size: int, embed_dim: int = 8, hidden: Sequence[int] = (), activation: str = "relu"):
        super().__init__()
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"Chunked: chunk_size must be an int >= 1, got {chunk_size!r}")
        if not isinstance(embed_dim, int) or embed_dim < 1:
            raise ValueError(f"Chunked: embed_dim must be an int >= 1, got {embed_dim!r}")
        self.chunk_size, self.embed_dim, self.hidden, self.activation = chunk_size, embed_dim, tuple(hidden), activation

    @property
    def num_chunks(self) -> int:
        spec = self._require_bound()
        return -(-spec.numel // self.chunk_size)

    def bind(self, spec: WeightSpec, in_features: int) -> None:
        self.spec = spec
        self.generator = TokenGenerator(
            in_features, self.num_chunks, self.embed_dim, self.hidden, self.chunk_size, self.activation
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        spec = self._require_bound()
        out = self.generator(h)  # (B, n, chunk)
        return out.reshape(h.shape[0], -1)[:, : spec.numel]

    def calibration_groups(self):
        spec = self._require_bound()
        return [(self.generator.final_layers(), list(spec.names))]


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

    def __init__(
        self, granularity: str = "unit", embed_dim: int = 8, hidden: Sequence[int] = (), activation: str = "relu"
    ):
        super().__init__()
        if granularity not in ("tensor", "unit"):
            raise ValueError(f"ComponentWise: granularity must be 'tensor' or 'unit', got {granularity!r}")
        self.granularity, self.embed_dim, self.hidden, self.activation = (
            granularity,
            embed_dim,
            tuple(hidden),
            activation,
        )

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

    def bind(self, spec: WeightSpec, in_features: int) -> None:
        self.spec = spec
        comps = self.components(spec, self.granularity)
        self.max_size = max(s for _, s in comps)
        self.num_components = len(comps)
        self.generator = TokenGenerator(
            in_features, len(comps), self.embed_dim, self.hidden, self.max_size, self.activation
        )
        idx = torch.cat([torch.arange(s) + i * self.max_size for i, (_, s) in enumerate(comps)])
        self.register_buffer("_gather", idx, persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        self._require_bound()
        out = self.generator(h).reshape(h.shape[0], -1)  # (B, C * max)
        return out.index_select(1, self._gather)

    def calibration_groups(self):
        spec = self._require_bound()
        return [(self.generator.final_layers(), list(spec.names))]


_HEADS: dict[str, Callable[..., Head]] = {}


def register_head(name: str, factory: Callable[..., Head]) -> None:
    """Register a head factory under ``name``."""
    if name in _HEADS:
        raise ValueError(f"head {name!r} is already registered")
    _HEADS[name] = factory


def create_head(name: str, **kwargs) -> Head:
    """Create a registered head by name."""
    if name not in _HEADS:
        raise ValueError(f"unknown head {name!r}; registered: {list_heads()}")
    return _HEADS[name](**kwargs)


def list_heads() -> list[str]:
    """Names of the registered heads."""
    return sorted(_HEADS)


register_head("once", Once)
register_head("multihead", MultiHead)
register_head("componentwise", ComponentWise)
register_head("chunked", Chunked)
