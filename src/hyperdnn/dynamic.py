"""Dynamic outputs: one hypernetwork that generates for a :class:`WeightSpec` given at call time.

A static hypernetwork learns one embedding per chunk or component of one fixed target.
:class:`DynamicHyperNetwork` instead *computes* each component's embedding from its
description - the owning layer's index and kind, the tensor's role and shape, the
component's position - so the same trained hypernetwork generates weights for targets of
other widths (or depths) than the ones it was trained on, in the spirit of Ha et al.'s
HyperNetworks, SMASH and graph hypernetworks.

With ``granularity="unit"`` a component is an output unit (a row of a weight matrix, an
output channel of a convolution); a 1-D tensor (a bias, a norm scale) is one component.
Every component is a token; the trunk's token architecture (pointwise MLP, GRU over the
layers' units, transformer, deconvolution) turns the tokens into ``max_component_size``
numbers each, and a component of ``k`` numbers keeps the first ``k``. A unit's description
(see :func:`describe_components`) holds its position both as an absolute sin/cos code and
relative to its tensor's rows, beside the tensor's sizes (rows, fan-in, fan-out): hidden unit
``j`` of a target of width 32 is *not* described as unit ``j`` of one of width 128, so a
narrower target is not a slice of a wider one's weights. What carries over between widths
is what the hypernetwork learned as a function of those descriptions; how well that
generalises to an untrained width is measured, not promised (``docs/nas.md``).

The limit is ``max_component_size``: a component with more numbers (with unit granularity,
a ``Linear`` with more inputs, i.e. a hidden width wider than the limit feeding the next
layer) is refused with a ``ValueError`` naming the tensor, its size and the limit.

Example::

    >>> import torch, torch.nn as nn
    >>> from hyperdnn import DynamicHyperNetwork, LearnedLatent, MLP, Target
    >>> hnet = DynamicHyperNetwork(LearnedLatent(8), MLP((32,)), max_component_size=64)
    >>> for width in (16, 48):
    ...     target = Target(nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, 3)))
    ...     weights = hnet(None, target.spec)
    ...     print(width, tuple(weights["0.weight"].shape), tuple(target(weights, torch.randn(5, 8)).shape))
    16 (16, 8) (5, 3)
    48 (48, 8) (5, 3)
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hyperdnn._checks import check_choice, check_int, check_widths
from hyperdnn.conditioners import Conditioner, LearnedLatent, check_conditioner
from hyperdnn.heads import TokenGenerator
from hyperdnn.init import calibrate as calibrate_last_layers
from hyperdnn.init import check_init_mode, element_stats
from hyperdnn.spec import Role, TensorSpec, WeightSpec
from hyperdnn.target import Target
from hyperdnn.trunks import ACTIVATIONS, MLP, Trunk, build_trunk, make_activation

__all__ = ["Components", "describe_components", "DESCRIPTOR_FEATURES", "DynamicHyperNetwork"]

_ROLES = tuple(Role)
# module kinds a descriptor distinguishes (by class name of the owning module)
_KINDS = ("linear", "conv", "conv_transpose", "norm", "embedding", "attention", "recurrent", "other")
# periods of the absolute position code: unit j is told apart from every other j' < 1024
_PERIODS = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_LOG_SCALE = 1.0 / 10.0  # log2 sizes up to ~1000 land in [0, 1]
_MAX_CACHED_SPECS = 256  # per-spec plans (descriptions, gather index, hyperfan stats) kept, least recent dropped

DESCRIPTOR_FEATURES = len(_ROLES) + len(_KINDS) + 4 + 6 + 1 + 1 + 2 * len(_PERIODS)
"""Width of a component's description vector (see :func:`describe_components`)."""


