"""The vmap fallback: a layer without a grouped kernel runs its subtree under ``torch.func.vmap``.

Any module that owns generated tensors and has no kernel in :mod:`hyperdnn.target.kernels`
(a layer type of its own, a subclass that overrides ``forward``, an instance-level
``forward``, a kernel that does not read all of its generated tensors) runs as
``vmap(functional_call(module, weights_g, inputs_g))`` over the ``G`` weight sets: its inputs
are split into ``(G, N, ...)`` at their batch dims, the outputs merged back to ``G * N``. The
module's whole subtree runs inside, so every generated tensor below it is named relative to
it. While it runs, the grouped forwards of the layers inside are bypassed (they would see one
group), which :func:`bypassing` tells them.

``Target(..., per_sample="vmap")`` runs the whole module this way, as a reference path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.utils import _pytree as pytree

__all__ = ["Dims", "run_vmapped", "bypassing"]

_BYPASS = threading.local()  # .on: inside a vmapped subtree on this thread


def bypassing() -> bool:
    """Whether this thread is inside a vmapped subtree (grouped forwards defer to the layer's own)."""
    return getattr(_BYPASS, "on", False)


class Dims:
    """Batch dims of a vmapped module's tensor arguments and of its outputs.

    Args:
        batch: the batch dim of every positional tensor argument (and of keyword tensors not
            named in ``kw``) with more dims than that.
        out_dim: the batch dim of the outputs: one for all, or one per output tensor (in the
            order ``pytree`` flattens them; the last one repeats).
        kw: batch dims of named arguments: an int, ``None`` (shared, not split), or a function
            of the tensor giving either (a mask whose rank says whether it has a batch).
        names: the names of the positional parameters, so that an argument in ``kw`` passed
            by position gets its own dim too.
    """

    __slots__ = ("batch", "out_dim", "kw", "names")

    def __init__(
        self,
        batch: int = 0,
        out_dim: int | tuple[int, ...] = 0,
        kw: Mapping[str, int | None | Callable[[torch.Tensor], int | None]] | None = None,
        names: tuple[str, ...] = (),
    ):
        self.batch, self.out_dim, self.kw, self.names = batch, out_dim, dict(kw or {}), names

    def _dim(self, name: str | None, value: Any, total: int | None) -> int | None:
        if not isinstance(value, torch.Tensor):
            return None
        if name in self.kw:
            rule = self.kw[name]
            return rule(value) if callable(rule) else rule
        d = self.batch
        return d if value.dim() > d and (total is None or value.shape[d] == total) else None

    def __call__(self, args: tuple, kwargs: Mapping[str, Any]) -> tuple[tuple, dict]:
        names = self.names
        named = [(names[i] if i < len(names) else None, a) for i, a in enumerate(args)]
        # the first tensor split by the default rule carries the grouped batch (G * N at the
        # batch dim); another tensor of another size there is shared by every weight set (a
        # mask for all samples, which an ensemble does not repeat either), not split
        total = next(
            (
                v.shape[self.batch]
                for k, v in (*named, *kwargs.items())
                if isinstance(v, torch.Tensor) and k not in self.kw and v.dim() > self.batch
            ),
            None,
        )
        arg_dims = tuple(self._dim(k, a, total) for k, a in named)
        return arg_dims, {k: self._dim(k, v, total) for k, v in kwargs.items()}


def run_vmapped(owner: nn.Module, weights: Mapping[str, torch.Tensor], G: int, dims: Dims, args, kwargs) -> Any:
    """Run ``owner`` under vmap over ``G`` weight sets.

    Args:
        owner: the module; its forward runs with the layers inside it bypassed.
        weights: generated tensors named relative to ``owner``, each ``(G, ...)``.
        G: number of weight sets; tensor inputs carry ``G * N`` at their batch dims.
        dims: the batch dims of the inputs and outputs.
        args, kwargs: the module's inputs.

    Returns:
        The module's output, tensors with ``G * N`` at ``dims.out_dim``.
    """
    if any(isinstance(a, nn.utils.rnn.PackedSequence) for a in (*args, *kwargs.values())):
        raise ValueError(
            f"Target: {type(owner).__name__} runs under vmap with batched weights (it has no grouped kernel, "
            "or per_sample='vmap') and expected tensor inputs it can split into weight sets, got a "
            "PackedSequence; pad it first (nn.utils.rnn.pad_packed_sequence) and pack inside the module"
        )
    arg_dims, kw_dims = dims(args, kwargs)

    def split(t, d):
        if d is None or not isinstance(t, torch.Tensor):
            return t
        if t.dim() <= d or t.shape[d] % G:
            raise ValueError(
                f"Target: {type(owner).__name__} (run under vmap) with batched weights expected a tensor "
                f"input with its batch of {G} weight sets x N samples at dim {d}, got {tuple(t.shape)}"
            )
        return t.reshape(*t.shape[:d], G, t.shape[d] // G, *t.shape[d + 1 :])

    args_g = tuple(split(a, d) for a, d in zip(args, arg_dims, strict=False))
    kw_names = list(kwargs)
    kw_vals = tuple(split(kwargs[k], kw_dims.get(k)) for k in kw_names)
    kw_in = tuple(kw_dims.get(k) for k in kw_names)

    treedef_box: list = []

    def one(w, a, kv):
        prev = bypassing()
        _BYPASS.on = True
        try:
            out = functional_call(owner, dict(w), a, dict(zip(kw_names, kv)))
        finally:
            _BYPASS.on = prev
        leaves, treedef = pytree.tree_flatten(out)
        treedef_box[:] = [
            treedef,
            [isinstance(v, torch.Tensor) for v in leaves],
            [None if isinstance(v, torch.Tensor) else v for v in leaves],
        ]
        return tuple(v for v in leaves if isinstance(v, torch.Tensor))

    try:
        tensors = vmap(one, in_dims=(0, tuple(arg_dims), kw_in), out_dims=0, randomness="different")(
            dict(weights), args_g, kw_vals
        )
    except RuntimeError as e:
        if not str(e).startswith("Batch norm got a batched tensor"):
            raise
        raise RuntimeError(
            f"Target: {type(owner).__name__} runs under vmap with batched weights (it has no grouped kernel, or "
            "per_sample='vmap'), and a BatchNorm inside it tracks running statistics, which one vmapped call "
            "cannot update per weight set in training mode. Call .eval() on the module, build that BatchNorm "
            "with track_running_stats=False, or give the module's own tensors a grouped kernel (register_kernel)"
        ) from e
    treedef, is_tensor, others = treedef_box
    out_dims = dims.out_dim if isinstance(dims.out_dim, tuple) else (dims.out_dim,)

    def merge(t, i):
        out_dim = out_dims[min(i, len(out_dims) - 1)]
        t = t.movedim(0, out_dim)
        return t.reshape(*t.shape[:out_dim], G * t.shape[out_dim + 1], *t.shape[out_dim + 2 :])

    merged = iter([merge(t, i) for i, t in enumerate(tensors)])
    leaves = [next(merged) if flag else other for flag, other in zip(is_tensor, others)]
    return pytree.tree_unflatten(leaves, treedef)
