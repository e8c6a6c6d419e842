"""WeightSpec: which tensors of a target module a hypernetwork generates.

A :class:`WeightSpec` is the contract between a hypernetwork and its target. It is an
ordered tuple of :class:`TensorSpec` entries, one per generated parameter, each with its
dotted name (exactly as in ``module.named_parameters()``), shape, :class:`Role`, fan-in,
fan-out and the statistics of the target layer's own default initialisation.

Example::

    >>> import torch.nn as nn
    >>> from hyperdnn import WeightSpec
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> spec = WeightSpec.from_module(net)
    >>> spec.names
    ('0.weight', '0.bias', '2.weight', '2.bias')
    >>> spec.numel
    58
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn

from hyperdnn.siren import SirenLinear

__all__ = ["Role", "TensorSpec", "WeightSpec", "Selection"]


class Role(str, Enum):
    """What a generated tensor does in its layer; used by init and residual forms."""

    WEIGHT = "weight"
    BIAS = "bias"
    NORM_SCALE = "norm_scale"
    NORM_SHIFT = "norm_shift"
    EMBEDDING = "embedding"
    OTHER = "other"


_NORM_TYPES = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
)
_CONV_TYPES = (nn.modules.conv._ConvNd,)
_RNN_TYPES = (nn.RNNBase,)


@dataclass(frozen=True)
class TensorSpec:
    """One generated tensor.

    Attributes:
        name: dotted parameter name, as in ``module.named_parameters()``.
        shape: the tensor's shape (without any batch dims).
        role: the tensor's :class:`Role` in its layer.
        fan_in: fan-in as PyTorch's own initialisers compute it for this layer.
        fan_out: fan-out, likewise.
        module_type: class name of the owning module (``"Linear"``, ``"Conv2d"``...).
        init_mean: mean of the owning layer's default initialisation of this tensor.
        init_std: standard deviation of that default initialisation (0 for constants).
        layer_index: position of the owning module among the generated modules (0-based).
    """

    name: str
    shape: tuple[int, ...]
    role: Role
    fan_in: int
    fan_out: int
    module_type: str
    init_mean: float
    init_std: float
    layer_index: int = 0

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)


Selection = None | str | Sequence[str] | type | tuple[type, ...] | Callable[[str, nn.Parameter], bool]
"""What to generate: ``None`` (every parameter), a glob or list of globs on the dotted name,
a module type or tuple of types (every parameter owned directly by such modules), or a
predicate ``(name, parameter) -> bool``."""


def _owner(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    *path, attr = name.split(".")
    owner = module
    for p in path:
        owner = getattr(owner, p)
    return owner, attr


def _torch_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) < 2:
        n = shape[0] if shape else 1
        return n, n
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _describe(owner: nn.Module, attr: str, p: torch.Tensor) -> tuple[Role, int, int, float, float]:
    """Role, fans and default-init statistics of parameter ``attr`` of ``owner``."""
    shape = tuple(p.shape)
    uniform_var = lambda bound: bound * bound / 3.0  # noqa: E731 - variance of U(-b, b)
    if isinstance(owner, SirenLinear):  # before nn.Linear: SIREN's own bounds (hyperdnn.siren)
        fan_in, fan_out = _torch_fans(tuple(owner.weight.shape))
        if attr == "bias":
            return Role.BIAS, fan_in, fan_out, 0.0, math.sqrt(uniform_var(owner.bias_bound))
        return Role.WEIGHT, fan_in, fan_out, 0.0, math.sqrt(uniform_var(owner.weight_bound))
    if isinstance(owner, (nn.Linear, nn.Bilinear) + _CONV_TYPES):
        w = owner.weight
        fan_in, fan_out = _torch_fans(tuple(w.shape))
        if isinstance(owner, nn.Bilinear):
            fan_in = w.shape[1]
        # kaiming_uniform_(a=sqrt(5)) and the bias rule both give U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        std = math.sqrt(uniform_var(1.0 / math.sqrt(max(fan_in, 1))))
        role = Role.BIAS if attr == "bias" else Role.WEIGHT
        return role, fan_in, fan_out, 0.0, std
    if isinstance(owner, _NORM_TYPES):
        n = shape[0] if shape else 1
        if attr == "weight":
            return Role.NORM_SCALE, n, n, 1.0, 0.0
        return Role.NORM_SHIFT, n, n, 0.0, 0.0
    if isinstance(owner, nn.Embedding):
        return Role.EMBEDDING, shape[1], shape[0], 0.0, 1.0
    if isinstance(owner, nn.EmbeddingBag):
        return Role.EMBEDDING, shape[1], shape[0], 0.0, 1.0
    if isinstance(owner, nn.MultiheadAttention):
        if attr.endswith("_weight"):
            fan_in, fan_out = _torch_fans(shape)
            return Role.WEIGHT, fan_in, fan_out, 0.0, math.sqrt(2.0 / (fan_in + fan_out))
        if attr in ("bias_k", "bias_v"):
            fan_in, fan_out = _torch_fans(shape)
            return Role.BIAS, fan_in, fan_out, 0.0, math.sqrt(2.0 / (fan_in + fan_out))
        e = owner.embed_dim
        return Role.BIAS, e, e, 0.0, 0.0
    if isinstance(owner, _RNN_TYPES):
        std = math.sqrt(uniform_var(1.0 / math.sqrt(owner.hidden_size)))
        if attr.startswith("weight"):
            fan_in, fan_out = _torch_fans(shape)
            return Role.WEIGHT, fan_in, fan_out, 0.0, std
        return Role.BIAS, owner.hidden_size, shape[0], 0.0, std
    # Unknown owner: fans from the shape, statistics from the current values.
    fan_in, fan_out = _torch_fans(shape)
    data = p.detach().float()
    mean = float(data.mean()) if data.numel() else 0.0
    std = float(data.std()) if data.numel() > 1 else 0.0
    role = Role.BIAS if attr == "bias" else (Role.WEIGHT if p.dim() >= 2 else Role.OTHER)
    return role, fan_in, fan_out, mean, std


def _normalize_selection(
    select: Selection, where: str = "WeightSpec.from_module"
) -> Callable[[str, nn.Module, nn.Parameter], bool]:
    if select is None:
        return lambda name, owner, p: True
    if isinstance(select, str):
        select = [select]
    if isinstance(select, type) or (isinstance(select, tuple) and select and all(isinstance(s, type) for s in select)):
        types = select if isinstance(select, tuple) else (select,)
        not_modules = [t.__name__ for t in types if not issubclass(t, nn.Module)]
        if not_modules:
            raise TypeError(f"{where}: select types must be nn.Module subclasses, got {not_modules}")
        return lambda name, owner, p: isinstance(owner, types)
    if isinstance(select, nn.Module):
        raise TypeError(
            f"{where}: select must be None, a glob string, a list of globs, a module type or tuple of "
            f"types, or a predicate (name, parameter) -> bool; got a module instance {type(select).__name__} "
            f"(pass its type, {type(select).__name__}, to select parameters of every such module)"
        )
    if callable(select):
        fn = select
        return lambda name, owner, p: bool(fn(name, p))
    if isinstance(select, Sequence) and not isinstance(select, (bytes, bytearray)):
        if all(isinstance(s, str) for s in select):
            patterns = list(select)
            return lambda name, owner, p: any(fnmatch.fnmatchcase(name, pat) for pat in patterns)
    raise TypeError(
        f"{where}: select must be None, a glob string, a list of globs, a module "
        f"type or tuple of types, or a predicate (name, parameter) -> bool; got {select!r} ({type(select).__name__})"
    )


class WeightSpec(Sequence[TensorSpec]):
    """Ordered description of the tensors a hypernetwork generates.

    Build one with :meth:`from_module` (or directly from a list of :class:`TensorSpec`).
    Flat vectors are laid out in spec order; :meth:`flatten` and :meth:`unflatten` convert
    between a flat ``(*batch, numel)`` tensor and a name -> tensor mapping with the same
    leading batch dims.
    """

    def __init__(self, tensors: Iterable[TensorSpec]):
        self._tensors: tuple[TensorSpec, ...] = tuple(tensors)
        if not self._tensors:
            raise ValueError("WeightSpec: expected at least one tensor, got none")
        names = [t.name for t in self._tensors]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"WeightSpec: duplicate tensor names {dup}")
        offsets, o = [], 0
        for t in self._tensors:
            offsets.append(o)
            o += t.numel
        self._offsets = tuple(offsets)
        self._sizes = [t.numel for t in self._tensors]  # split sizes of the flat layout
        # what unflatten does to each part of an unbatched flat: None when the part, a 1-D
        # view, already has the tensor's shape (biases), else the shape to reshape it to
        self._views = [None if len(t.shape) == 1 else tuple(t.shape) for t in self._tensors]
        self._names = tuple(t.name for t in self._tensors)
        self._numel = o
        self._index = {t.name: i for i, t in enumerate(self._tensors)}

    # ----------------------------------------------------------------- building
    @classmethod
    def from_module(cls, module: nn.Module, select: Selection = None) -> WeightSpec:
        """Describe the parameters of ``module`` chosen by ``select``.

        Args:
            module: any ``nn.Module``.
            select: ``None`` (all parameters), a glob or list of globs on dotted names
                (``"fc*.weight"``), a module type or tuple of types (``nn.Linear``), or a
                predicate ``(name, parameter) -> bool``.

        Returns:
            The spec, in ``named_parameters()`` order. Tied parameters appear once, under
            their first name.

        Raises:
            TypeError: ``module`` is not an ``nn.Module`` or ``select`` has an unknown form.
            ValueError: the selection matches no parameter, or one of its globs matches none.
        """
        if not isinstance(module, nn.Module):
            raise TypeError(f"WeightSpec.from_module: expected an nn.Module, got {type(module).__name__}")
        keep = _normalize_selection(select)
        tensors: list[TensorSpec] = []
        layer_of: dict[int, int] = {}
        for name, p in module.named_parameters():
            owner, attr = _owner(module, name)
            if not keep(name, owner, p):
                continue
            role, fan_in, fan_out, mean, std = _describe(owner, attr, p)
            layer = layer_of.setdefault(id(owner), len(layer_of))
            tensors.append(
                TensorSpec(
                    name=name,
                    shape=tuple(p.shape),
                    role=role,
                    fan_in=int(fan_in),
                    fan_out=int(fan_out),
                    module_type=type(owner).__name__,
                    init_mean=float(mean),
                    init_std=float(std),
                    layer_index=layer,
                )
            )
        available = [n for n, _ in module.named_parameters()]
        if not tensors:
            raise ValueError(
                f"WeightSpec.from_module: the selection {select!r} matches no parameter of "
                f"{type(module).__name__}; its parameters are {available}"
            )
        globs = [select] if isinstance(select, str) else select
        if isinstance(globs, Sequence) and globs and all(isinstance(g, str) for g in globs):
            # a misspelt glob beside others that match would otherwise drop its tensors silently
            unmatched = [g for g in globs if not any(fnmatch.fnmatchcase(n, g) for n in available)]
            if unmatched:
                raise ValueError(
                    f"WeightSpec.from_module: the globs {unmatched} of the selection {list(globs)} match no "
                    f"parameter of {type(module).__name__}; its parameters are {available}"
                )
        return cls(tensors)

    # ----------------------------------------------------------------- sequence
    def __len__(self) -> int:
        return len(self._tensors)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, str):
            return self._tensors[self._index[i]]
        return self._tensors[i]

    def __iter__(self) -> Iterator[TensorSpec]:
        return iter(self._tensors)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WeightSpec) and self._tensors == other._tensors

    def __hash__(self) -> int:
        return hash(self._tensors)

    def difference(self, other: WeightSpec) -> str:
        """How ``other`` differs from this spec, in words (``""`` when they are equal): the
        names only one has, then the first tensors whose shape, order or description differ."""
        if not isinstance(other, WeightSpec):
            raise TypeError(f"WeightSpec.difference: expected a WeightSpec, got {type(other).__name__}")
        parts = []
        mine, theirs = set(self.names), set(other.names)
        if mine - theirs:
            parts.append(f"only in the first: {[n for n in self.names if n not in theirs]}")
        if theirs - mine:
            parts.append(f"only in the second: {[n for n in other.names if n not in mine]}")
        changed = []
        for t in self._tensors:
            if t.name in theirs and other[t.name] != t:
                u = other[t.name]
                fields = [f for f in t.__dataclass_fields__ if getattr(t, f) != getattr(u, f)]
                changed.append(f"{t.name} ({', '.join(f'{f} {getattr(t, f)!r} vs {getattr(u, f)!r}' for f in fields)})")
        if changed:
            more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
            parts.append(f"differing: {'; '.join(changed[:3])}{more}")
        common = [n for n in self.names if n in theirs]
        if not parts and common != [n for n in other.names if n in mine]:
            parts.append(f"the same tensors in another order: {list(self.names)} vs {list(other.names)}")
        return "; ".join(parts)

    def __repr__(self) -> str:
        rows = ", ".join(f"{t.name}{list(t.shape)}" for t in self._tensors)
        return f"WeightSpec({len(self)} tensors, {self.numel} numbers: {rows})"

    @property
    def names(self) -> tuple[str, ...]:
        """Tensor names in order."""
        return self._names

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape."""
        return {t.name: t.shape for t in self._tensors}

    @property
    def numel(self) -> int:
        """Total number of generated numbers."""
        return self._numel

    def offset(self, name: str) -> int:
        """Start of tensor ``name`` in the flat layout."""
        return self._offsets[self._index[name]]

    def subset(self, names: Iterable[str]) -> WeightSpec:
        """A spec with only ``names``, in this spec's order."""
        keep = set(names)
        unknown = sorted(keep - set(self._index))
        if unknown:
            raise ValueError(f"WeightSpec.subset: unknown names {unknown}; known: {list(self.names)}")
        return WeightSpec(t for t in self._tensors if t.name in keep)

    # ----------------------------------------------------------------- layout
    def flatten(self, weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate a name -> tensor mapping into ``(*batch, numel)``.

        All tensors must share the same leading batch dims (possibly none).
        """
        self.check(weights, where="WeightSpec.flatten")
        batch = self.batch_shape(weights)
        parts = [weights[t.name].reshape(*batch, t.numel) for t in self._tensors]
        return torch.cat(parts, dim=-1)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split ``(*batch, numel)`` into a name -> tensor mapping of views."""
        if not isinstance(flat, torch.Tensor):
            raise TypeError(f"WeightSpec.unflatten: expected a tensor, got {type(flat).__name__}")
        if flat.dim() == 0 or flat.shape[-1] != self._numel:
            raise ValueError(
                f"WeightSpec.unflatten: expected a tensor of shape (*batch, {self._numel}), got {tuple(flat.shape)}"
            )
        return self._views_of(flat.split_with_sizes(self._sizes, -1), flat.shape[:-1])

    def unflatten_prefix(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`unflatten` of the first ``numel`` numbers of each row of ``(*batch, n)``,
        ``n >= numel`` (a chunked head's output before its padding is cut: one split, whose
        backward writes the padding's zeros with the rest in one pass)."""
        if flat.dim() == 0 or flat.shape[-1] < self._numel:
            raise ValueError(
                f"WeightSpec.unflatten_prefix: expected a tensor of shape (*batch, n >= {self._numel}), "
                f"got {tuple(flat.shape)}"
            )
        extra = flat.shape[-1] - self._numel
        if extra == 0:
            return self.unflatten(flat)
        return self._views_of(flat.split_with_sizes([*self._sizes, extra], -1), flat.shape[:-1])

    def _views_of(self, parts, batch: torch.Size) -> dict[str, torch.Tensor]:
        """Name -> each tensor's view of its flat part (``parts`` in spec order; a trailing
        extra part is ignored)."""
        if batch:
            return {t.name: p.reshape(batch + t.shape) for t, p in zip(self._tensors, parts, strict=False)}
        return {n: p if v is None else p.reshape(v) for n, p, v in zip(self._names, parts, self._views, strict=False)}

    def batch_shape(self, weights: Mapping[str, torch.Tensor]) -> torch.Size:
        """Leading batch dims shared by all tensors in ``weights`` (checked)."""
        batch = None
        for t in self._tensors:
            w = weights[t.name]
            b = w.shape[: w.dim() - len(t.shape)]
            if batch is None:
                batch = b
            elif b != batch:
                raise ValueError(
                    f"weights have inconsistent batch dims: {self._tensors[0].name} has "
                    f"{tuple(batch)}, {t.name} has {tuple(b)}"
                )
        assert batch is not None
        return torch.Size(batch)

    def check(
        self,
        weights: Mapping[str, torch.Tensor],
        where: str = "weights",
        like: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Size:
        """Validate names, types, shapes, dtypes and devices of ``weights``; return their batch shape.

        Args:
            weights: name -> tensor of shape ``(*batch, *spec_shape)``, floating point, not on
                the ``meta`` device.
            where: the API named in error messages.
            like: name -> tensor (the target's own parameters) whose dtype and device each
                weight must have; ``None`` checks only that weights are floating point.

        Raises:
            TypeError: ``weights`` is not a mapping of tensors, or a weight is not floating
                point or has another dtype than its ``like`` tensor (all listed).
            ValueError: missing or unexpected names (all listed), wrong trailing shapes,
                weights on the ``meta`` device or on another device than their ``like``
                tensor, or inconsistent batch dims.
        """
        if not isinstance(weights, Mapping):
            raise TypeError(f"{where}: expected a mapping name -> tensor, got {type(weights).__name__}")
        missing = [n for n in self.names if n not in weights]
        unexpected = sorted(k for k in weights if k not in self._index)
        if missing or unexpected:
            raise ValueError(
                f"{where}: weight names do not match the spec. Missing: {missing}. "
                f"Unexpected: {unexpected}. Expected exactly: {list(self.names)}"
            )
        bad_type = [k for k, v in weights.items() if not isinstance(v, torch.Tensor)]
        if bad_type:
            raise TypeError(f"{where}: expected tensors, got non-tensors for {bad_type}")
        wrong, wrong_dtype, wrong_device = [], [], []
        for t in self._tensors:
            w = weights[t.name]
            if w.dim() < len(t.shape) or tuple(w.shape[w.dim() - len(t.shape) :]) != t.shape:
                wrong.append(f"{t.name}: expected (*batch, {', '.join(map(str, t.shape))}), got {tuple(w.shape)}")
            if like is None:
                if not w.is_floating_point():
                    wrong_dtype.append(f"{t.name}: expected a floating-point tensor, got {w.dtype}")
                if w.is_meta:
                    wrong_device.append(f"{t.name}: got a tensor on the meta device, which holds no values")
                continue
            p = like[t.name]
            if w.dtype != p.dtype:
                wrong_dtype.append(f"{t.name}: expected {p.dtype} (the module's parameter), got {w.dtype}")
            if w.device != p.device or w.is_meta:
                wrong_device.append(
                    f"{t.name}: expected a tensor on {p.device} (the module's parameter), got one on {w.device}"
                    + (", which holds no values" if w.is_meta else "")
                )
        if wrong:
            raise ValueError(f"{where}: wrong shapes: " + "; ".join(wrong))
        if wrong_dtype:
            raise TypeError(f"{where}: wrong dtypes: " + "; ".join(wrong_dtype + wrong_device))
        if wrong_device:
            raise ValueError(f"{where}: wrong devices: " + "; ".join(wrong_device))
        return self.batch_shape(weights)