def _kind(module_type: str) -> int:
    name = module_type.lower()
    if name.startswith("convtranspose"):
        return _KINDS.index("conv_transpose")
    if name.startswith("conv"):
        return _KINDS.index("conv")
    if name in ("linear", "bilinear", "lazylinear"):
        return _KINDS.index("linear")
    if "norm" in name:
        return _KINDS.index("norm")
    if name.startswith("embedding"):
        return _KINDS.index("embedding")
    if "attention" in name:
        return _KINDS.index("attention")
    if name in ("rnn", "lstm", "gru") or name.endswith("cell"):
        return _KINDS.index("recurrent")
    return _KINDS.index("other")


def _log(n: int) -> float:
    return math.log2(1 + n) * _LOG_SCALE


@dataclass(frozen=True)
class Components:
    """A spec cut into components, with their descriptions.

    Attributes:
        tensors: name of the tensor each component belongs to, in layout order.
        sizes: numbers in each component.
        features: ``(n, DESCRIPTOR_FEATURES)`` description of each component.
    """

    tensors: tuple[str, ...]
    sizes: tuple[int, ...]
    features: torch.Tensor

    def __len__(self) -> int:
        return len(self.sizes)

    def gather_index(self, token_size: int) -> torch.Tensor:
        """Index into ``(n * token_size)`` token outputs that yields the spec's flat layout."""
        return torch.cat([torch.arange(s) + i * token_size for i, s in enumerate(self.sizes)])


def _component_rows(t: TensorSpec, granularity: str) -> tuple[int, int]:
    """(number of components, numbers per component) of tensor ``t``."""
    if granularity == "unit" and len(t.shape) >= 2:
        return t.shape[0], t.numel // t.shape[0]
    return 1, t.numel


def describe_components(spec: WeightSpec, granularity: str = "unit") -> Components:
    """Cut ``spec`` into components and describe each one.

    A component's description concatenates: its tensor's role (one-hot) and owning module kind
    (one-hot); the layer's relative depth, whether it is the first or the last generated
    layer, and its index; log sizes (rows, component size, fan-in, fan-out) and the tensor's
    rank; whether it is a row of a larger tensor; its row's relative position and an
    absolute sin/cos position code.

    Args:
        spec: the tensors to cut.
        granularity: ``"unit"`` (a row per output unit of a 2+-D tensor) or ``"tensor"``.

    Returns:
        :class:`Components` in the spec's flat layout order.

    Example::

        >>> import torch.nn as nn
        >>> from hyperdnn import WeightSpec
        >>> from hyperdnn.dynamic import describe_components, DESCRIPTOR_FEATURES
        >>> comps = describe_components(WeightSpec.from_module(nn.Linear(5, 3)))
        >>> comps.sizes, comps.features.shape == (4, DESCRIPTOR_FEATURES)
        ((5, 5, 5, 3), True)
    """
    if not isinstance(spec, WeightSpec):
        raise TypeError(f"describe_components: expected a WeightSpec, got {type(spec).__name__}")
    if granularity not in ("unit", "tensor"):
        raise ValueError(f"describe_components: granularity must be 'unit' or 'tensor', got {granularity!r}")
    num_layers = 1 + max(t.layer_index for t in spec)
    tensors: list[str] = []
    sizes: list[int] = []
    rows_feats: list[torch.Tensor] = []
    periods = torch.tensor(_PERIODS, dtype=torch.float32)
    for t in spec:
        rows, size = _component_rows(t, granularity)
        fixed = torch.zeros(len(_ROLES) + len(_KINDS) + 4 + 6 + 1)
        fixed[_ROLES.index(t.role)] = 1.0
        o = len(_ROLES)
        fixed[o + _kind(t.module_type)] = 1.0
        o += len(_KINDS)
        layer = t.layer_index
        fixed[o : o + 4] = torch.tensor(
            [
                layer / (num_layers - 1) if num_layers > 1 else 0.0,
                float(layer == 0),
                float(layer == num_layers - 1),
                _log(layer),
            ]
        )
        o += 4
        fixed[o : o + 6] = torch.tensor(
            [_log(rows), _log(size), _log(t.fan_in), _log(t.fan_out), len(t.shape) / 4.0, _log(t.numel)]
        )
        o += 6
        fixed[o] = float(rows > 1)
        r = torch.arange(rows, dtype=torch.float32)
        angle = 2 * math.pi * r.unsqueeze(1) / periods
        position = torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)
        relative = (r / rows).unsqueeze(1)
        rows_feats.append(torch.cat([fixed.expand(rows, -1), relative, position], dim=1))
        tensors += [t.name] * rows
        sizes += [size] * rows
    features = torch.cat(rows_feats, dim=0)
    assert features.shape[1] == DESCRIPTOR_FEATURES
    return Components(tuple(tensors), tuple(sizes), features)


