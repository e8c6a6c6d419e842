"""Width cropping: the weights of a narrower network cut out of generated full-width tensors.

A pruned network keeps the first ``k`` of every layer's ``c`` channels (MetaPruning, Liu et al.,
ICCV 2019): its convolution ``weight (k_out, k_in, kh, kw)`` is the leading block
``full[:k_out, :k_in]`` of the full network's ``(c_out, c_in, kh, kw)`` tensor, its batch-norm
scale ``full[:k_out]``, its classifier ``full[:, :k_last]``. A hypernetwork that generates the
full-width weights from a width vector (a PruningNet) therefore serves every narrower network
of the same structure: :func:`crop_weights` cuts each generated tensor to the shape the
narrower network's :class:`~hyperdnn.WeightSpec` gives for the same name.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from hyperdnn import WeightSpec
    >>> from hyperdnn.arch import crop_weights
    >>> full = {"weight": torch.arange(12.0).reshape(4, 3), "bias": torch.arange(4.0)}
    >>> small = WeightSpec.from_module(nn.Linear(2, 3))           # 3 of 4 outputs, 2 of 3 inputs
    >>> cropped = crop_weights(full, small)
    >>> cropped["weight"].tolist(), cropped["bias"].tolist()
    ([[0.0, 1.0], [3.0, 4.0], [6.0, 7.0]], [0.0, 1.0, 2.0])
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from hyperdnn.spec import WeightSpec

__all__ = ["crop_weights"]


def crop_weights(weights: Mapping[str, torch.Tensor], spec: WeightSpec) -> dict[str, torch.Tensor]:
    """Cut every tensor of ``weights`` to the leading block of the shape ``spec`` gives it.

    Args:
        weights: name -> full-width tensor ``(*batch, *full_shape)``, with the same leading
            batch dims for every tensor (none for one weight set); the names of ``spec``
            must all be there (extra names are ignored, so a spec of some layers selects them).
        spec: the narrower network's spec: for each name a shape of the same rank as the
            full tensor, no larger in any dimension.

    Returns:
        name -> ``(*batch, *spec_shape)`` views (slices ``[..., :s0, :s1, ...]``) of the full
        tensors, in ``spec`` order; gradients flow back into the full tensors.

    Raises:
        TypeError: ``spec`` is not a :class:`~hyperdnn.WeightSpec` or a value is not a tensor.
        ValueError: names of ``spec`` missing from ``weights``, or tensors whose trailing
            shape cannot hold the spec's (another rank, or smaller in a dimension); one
            message names every such tensor with both shapes.
    """
    if not isinstance(spec, WeightSpec):
        raise TypeError(f"crop_weights: spec must be a WeightSpec, got {type(spec).__name__}")
    if not isinstance(weights, Mapping):
        raise TypeError(f"crop_weights: weights must map names to tensors, got {type(weights).__name__}")
    missing = [t.name for t in spec if t.name not in weights]
    not_tensors = [t.name for t in spec if t.name in weights and not isinstance(weights[t.name], torch.Tensor)]
    if not_tensors:
        raise TypeError(f"crop_weights: expected tensors, got other values for {not_tensors}")
    problems = [f"missing {missing}"] if missing else []
    batch: tuple[int, ...] | None = None
    for t in spec:
        if t.name in missing:
            continue
        w, rank = weights[t.name], len(t.shape)
        lead = tuple(w.shape[: w.dim() - rank]) if w.dim() >= rank else None
        tail = tuple(w.shape[w.dim() - rank :]) if lead is not None else tuple(w.shape)
        if lead is None or any(s > f for s, f in zip(t.shape, tail)):
            problems.append(f"{t.name}: spec shape {list(t.shape)} does not fit in the generated {list(w.shape)}")
        elif batch is None:
            batch = lead
        elif lead != batch:
            problems.append(f"{t.name}: batch dims {list(lead)}, other tensors have {list(batch)}")
    if problems:
        raise ValueError(f"crop_weights: {'; '.join(problems)}")
    out = {}
    for t in spec:
        w = weights[t.name]
        index = (Ellipsis, *(slice(0, s) for s in t.shape))
        out[t.name] = w[index]
    return out
