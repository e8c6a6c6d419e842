"""Initialisation: hyperfan-in / hyperfan-out scales and the residual base theta0.

Hyperfan initialisation (Chang, Sacramento and Grewe, ICLR 2020) makes each generated tensor
start with the variance its target layer would get from its own initialiser. hyperdnn realises
it exactly for every head, chunked and component-wise included, as

    theta = mean + scale * raw

where ``raw`` is the head's output, calibrated to unit variance at construction, and ``mean``
and ``scale`` are fixed per-element buffers computed from the :class:`~hyperdnn.spec.WeightSpec`:

* ``"hyperfan_in"``: ``scale`` is the standard deviation of the target layer's default init
  (``1/sqrt(3 fan_in)`` for ``Linear`` and ``Conv``, ``sqrt(2/(fan_in+fan_out))`` for
  attention projections, 1 for embeddings...), so a generated ``Linear`` weight starts with
  variance ``1/(3 fan_in)`` as ``nn.Linear`` itself does.
* ``"hyperfan_out"``: weights use fan-out in place of fan-in (``std * sqrt(fan_in/fan_out)``).
* ``"unit"``: ``scale = 1``, ``mean = 0`` (no rescaling: the classic, unstable start).

A chunk position serves tensors of different fan-in in different chunks, which a single
output layer cannot initialise for all of them; the fixed per-element scale can. Tensors
whose default init is a constant (norm scales at 1 and shifts at 0, zero biases) get that
constant as ``mean`` and a small ``scale`` so they can still learn.

The residual form ``theta = theta0 + residual_scale * scale * raw`` uses ``theta0`` from the
target's own initial or pretrained values (norm scales at 1), keyed by the tensor's role.

:func:`calibrate` makes ``raw`` unit-variance: it measures the input of the head's last layers
over representative contexts and draws their weights for it (hyperfan with a measured input
variance). :class:`~hyperdnn.hypernet.HyperNetwork` and
:class:`~hyperdnn.dynamic.DynamicHyperNetwork` both initialise through it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from hyperdnn._checks import check_choice
from hyperdnn.spec import Role, TensorSpec, WeightSpec

__all__ = [
    "INIT_MODES",
    "check_init_mode",
    "tensor_scale",
    "tensor_mean",
    "element_stats",
    "residual_base",
    "calibrate",
]

INIT_MODES = ("hyperfan_in", "hyperfan_out", "unit")


def check_init_mode(where: str, mode: Any) -> str:
    """``mode`` as one of :data:`INIT_MODES` (``TypeError``/``ValueError`` naming ``where``)."""
    return check_choice(where, "init", mode, INIT_MODES)


#: scale used for tensors whose default init is a constant (norm scale/shift)
CONSTANT_ROLE_SCALE = 0.1


def tensor_scale(t: TensorSpec, mode: str) -> float:
    """Per-element output scale for tensor ``t`` under init ``mode``."""
    if mode not in INIT_MODES:
        raise ValueError(f"init mode must be one of {INIT_MODES}, got {mode!r}")
    if mode == "unit":
        return 1.0
    std = t.init_std
    if std == 0.0:
        if t.role in (Role.NORM_SCALE, Role.NORM_SHIFT):
            return CONSTANT_ROLE_SCALE
        std = 1.0 / math.sqrt(3.0 * max(t.fan_in, 1))
    if mode == "hyperfan_out" and t.role == Role.WEIGHT and t.fan_out > 0:
        std = std * math.sqrt(t.fan_in / t.fan_out)
    return std


def tensor_mean(t: TensorSpec, mode: str) -> float:
    """Per-element output mean for tensor ``t`` (norm scales start at 1)."""
    return 0.0 if mode == "unit" else t.init_mean


def element_stats(spec: WeightSpec, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat ``(numel,)`` mean and scale vectors for ``spec`` under ``mode``."""
    means, scales = [], []
    for t in spec:
        means.append(torch.full((t.numel,), tensor_mean(t, mode)))
        scales.append(torch.full((t.numel,), tensor_scale(t, mode)))
    return torch.cat(means), torch.cat(scales)


def residual_base(spec: WeightSpec, values: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
    """Flat ``theta0`` for the residual form.

    Args:
        spec: the generated tensors.
        values: name -> tensor (e.g. ``Target.default_weights()`` or pretrained weights). If
            ``None``, theta0 is the role's neutral value: 1 for norm scales, 0 otherwise.

    Raises:
        ValueError: a name is missing or has the wrong shape.
    """
    if values is None:
        return torch.cat([torch.full((t.numel,), 1.0 if t.role == Role.NORM_SCALE else 0.0) for t in spec])
    spec.check(values, where="residual theta0")
    batch = spec.batch_shape(values)
    if len(batch):
        raise ValueError(f"residual theta0: expected unbatched tensors, got batch shape {tuple(batch)}")
    return torch.cat([values[t.name].detach().reshape(-1).to("cpu", torch.get_default_dtype()) for t in spec])


@torch.no_grad()
def calibrate(module: nn.Module, groups: Sequence[Sequence[nn.Module]], run: Callable[[], Any]) -> None:
    """Re-draw the last layers of ``module`` so that its raw outputs start with unit variance.

    Runs ``run()`` (representative forward passes) with ``module`` in eval mode (its mode is
    restored afterwards, also on error) and measures the second moment ``E[u^2]`` of the input
    ``u`` of every layer in ``groups``: the mean over one pass, or the sum over several passes
    divided by their count. Then it draws each layer's weight from
    ``N(0, 1 / (m * fan_in * E[u^2]))`` and zeroes its bias, where ``m`` is the size of the
    layer's group (last layers whose outputs add up) and ``fan_in`` its ``in_features``: every
    raw output element then has unit variance over the initialisation (hyperfan with a
    measured input variance). A layer that saw no input, or only zeros or NaN, keeps its
    weights.

    Args:
        module: the hypernetwork (put in eval mode while ``run`` runs).
        groups: the last layers, grouped by the outputs they add up to; each has ``weight``,
            ``bias`` (or ``None``) and ``in_features``.
        run: the forward passes to measure.

    Example::

        >>> import torch, torch.nn as nn
        >>> from hyperdnn.init import calibrate
        >>> net = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 500))
        >>> x = torch.randn(256, 4)
        >>> calibrate(net, [[net[2]]], lambda: net(x))
        >>> with torch.no_grad():
        ...     second_moment = float(net(x).pow(2).mean())
        >>> 0.8 < second_moment < 1.25   # 1 in expectation over the draw
        True
    """
    passes: dict[int, list[tuple[float, float, int]]] = {id(m): [] for group in groups for m in group}

    def record(layer: nn.Module, args: tuple) -> None:
        u2 = args[0].detach().pow(2)
        passes[id(layer)].append((float(u2.mean()), float(u2.sum()), u2.numel()))

    hooks = [m.register_forward_pre_hook(record) for group in groups for m in group]
    was_training = module.training
    module.eval()
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
        module.train(was_training)
    for group in groups:
        for layer in group:
            seen = passes[id(layer)]
            if len(seen) == 1:
                m2 = seen[0][0]
            else:
                count = sum(n for _, _, n in seen)
                m2 = sum(total for _, total, _ in seen) / count if count else 0.0
            if not m2 > 0.0 or m2 != m2:  # unused or dead input: keep the layer as it is
                continue
            layer.weight.normal_(0.0, (len(group) * layer.in_features * m2) ** -0.5)
            if layer.bias is not None:
                layer.bias.zero_()