@dataclass(frozen=True)
class _Plan:
    components: Components
    gather: torch.Tensor
    mean: torch.Tensor
    scale: torch.Tensor


class DynamicHyperNetwork(nn.Module):
    """A hypernetwork whose output is a :class:`WeightSpec` chosen at call time.

    ``hnet(context, spec)`` returns a name -> tensor mapping for ``spec`` (a
    :class:`WeightSpec` or a :class:`~hyperdnn.target.Target`), batched like the context.
    Component embeddings come from an MLP over each component's description
    (:func:`describe_components`), so any spec whose components fit ``max_component_size``
    can be served, also one never seen in training. A caller that knows more about each
    component passes ``component_embeddings`` (``(n, embed_dim)``), added to those of the
    descriptions: a graph hypernetwork's node embeddings (:class:`~hyperdnn.arch.GraphHyperNetwork`).

    Args:
        conditioner: the input (:class:`~hyperdnn.conditioners.LearnedLatent` for one
            family of targets, :class:`~hyperdnn.conditioners.TaskEmbedding`...).
        trunk: the architecture, a :class:`~hyperdnn.trunks.Trunk` description (default
            ``MLP((64,))``; ``hnet.trunk`` is the built encoder, ``hnet.trunk_config`` the
            description); its token mixer runs over the components in layout order and its
            readout emits each one.
        max_component_size: numbers generated per component: the largest component
            (with ``granularity="unit"``, the widest fan-in of a row) this hypernet serves.
        granularity: ``"unit"`` (a component per output unit) or ``"tensor"``.
        embed_dim: component embedding width.
        descriptor_hidden: hidden widths of the MLP from description to embedding.
        hidden: pointwise hidden widths of the shared component generator.
        activation: activation of those MLPs.
        init: ``"hyperfan_in"`` (default), ``"hyperfan_out"`` or ``"unit"``; the hyperfan
            scale is computed for each spec at call time (see :mod:`hyperdnn.init`).
        example: specs (or targets) to calibrate initialisation on, so that raw outputs start
            with unit variance; ``None`` skips calibration.

    Raises:
        ValueError: (at call time) a component larger than ``max_component_size``.
    """

    def __init__(
        self,
        conditioner: Conditioner,
        trunk: Trunk | None = None,
        *,
        max_component_size: int,
        granularity: str = "unit",
        embed_dim: int = 32,
        descriptor_hidden: Sequence[int] = (64,),
        hidden: Sequence[int] = (),
        activation: str = "relu",
        init: str = "hyperfan_in",
        example: WeightSpec | Target | Iterable[WeightSpec | Target] | None = None,
    ):
        super().__init__()
        where = "DynamicHyperNetwork"
        check_conditioner(where, conditioner)
        check_int(where, "max_component_size", max_component_size)
        check_choice(where, "granularity", granularity, ("unit", "tensor"))
        check_int(where, "embed_dim", embed_dim)
        descriptor_hidden = check_widths(where, "descriptor_hidden", descriptor_hidden)
        hidden = check_widths(where, "hidden", hidden)
        check_choice(where, "activation", activation, sorted(ACTIVATIONS))
        check_init_mode(where, init)
        self.conditioner = conditioner
        self.trunk_config, self.trunk = build_trunk(where, trunk, conditioner.out_features, MLP((64,)))
        self.max_component_size = max_component_size
        self.granularity = granularity
        self.init_mode = init
        self.embed_dim = embed_dim
        layers: list[nn.Module] = []
        w = DESCRIPTOR_FEATURES
        for hd in descriptor_hidden:
            layers += [nn.Linear(w, hd), make_activation(activation)]
            w = hd
        layers.append(nn.Linear(w, embed_dim))
        self.describer = nn.Sequential(*layers)
        self.generator = TokenGenerator(
            self.trunk.out_features, None, embed_dim, hidden, max_component_size, activation, self.trunk_config
        )
        self._plans: OrderedDict[tuple[WeightSpec, str], _Plan] = OrderedDict()
        if example is not None:
            self.calibrate(example)

    # ------------------------------------------------------------------ specs
    def _spec(self, spec: Any, where: str) -> WeightSpec:
        if isinstance(spec, Target):
            return spec.spec
        if not isinstance(spec, WeightSpec):
            raise TypeError(f"{where}: spec must be a WeightSpec or a Target, got {type(spec).__name__}")
        return spec

    def check(self, spec: WeightSpec | Target) -> None:
        """Raise ``ValueError`` if ``spec`` has a component larger than ``max_component_size``."""
        spec = self._spec(spec, "DynamicHyperNetwork.check")
        too_big = []
        for t in spec:
            _, size = _component_rows(t, self.granularity)
            if size > self.max_component_size:
                what = "rows of " if self.granularity == "unit" and len(t.shape) >= 2 else ""
                too_big.append(f"{t.name} {list(t.shape)} ({what}{size} numbers)")
        if too_big:
            hint = (
                " (a row has as many numbers as its layer has inputs, so a hidden width above the limit "
                "cannot feed the next layer)"
                if self.granularity == "unit"
                else ""
            )
            raise ValueError(
                f"DynamicHyperNetwork: this hypernet generates at most max_component_size="
                f"{self.max_component_size} numbers per component{hint}; too large: {too_big}"
            )

    def _plan(self, spec: WeightSpec, device: torch.device) -> _Plan:
        key = (spec, str(device))
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
        else:
            self.check(spec)
            comps = describe_components(spec, self.granularity)
            mean, scale = element_stats(spec, self.init_mode)
            plan = _Plan(
                Components(comps.tensors, comps.sizes, comps.features.to(device)),
                comps.gather_index(self.max_component_size).to(device),
                mean.to(device),
                scale.to(device),
            )
            self._plans[key] = plan
            if len(self._plans) > _MAX_CACHED_SPECS:
                self._plans.popitem(last=False)
        return plan

    # ------------------------------------------------------------------ forward
    def embeddings(self, spec: WeightSpec | Target) -> torch.Tensor:
        """Component embeddings ``(n, embed_dim)`` computed from ``spec``'s descriptions."""
        spec = self._spec(spec, "DynamicHyperNetwork.embeddings")
        ref = self.describer[0].weight
        return self.describer(self._plan(spec, ref.device).components.features.to(ref.dtype))

    def raw(
        self, context: Any, spec: WeightSpec | Target, component_embeddings: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, bool]:
        """Raw head output ``(B, spec.numel)`` (before the hyperfan scale) and whether the
        context was batched (``component_embeddings``: see :meth:`forward`)."""
        spec = self._spec(spec, "DynamicHyperNetwork")
        cond = self.conditioner(context)
        h = self.trunk(cond.c)
        plan = self._plan(spec, h.device)
        embeddings = self.describer(plan.components.features.to(h.dtype))
        if component_embeddings is not None:
            embeddings = embeddings + self._check_extra(component_embeddings, embeddings, spec)
        out = self.generator(h, embeddings)
        return out.reshape(h.shape[0], -1).index_select(1, plan.gather), cond.batched

    def _check_extra(self, extra: Any, embeddings: torch.Tensor, spec: WeightSpec) -> torch.Tensor:
        if not isinstance(extra, torch.Tensor):
            raise TypeError(f"DynamicHyperNetwork: component_embeddings must be a tensor, got {type(extra).__name__}")
        if extra.shape != embeddings.shape:
            raise ValueError(
                f"DynamicHyperNetwork: component_embeddings must be (components, embed_dim) = "
                f"{tuple(embeddings.shape)} for this spec of {len(spec)} tensors, got {tuple(extra.shape)}"
            )
        return extra.to(embeddings.dtype)

    def generate_flat(
        self, context: Any, spec: WeightSpec | Target, component_embeddings: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, bool]:
        """Flat weights ``(B, spec.numel)`` and whether the context was batched
        (``component_embeddings``: see :meth:`forward`)."""
        spec = self._spec(spec, "DynamicHyperNetwork")
        raw, batched = self.raw(context, spec, component_embeddings)
        plan = self._plan(spec, raw.device)
        return torch.addcmul(plan.mean.to(raw.dtype), plan.scale.to(raw.dtype), raw), batched

    def forward(
        self, context: Any, spec: WeightSpec | Target, component_embeddings: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Generate weights for ``spec``: name -> ``(*batch, *shape)``.

        Args:
            context: the conditioner's input (``None`` for a :class:`LearnedLatent`).
            spec: the tensors to generate (a :class:`WeightSpec` or a ``Target``).
            component_embeddings: optional ``(n, embed_dim)``, one row per component of
                :func:`describe_components` (``spec``'s layout order), added to the
                embeddings of the components' descriptions: what the caller knows about each
                component beyond its description (a graph hypernetwork passes its node
                embeddings, :class:`~hyperdnn.arch.GraphHyperNetwork`). Gradients flow into it.

        Raises:
            ValueError: a component larger than ``max_component_size``, or
                ``component_embeddings`` of another shape (both shapes named).
        """
        spec = self._spec(spec, "DynamicHyperNetwork")
        flat, batched = self.generate_flat(context, spec, component_embeddings)
        return spec.unflatten(flat if batched else flat.squeeze(0))

    def components(self, spec: WeightSpec | Target) -> Components:
        """The components of ``spec`` this hypernetwork generates (:func:`describe_components`
        at its granularity, cached per spec)."""
        spec = self._spec(spec, "DynamicHyperNetwork.components")
        return self._plan(spec, self.describer[0].weight.device).components

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def calibrate(self, example: WeightSpec | Target | Iterable[WeightSpec | Target], context: Any = None) -> None:
        """Re-draw the generator's last layers so raw outputs start with unit variance.

        Measures the second moment of each last layer's input over the components of the
        ``example`` specs (and ``context``; default: the conditioner's probe, or N(0, 1)
        codes), pooled over the specs, and draws that layer's weights from
        ``N(0, 1 / (m * fan_in * E[u^2]))`` with zero bias (``m`` last layers add up), as
        :meth:`HyperNetwork.calibrate` does (:func:`hyperdnn.init.calibrate`).
        """
        if isinstance(example, (WeightSpec, Target)):
            example = [example]
        specs = [self._spec(s, "DynamicHyperNetwork.calibrate") for s in example]
        if not specs:
            raise ValueError("DynamicHyperNetwork.calibrate: expected at least one example spec, got none")

        def run() -> None:
            probe = self.conditioner.probe(64) if context is None else context
            for spec in specs:
                if probe is None and isinstance(self.conditioner, LearnedLatent):
                    self.raw(None, spec)  # its one code is the context
                elif probe is None:
                    ref = self.describer[0].weight
                    c = torch.randn(64, self.conditioner.out_features, device=ref.device, dtype=ref.dtype)
                    self.generator(self.trunk(c), self.embeddings(spec))
                else:
                    self.raw(probe, spec)

        calibrate_last_layers(self, [self.generator.final_layers()], run)
