"""Target: run any ``nn.Module`` with generated weights, one set or one per sample.

Three execution modes, chosen by the weights' leading batch dims:

* **shared** - weights without batch dims: one weight set for the whole input batch
  (``torch.func.functional_call``'s swap of the parameter slots, with the slots cached).
* **per-sample** - weights ``(B, ...)`` and inputs of batch ``B``: sample ``b`` runs with
  weight set ``b``. Runs batched: every supported layer has a grouped fast path (``baddbmm``
  for ``Linear``, grouped convolution for ``Conv``/``ConvTranspose``, batched affine for norm
  layers, a batched gather for ``Embedding``, a batched time loop for ``RNN``/``GRU``/``LSTM``,
  batched projections and ``scaled_dot_product_attention`` for ``MultiheadAttention``, which
  runs under ``torch.func.vmap`` only with ``add_bias_kv``/``add_zero_attn``); a module of any
  other type that owns generated tensors is run under ``torch.func.vmap``. Never a Python loop
  over samples.
* **ensemble** - weights ``(K, ...)`` and one shared input batch of ``N``: K predictions
  ``(K, N, ...)`` in one batched pass.

What a call changes in the module is what the module's own forward would change in its
buffers: in training mode ``BatchNorm`` running statistics and ``num_batches_tracked`` (unless
per-context statistics are in use). Parameters, the module tree, ``forward`` methods, hooks and
what modules cache from their parameters (RNN flat weights, legacy ``weight_norm`` attributes)
are never changed: a call swaps parameters (shared) or ``forward`` on the owning modules
(grouped) and restores them in ``finally``.

Example::

    >>> import torch, torch.nn as nn
    >>> from hyperdnn import Target
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    >>> target = Target(net)
    >>> w = {k: torch.randn(8, *s) for k, s in target.spec.shapes.items()}
    >>> target(w, torch.randn(8, 3)).shape        # per-sample: 8 weight sets, 8 samples
    torch.Size([8, 2])
    >>> target.ensemble(w, torch.randn(5, 3)).shape  # 8 members on one batch of 5
    torch.Size([8, 5, 2])

Sharp edges: in per-sample mode ``BatchNorm`` normalises over the whole batch (only its affine
is per sample); in ensemble mode each member normalises over its own copy of the batch.
Inputs must carry their batch at ``batch_dim`` (0 by default); layers with a batch position of
their own keep it (convolutions and ``BatchNorm``/``GroupNorm`` at dim 0, non-batch-first
``MultiheadAttention``/RNN layers at dim 1).
"""

from __future__ import annotations

import copy
import math
import operator
import threading
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as _checkpoint
from torch import nn
from torch.func import functional_call, vmap
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm as _SpectralNormParametrization
from torch.nn.utils.prune import BasePruningMethod as _PruningHook
from torch.nn.utils.spectral_norm import SpectralNorm as _SpectralNormHook
from torch.nn.utils.weight_norm import WeightNorm as _WeightNormHook
from torch.utils import _pytree as pytree

from hyperdnn.spec import Selection, WeightSpec, _normalize_selection

__all__ = ["Target"]

_MISSING = object()


# --------------------------------------------------------------------- fast paths
# Every handler runs a module whose generated tensors carry a leading group dim G on an
# input whose batch (at the module's own batch dim) is G * N, group-major. Tensors the
# hypernetwork does not generate come from the module itself, unbatched.


def _get(owner: nn.Module, gen: Mapping[str, torch.Tensor], attr: str):
    return gen[attr] if attr in gen else getattr(owner, attr)


def _groups_first(owner: nn.Module, x: torch.Tensor, G: int, dim: int) -> torch.Tensor:
    """``x`` with its batch (``G`` groups of ``N``, group-major) moved from ``dim`` to dim 0."""
    if not isinstance(x, torch.Tensor) or x.dim() <= dim or x.shape[dim] % G:
        given = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"Target: {type(owner).__name__} with batched weights expected an input with its batch of "
            f"{G} weight sets x N samples at dim {dim}, got {given}"
        )
    return x.movedim(dim, 0) if dim else x


def _linear(owner: nn.Linear, gen, G: int, x: torch.Tensor, bd: int = 0) -> torch.Tensor:
    x = _groups_first(owner, x, G, bd)
    w, b = _get(owner, gen, "weight"), _get(owner, gen, "bias")
    shape = x.shape
    x3 = x.reshape(G, shape[0] // G * math.prod(shape[1:-1]), shape[-1])
    if "weight" in gen:
        wt = w.transpose(1, 2)
        if b is None:
            y = torch.bmm(x3, wt)
        elif "bias" in gen:
            y = torch.baddbmm(b.unsqueeze(1), x3, wt)
        else:
            y = torch.bmm(x3, wt) + b
    else:
        y = F.linear(x3, w) + b.unsqueeze(1)
    y = y.reshape(*shape[:-1], y.shape[-1])
    return y.movedim(0, bd) if bd else y


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONVT = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _to_grouped_channels(x: torch.Tensor, G: int, channels_last: bool = False) -> torch.Tensor:
    """(G*N, C, *S) -> (N, G*C, *S); channels-last memory layout if asked (4-D/5-D)."""
    GN, C, *S = x.shape
    N = GN // G
    if channels_last and x.dim() in (4, 5):
        # (G*N, *S, C) -> (N, *S, G, C) in one copy, then view as (N, G*C, *S)
        xl = x.movedim(1, -1).reshape(G, N, *S, C).movedim(0, -2).reshape(N, *S, G * C).contiguous()
        return xl.movedim(-1, 1)
    if N == 1:
        return x.reshape(1, G * C, *S)
    return x.reshape(G, N, C, *S).transpose(0, 1).reshape(N, G * C, *S)


def _from_grouped_channels(y: torch.Tensor, G: int, channels_last: bool = False) -> torch.Tensor:
    """(N, G*C, *S) -> (G*N, C, *S); channels-last memory layout if asked (4-D/5-D)."""
    N, GC, *S = y.shape
    C = GC // G
    if channels_last and y.dim() in (4, 5):
        # .contiguous(): with N == 1 the reshape is a view, not a channels-last tensor
        yl = y.movedim(1, -1).reshape(N, *S, G, C).movedim(-2, 0).reshape(G * N, *S, C).contiguous()
        return yl.movedim(-1, 1)
    if N == 1:
        return y.reshape(G, C, *S)
    return y.reshape(N, G, C, *S).transpose(0, 1).reshape(G * N, C, *S)


def _conv(owner: nn.modules.conv._ConvNd, gen, G: int, x: torch.Tensor, cl: bool = False) -> torch.Tensor:
    nd = len(owner.kernel_size)
    if not isinstance(x, torch.Tensor) or x.dim() != nd + 2:
        given = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"Target: {type(owner).__name__} with batched weights expected a batched {nd + 2}-D input "
            f"(batch, channels, ...), got {given}"
        )
    x = _groups_first(owner, x, G, 0)
    w, b = _get(owner, gen, "weight"), _get(owner, gen, "bias")
    padding = owner.padding
    if owner.padding_mode != "zeros":
        x = F.pad(x, owner._reversed_padding_repeated_twice, mode=owner.padding_mode)
        padding = 0
    if "weight" not in gen:
        w = w.expand(G, *w.shape)
    if b is not None and "bias" not in gen:
        b = b.expand(G, -1)
    xg = _to_grouped_channels(x, G, cl)
    wg = w.reshape(G * w.shape[1], *w.shape[2:])
    bg = None if b is None else b.reshape(-1)
    y = _CONV[nd](xg, wg, bg, owner.stride, padding, owner.dilation, owner.groups * G)
    return _from_grouped_channels(y, G, cl)


def _conv_transpose(
    owner: nn.modules.conv._ConvTransposeNd, gen, G: int, x: torch.Tensor, output_size=None, cl: bool = False
):
    if output_size is not None:
        raise ValueError(
            f"Target: {type(owner).__name__} with output_size is not supported with batched weights; "
            "set output_padding on the layer instead"
        )
    if owner.padding_mode != "zeros":
        raise ValueError(
            f"Target: {type(owner).__name__} supports only padding_mode='zeros', got {owner.padding_mode!r}"
        )
    nd = len(owner.kernel_size)
    if not isinstance(x, torch.Tensor) or x.dim() != nd + 2:
        given = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"Target: {type(owner).__name__} with batched weights expected a batched {nd + 2}-D input "
            f"(batch, channels, ...), got {given}"
        )
    x = _groups_first(owner, x, G, 0)
    w, b = _get(owner, gen, "weight"), _get(owner, gen, "bias")
    if "weight" not in gen:
        w = w.expand(G, *w.shape)
    if b is not None and "bias" not in gen:
        b = b.expand(G, -1)
    xg = _to_grouped_channels(x, G, cl)
    wg = w.reshape(G * w.shape[1], *w.shape[2:])
    bg = None if b is None else b.reshape(-1)
    y = _CONVT[nd](xg, wg, bg, owner.stride, owner.padding, owner.output_padding, owner.groups * G, owner.dilation)
    return _from_grouped_channels(y, G, cl)


def _affine(y: torch.Tensor, w, b, G: int, channel_dim: int, gen) -> torch.Tensor:
    """Per-group affine on y (G*N, ...) with w, b (G, C) along ``channel_dim`` (or trailing)."""
    shape = y.shape
    yv = y.reshape(G, shape[0] // G, *shape[1:])  # (G, N, ...)
    if channel_dim == -1:  # trailing normalized_shape dims

        def view(t, batched):
            if t is None:
                return None
            if batched:
                return t.reshape(G, *([1] * (yv.dim() - t.dim())), *t.shape[1:])
            return t
    else:
        extra = yv.dim() - 3

        def view(t, batched):
            if t is None:
                return None
            if batched:
                return t.reshape(G, 1, -1, *([1] * extra))
            return t.reshape(-1, *([1] * extra))

    wv, bv = view(w, "weight" in gen), view(b, "bias" in gen)
    if wv is not None:
        yv = yv * wv
    if bv is not None:
        yv = yv + bv
    return yv.reshape(shape)


def _batch_norm(owner: nn.modules.batchnorm._BatchNorm, gen, G: int, x: torch.Tensor, per_group: bool):
    x = _groups_first(owner, x, G, 0)
    if isinstance(owner, nn.SyncBatchNorm) and owner.training and _synchronised():
        raise ValueError(
            "Target: SyncBatchNorm in training mode across processes cannot run with batched weights "
            "(its statistics would not be synchronised); convert it with a BatchNorm per process or use shared weights"
        )
    # Momentum bookkeeping as in torch.nn.modules.batchnorm._BatchNorm.forward.
    eaf = 0.0 if owner.momentum is None else owner.momentum
    if owner.training and owner.track_running_stats and owner.num_batches_tracked is not None:
        owner.num_batches_tracked.add_(1)
        eaf = 1.0 / float(owner.num_batches_tracked) if owner.momentum is None else owner.momentum
    use_batch = owner.training or (owner.running_mean is None and owner.running_var is None)
    rm = owner.running_mean if not owner.training or owner.track_running_stats else None
    rv = owner.running_var if not owner.training or owner.track_running_stats else None
    if per_group and use_batch:
        xg = _to_grouped_channels(x, G)
        rmg = None if rm is None else rm.repeat(G)
        rvg = None if rv is None else rv.repeat(G)
        y = F.batch_norm(xg, rmg, rvg, None, None, use_batch, eaf, owner.eps)
        y = _from_grouped_channels(y, G)
        if rm is not None and owner.training:
            with torch.no_grad():
                rm.copy_(rmg.view(G, -1).mean(0))
                rv.copy_(rvg.view(G, -1).mean(0))
    else:
        y = F.batch_norm(x, rm, rv, None, None, use_batch, eaf, owner.eps)
    w, b = _get(owner, gen, "weight"), _get(owner, gen, "bias")
    return _affine(y, w, b, G, 1, gen)


def _synchronised() -> bool:
    """Whether SyncBatchNorm would synchronise statistics across processes now."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _layer_norm(owner: nn.LayerNorm, gen, G: int, x: torch.Tensor, bd: int = 0):
    x = _groups_first(owner, x, G, bd)
    y = F.layer_norm(x, owner.normalized_shape, None, None, owner.eps)
    w, b = _get(owner, gen, "weight"), _get(owner, gen, "bias")
    y = _affine(y, w, b, G, -1, gen)
    return y.movedim(0, bd) if bd else y


def _group_norm(owner: nn.GroupNorm, gen, G: int, x: torch.Tensor):
    x = _groups_first(owner, x, G, 0)
    y = F.group_norm(x, owner.num_groups, None, None, owner.eps)
    w, b = _get(owner, gen, "weight"), _get(owner, gen, "bias")
    return _affine(y, w, b, G, 1, gen)


def _embedding(owner: nn.Embedding, gen, G: int, idx: torch.Tensor, bd: int = 0):
    if owner.max_norm is not None:
        raise ValueError(
            "Target: Embedding with max_norm renormalises weights in place; not supported with batched weights"
        )
    idx = _groups_first(owner, idx, G, bd)
    w = gen["weight"]
    V = w.shape[1]
    # One gather from the (G*V, D) stacked tables. An index outside [0, V) is sent past the
    # end of the stack, so F.embedding raises for it as it does for one table, instead of
    # reading a row of another sample's table.
    offs = (torch.arange(G, device=idx.device) * V).view(G, *([1] * idx.dim()))
    grouped = idx.reshape(G, idx.shape[0] // G, *idx.shape[1:])
    flat = torch.where((grouped >= 0) & (grouped < V), grouped + offs, G * V)
    out = F.embedding(flat, w.reshape(G * V, -1), scale_grad_by_freq=owner.scale_grad_by_freq)
    if owner.padding_idx is not None:
        # the padding row gets no gradient, as in F.embedding(..., padding_idx=...)
        out = torch.where((grouped == owner.padding_idx).unsqueeze(-1), out.detach(), out)
    out = out.reshape(*idx.shape, w.shape[-1])
    return out.movedim(0, bd) if bd else out


def _grouped_matmul(x: torch.Tensor, w: torch.Tensor, G: int) -> torch.Tensor:
    """x (G*N, I) @ w^T, with w (G, J, I) batched or (J, I) shared -> (G*N, J)."""
    if w.dim() == 2:
        return x @ w.t()
    return torch.bmm(x.reshape(G, -1, x.shape[-1]), w.transpose(1, 2)).reshape(x.shape[0], -1)


def _grouped_bias(b: torch.Tensor | None, G: int, n: int) -> torch.Tensor | float:
    if b is None:
        return 0.0
    if b.dim() == 1:
        return b
    return b.unsqueeze(1).expand(G, n // G, -1).reshape(n, -1)


def _rnn(owner: nn.RNNBase, gen, G: int, input: torch.Tensor, hx=None):
    if isinstance(input, nn.utils.rnn.PackedSequence):
        raise TypeError("Target: PackedSequence inputs are not supported with batched weights; pad the batch instead")
    if getattr(owner, "proj_size", 0):
        raise ValueError("Target: LSTM with proj_size > 0 is not supported with batched weights")
    mode = owner.mode
    H, L = owner.hidden_size, owner.num_layers
    dirs = 2 if owner.bidirectional else 1
    unbatched = input.dim() == 2
    x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if owner.batch_first else input)
    T, B = x.shape[0], x.shape[1]
    if hx is None:
        h0 = x.new_zeros(L * dirs, B, H)
        c0 = x.new_zeros(L * dirs, B, H) if mode == "LSTM" else None
    elif mode == "LSTM":
        h0, c0 = hx
        if unbatched:
            h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
    else:
        h0, c0 = (hx.unsqueeze(1) if unbatched else hx), None
    hn, cn = [], []
    layer_in = x
    for layer in range(L):
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_ih, w_hh = _get(owner, gen, "weight_ih" + sfx), _get(owner, gen, "weight_hh" + sfx)
            b_ih = _get(owner, gen, "bias_ih" + sfx) if owner.bias else None
            b_hh = _get(owner, gen, "bias_hh" + sfx) if owner.bias else None
            # input projection for all time steps at once: (B, T, I) @ W_ih^T
            xt = layer_in.transpose(0, 1)  # (B, T, I)
            if w_ih.dim() == 2:
                xi = xt @ w_ih.t()
            else:
                xi = torch.bmm(xt.reshape(G, -1, xt.shape[-1]), w_ih.transpose(1, 2)).reshape(B, T, -1)
            if b_ih is not None:
                xi = xi + (b_ih.unsqueeze(1).repeat_interleave(B // G, dim=0) if b_ih.dim() > 1 else b_ih)
            bhh = _grouped_bias(b_hh, G, B)
            h = h0[layer * dirs + d]
            c = c0[layer * dirs + d] if c0 is not None else None
            steps = range(T - 1, -1, -1) if d else range(T)
            out_d = [None] * T
            for t in steps:
                gh = _grouped_matmul(h, w_hh, G) + bhh
                gi = xi[:, t]
                if mode == "LSTM":
                    i, f, g, o = (gi + gh).chunk(4, dim=-1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(c)
                elif mode == "GRU":
                    ir, iz, in_ = gi.chunk(3, dim=-1)
                    hr, hz, hn_ = gh.chunk(3, dim=-1)
                    r = torch.sigmoid(ir + hr)
                    z = torch.sigmoid(iz + hz)
                    n = torch.tanh(in_ + r * hn_)
                    h = (1 - z) * n + z * h
                elif mode == "RNN_TANH":
                    h = torch.tanh(gi + gh)
                else:
                    h = torch.relu(gi + gh)
                out_d[t] = h
            outs.append(torch.stack(out_d, 0))
            hn.append(h)
            if c is not None:
                cn.append(c)
        layer_in = torch.cat(outs, dim=-1) if dirs == 2 else outs[0]
        if owner.dropout and owner.training and layer < L - 1:
            layer_in = F.dropout(layer_in, owner.dropout, True)
    out = layer_in
    h_n = torch.stack(hn, 0)
    if unbatched:
        out, h_n = out.squeeze(1), h_n.squeeze(1)
    elif owner.batch_first:
        out = out.transpose(0, 1)
    if mode == "LSTM":
        c_n = torch.stack(cn, 0)
        return out, (h_n, c_n.squeeze(1) if unbatched else c_n)
    return out, h_n


def _resolve(owner: nn.Module, gen, name: str):
    if name in gen:
        return gen[name]
    obj = owner
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _gproj(x: torch.Tensor, w: torch.Tensor, b, G: int) -> torch.Tensor:
    """x (G*N, L, I) projected by w (G, O, I) or (O, I), bias (G, O) or (O,) or None."""
    if w.dim() == 2:
        y = x @ w.t()
    else:
        y = torch.bmm(x.reshape(G, -1, x.shape[-1]), w.transpose(1, 2)).reshape(*x.shape[:-1], w.shape[1])
    if b is not None:
        if b.dim() == 2:
            b = b.repeat_interleave(x.shape[0] // G, dim=0).unsqueeze(1)
        y = y + b
    return y


def _mha(
    owner: nn.MultiheadAttention,
    gen,
    G: int,
    query,
    key,
    value,
    key_padding_mask=None,
    need_weights=True,
    attn_mask=None,
    average_attn_weights=True,
    is_causal=False,
):
    if query.dim() != 3:
        raise ValueError(
            f"Target: MultiheadAttention needs batched (3-D) inputs with batched weights, got {tuple(query.shape)}"
        )
    bf = owner.batch_first
    q, k, v = (query, key, value) if bf else (query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1))
    B, L, E = q.shape
    S = k.shape[1]
    h = owner.num_heads
    hd = E // h
    if owner._qkv_same_embed_dim:
        wq, wk, wv = _resolve(owner, gen, "in_proj_weight").chunk(3, dim=-2)
    else:
        wq, wk, wv = (_resolve(owner, gen, n) for n in ("q_proj_weight", "k_proj_weight", "v_proj_weight"))
    bias = _resolve(owner, gen, "in_proj_bias")
    bq = bk = bv = None
    if bias is not None:
        bq, bk, bv = bias.chunk(3, dim=-1)
    Q = _gproj(q, wq, bq, G).view(B, L, h, hd).transpose(1, 2)
    K = _gproj(k, wk, bk, G).view(B, S, h, hd).transpose(1, 2)
    V = _gproj(v, wv, bv, G).view(B, S, h, hd).transpose(1, 2)
    mask = None
    if attn_mask is not None:
        am = attn_mask
        if am.dtype == torch.bool:
            am = torch.zeros(am.shape, dtype=Q.dtype, device=Q.device).masked_fill(am, float("-inf"))
        mask = am.view(B, h, L, S) if am.dim() == 3 else am
    elif is_causal:
        mask = torch.zeros(L, S, dtype=Q.dtype, device=Q.device).masked_fill(
            torch.ones(L, S, dtype=torch.bool, device=Q.device).triu(1), float("-inf")
        )
    if key_padding_mask is not None:
        kp = key_padding_mask
        if kp.dtype == torch.bool:
            kp = torch.zeros(kp.shape, dtype=Q.dtype, device=Q.device).masked_fill(kp, float("-inf"))
        kp = kp.view(B, 1, 1, S)
        mask = kp if mask is None else mask + kp
    p = owner.dropout if owner.training else 0.0
    weights = None
    if need_weights:
        scores = (Q @ K.transpose(-2, -1)) / (hd**0.5)
        if mask is not None:
            scores = scores + mask
        attn = torch.softmax(scores, dim=-1)
        weights = attn.mean(1) if average_attn_weights else attn
        if p:
            attn = F.dropout(attn, p, True)
        out = attn @ V
    else:
        out = F.scaled_dot_product_attention(Q, K, V, attn_mask=mask, dropout_p=p)
    out = out.transpose(1, 2).reshape(B, L, E)
    out = _gproj(out, _resolve(owner, gen, "out_proj.weight"), _resolve(owner, gen, "out_proj.bias"), G)
    if not bf:
        out = out.transpose(0, 1)
    return out, weights


def _vmapped(owner: nn.Module, gen_subtree: Mapping[str, torch.Tensor], G: int, dims: _Dims, args, kwargs):
    """Run ``owner`` under vmap over G groups; ``dims`` maps (args, kwargs) to batch dims."""
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
        prev = getattr(_LOCAL, "bypass", False)
        _LOCAL.bypass = True
        try:
            out = functional_call(owner, dict(w), a, dict(zip(kw_names, kv)))
        finally:
            _LOCAL.bypass = prev
        leaves, treedef = pytree.tree_flatten(out)
        treedef_box[:] = [
            treedef,
            [isinstance(v, torch.Tensor) for v in leaves],
            [None if isinstance(v, torch.Tensor) else v for v in leaves],
        ]
        return tuple(v for v in leaves if isinstance(v, torch.Tensor))

    tensors = vmap(one, in_dims=(0, tuple(arg_dims), kw_in), out_dims=0, randomness="different")(
        dict(gen_subtree), args_g, kw_vals
    )
    treedef, is_tensor, others = treedef_box
    out_dim = dims.out_dim

    def merge(t):
        t = t.movedim(0, out_dim)
        return t.reshape(*t.shape[:out_dim], G * t.shape[out_dim + 1], *t.shape[out_dim + 2 :])

    it = iter(tensors)
    leaves = [merge(next(it)) if flag else other for flag, other in zip(is_tensor, others)]
    return pytree.tree_unflatten(leaves, treedef)


class _Dims:
    """Batch dims of a vmapped module's tensor arguments and of its outputs."""

    def __init__(self, batch: int = 0, out_dim: int = 0, kw: Mapping[str, int] | None = None):
        self.batch, self.out_dim, self.kw = batch, out_dim, dict(kw or {})

    def __call__(self, args, kwargs):
        arg_dims = tuple(self.batch if isinstance(a, torch.Tensor) and a.dim() > self.batch else None for a in args)
        kw_dims = {k: self.kw.get(k, None) for k in kwargs}
        for k, v in kwargs.items():
            if k not in self.kw and isinstance(v, torch.Tensor) and v.dim() > self.batch:
                kw_dims[k] = self.batch
        return arg_dims, kw_dims


def _mha_dims(owner: nn.MultiheadAttention) -> _Dims:
    b = 0 if owner.batch_first else 1
    # key_padding_mask is (B, S); attn_mask is shared across the batch.
    return _Dims(batch=b, out_dim=b, kw={"key_padding_mask": 0, "attn_mask": None, "need_weights": None})


# --------------------------------------------------------------------- reparametrisations
# A generated tensor may be the source of the tensor a layer reads: an original of a
# torch.nn.utils.parametrize parametrisation ("parametrizations.weight.original0"), or a
# parameter of a legacy reparametrisation hook (weight_norm's weight_g / weight_v, pruning's
# weight_orig). A grouped handler reads the derived tensor ("weight"), computed per group
# from the generated sources on every call of the layer, as the layer recomputes it itself.


def _legacy_hooks(module: nn.Module) -> dict[str, tuple[str, Any]]:
    """Legacy reparametrisation pre-hooks of ``module``: source parameter -> (kind, hook)."""
    found: dict[str, tuple[str, Any]] = {}
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, _WeightNormHook):
            found[hook.name + "_g"] = found[hook.name + "_v"] = ("weight_norm", hook)
        elif isinstance(hook, _SpectralNormHook):
            found[hook.name + "_orig"] = ("spectral_norm", hook)
        elif isinstance(hook, _PruningHook):
            found[hook._tensor_name + "_orig"] = ("prune", hook)
    return found


def _legacy_attribute(kind: str, hook: Any) -> str:
    """The plain attribute a legacy hook writes before every forward (``"weight"``)."""
    return hook._tensor_name if kind == "prune" else hook.name


def _weight_norm_grouped(v: torch.Tensor, g: torch.Tensor, dim: int) -> torch.Tensor:
    """``torch._weight_norm(v[i], g[i], dim)`` for every group ``i`` of ``v, g (G, ...)``."""
    G = v.shape[0]
    if dim == -1:  # weight_norm(dim=None): one norm over the whole tensor
        norm = v.reshape(G, -1).norm(dim=1).view(G, *([1] * (v.dim() - 1)))
    else:
        d = dim % (v.dim() - 1) + 1
        norm = v.transpose(1, d).reshape(G, v.shape[d], -1).norm(dim=2)
        norm = norm.view(G, *[v.shape[d] if i == d else 1 for i in range(1, v.dim())])
    return v * (g.reshape(norm.shape) / norm)


class _Derived:
    """A tensor a layer reads, computed per group from generated source tensors.

    ``name`` is local to the plan entry's owner (``"weight"``, ``"out_proj.weight"``);
    ``sources`` maps the entry's local generated names to their role: the name inside the
    ``ParametrizationList`` (``"original0"``), or ``"g"``/``"v"``/``"orig"`` for legacy hooks.
    """

    __slots__ = ("name", "kind", "module", "sources", "hook")

    def __init__(self, name: str, kind: str, module: nn.Module, hook: Any = None):
        self.name, self.kind, self.module, self.hook = name, kind, module, hook
        self.sources: dict[str, str] = {}

    def compute(self, gen: Mapping[str, torch.Tensor], G: int) -> torch.Tensor:
        if self.kind == "parametrize":
            sub = {inner: gen[local] for local, inner in self.sources.items()}
            return vmap(lambda s: functional_call(self.module, s, ()), randomness="different")(sub)
        if self.kind == "weight_norm":
            by_role = {role: gen[local] for local, role in self.sources.items()}
            for role in ("g", "v"):  # a source the hypernetwork does not generate: the layer's own
                if role not in by_role:
                    own = getattr(self.module, f"{self.hook.name}_{role}")
                    by_role[role] = own.expand(G, *own.shape)
            return _weight_norm_grouped(by_role["v"], by_role["g"], self.hook.dim)
        # pruning: the layer reads mask * orig
        (orig,) = (gen[local] for local in self.sources)
        mask = getattr(self.module, self.hook._tensor_name + "_mask")
        return mask.to(dtype=orig.dtype) * orig


def _derivation(owner: nn.Module, path: str, local: str) -> tuple[str, str, nn.Module, Any, str] | None:
    """How generated ``local`` (relative to ``owner``, at ``path``) reaches its layer:
    ``(derived name, kind, module, hook, role)``, or ``None`` when the layer reads it directly."""
    head, sep, tail = local.partition("parametrizations.")
    if sep and (not head or head.endswith(".")):
        tensor, _, inner = tail.partition(".")
        plist = owner.get_submodule(head + "parametrizations." + tensor)
        return head + tensor, "parametrize", plist, None, inner
    sub_path, _, attr = local.rpartition(".")
    sub = owner.get_submodule(sub_path) if sub_path else owner
    hook = _legacy_hooks(sub).get(attr)
    if hook is None:
        return None
    kind, h = hook
    prefix = sub_path + "." if sub_path else ""
    name = prefix + _legacy_attribute(kind, h)
    if kind == "spectral_norm":
        full = f"{path}.{name}" if path else name
        raise ValueError(
            f"Target: {full!r} uses the legacy torch.nn.utils.spectral_norm hook (its power iteration "
            f"updates one pair of vectors in place), which cannot run with batched weights; use "
            f"torch.nn.utils.parametrizations.spectral_norm in eval mode, or shared weights"
        )
    role = {"weight_norm": "g" if attr.endswith("_g") else "v", "prune": "orig"}[kind]
    return name, kind, sub, h, role


# --------------------------------------------------------------------- plan
_MHA_NAMES = frozenset(
    {
        "in_proj_weight",
        "q_proj_weight",
        "k_proj_weight",
        "v_proj_weight",
        "in_proj_bias",
        "bias_k",
        "bias_v",
        "out_proj.weight",
        "out_proj.bias",
    }
)
_AFFINE = frozenset({"weight", "bias"})
# Grouped handlers, by the exact ``forward`` they replace: a subclass that overrides
# ``forward`` runs under vmap instead.
_FAST_FORWARDS = {
    nn.Linear.forward: "linear",
    nn.Conv1d.forward: "conv",
    nn.Conv2d.forward: "conv",
    nn.Conv3d.forward: "conv",
    nn.ConvTranspose1d.forward: "convt",
    nn.ConvTranspose2d.forward: "convt",
    nn.ConvTranspose3d.forward: "convt",
    nn.modules.batchnorm._BatchNorm.forward: "bn",
    nn.SyncBatchNorm.forward: "bn",
    nn.LayerNorm.forward: "ln",
    nn.GroupNorm.forward: "gn",
    nn.Embedding.forward: "emb",
    nn.RNN.forward: "rnn",
    nn.LSTM.forward: "rnn",
    nn.GRU.forward: "rnn",
    nn.MultiheadAttention.forward: "mha",
}
_SUBTREE_KINDS = ("vmap", "mha", "mha_vmap")


def _kind(owner: nn.Module, effective: set[str]) -> str:
    """The grouped implementation for ``owner`` reading the generated tensors ``effective``."""
    forward = owner.__dict__.get("forward")
    if forward is not None and not getattr(forward, "_target_swap", False):
        return "vmap"  # an instance-level forward of the user's: run that, under vmap
    kind = _FAST_FORWARDS.get(type(owner).forward)
    if kind is None:
        return "vmap"
    if kind == "rnn":
        known = set(owner._flat_weights_names)
    elif kind == "mha":
        known = _MHA_NAMES
        if owner.bias_k is not None or owner.add_zero_attn:
            return "mha_vmap"
    else:
        known = {"weight"} if kind == "emb" else _AFFINE
    return kind if effective <= known else "vmap"


class _Entry:
    """One module whose ``forward`` a grouped call replaces.

    ``names`` maps the generated tensors it reads (local names, relative to ``owner``) to spec
    names; ``derived`` computes the tensors its handler reads from generated sources.
    """

    __slots__ = ("path", "owner", "kind", "names", "derived", "sources", "forward")

    def __init__(self, path: str, owner: nn.Module, kind: str, names: dict[str, str], derived=()):
        self.path, self.owner, self.kind, self.names = path, owner, kind, names
        self.derived: tuple[_Derived, ...] = tuple(derived)
        self.sources = frozenset(s for d in self.derived for s in d.sources)
        forward = owner.__dict__.get("forward")
        # an instance-level forward of the user's, not one a running call has put there
        self.forward = None if getattr(forward, "_target_swap", False) else forward


def _owner_path(path: str, modules: Mapping[str, nn.Module]) -> str:
    """The module that reads a parameter registered at ``path``: the outermost
    MultiheadAttention above it (it reads ``out_proj`` directly), else the parametrised module
    above a ``parametrizations`` container, else ``path`` itself."""
    parts = path.split(".") if path else []
    for i in range(len(parts)):
        anc = ".".join(parts[:i])
        if isinstance(modules[anc], nn.MultiheadAttention):
            return anc
    for i, part in enumerate(parts):
        if part == "parametrizations":
            anc = ".".join(parts[:i])
            if parametrize.is_parametrized(modules[anc]):
                return anc
    return path


def _build_plan(module: nn.Module, spec_names: tuple[str, ...], vmap_all: bool) -> list[_Entry]:
    if vmap_all:
        return [_Entry("", module, "vmap", {n: n for n in spec_names})]
    gen_names = set(spec_names)
    canonical = {id(p): name for name, p in module.named_parameters()}
    modules = dict(module.named_modules(remove_duplicate=False))
    # owner path -> {name relative to the owner: spec name}, tied aliases included
    owners: dict[str, dict[str, str]] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        canon = canonical[id(p)]
        if canon not in gen_names:
            continue
        path, _, attr = name.rpartition(".")
        owner = _owner_path(path, modules)
        rel = path if not owner else path[len(owner) + 1 :]
        owners.setdefault(owner, {})[f"{rel}.{attr}" if rel else attr] = canon
    plan: list[_Entry] = []
    subtrees: list[str] = []
    for path in sorted(owners, key=lambda p: (p.count(".") + (p != ""), p)):
        if any(s == "" or path == s or path.startswith(s + ".") for s in subtrees):
            continue
        owner = modules[path]
        names = owners[path]
        derived: dict[str, _Derived] = {}
        effective = set()
        for local in names:
            how = _derivation(owner, path, local)
            if how is None:
                effective.add(local)
                continue
            dname, dkind, dmodule, hook, role = how
            d = derived.setdefault(dname, _Derived(dname, dkind, dmodule, hook))
            d.sources[local] = role
            effective.add(dname)
        kind = _kind(owner, effective)
        if kind in _SUBTREE_KINDS:
            # the owner runs its whole subtree: every generated tensor below it, named
            # relative to it (functional_call resolves parametrisations and legacy hooks)
            subtrees.append(path)
            prefix = path + "." if path else ""
            sub = {}
            for p2, attrs in owners.items():
                if path == "" or p2 == path or p2.startswith(prefix):
                    rel = p2[len(prefix) :]
                    for attr, canon in attrs.items():
                        sub[f"{rel}.{attr}" if rel else attr] = canon
            if kind == "mha":  # the MHA handler reads derived tensors like any other layer
                plan.append(_Entry(path, owner, kind, sub, derived.values()))
            else:
                plan.append(_Entry(path, owner, kind, sub))
        else:
            plan.append(_Entry(path, owner, kind, dict(names), derived.values()))
    return plan


def _make_forward(entry: _Entry, gen, G: int, per_group_norm: bool, channels_last: bool, bd: int):
    owner, kind, derived, sources = entry.owner, entry.kind, entry.derived, entry.sources
    orig = entry.forward or type(owner).forward.__get__(owner)

    def guarded(fn):
        def forward(*args, **kwargs):
            if getattr(_LOCAL, "bypass", False):
                return orig(*args, **kwargs)
            g = gen
            if derived:
                g = {k: v for k, v in gen.items() if k not in sources}
                for d in derived:
                    g[d.name] = d.compute(gen, G)
            return fn(g, *args, **kwargs)

        forward._target_swap = True
        return forward

    if kind == "linear":
        return guarded(lambda g, x: _linear(owner, g, G, x, bd))
    if kind == "conv":
        return guarded(lambda g, x: _conv(owner, g, G, x, channels_last))
    if kind == "convt":
        return guarded(lambda g, x, output_size=None: _conv_transpose(owner, g, G, x, output_size, channels_last))
    if kind == "bn":
        return guarded(lambda g, x: _batch_norm(owner, g, G, x, per_group_norm))
    if kind == "ln":
        return guarded(lambda g, x: _layer_norm(owner, g, G, x, bd))
    if kind == "gn":
        return guarded(lambda g, x: _group_norm(owner, g, G, x))
    if kind == "emb":
        return guarded(lambda g, idx: _embedding(owner, g, G, idx, bd))
    if kind == "rnn":
        return guarded(lambda g, input, hx=None: _rnn(owner, g, G, input, hx))
    if kind == "mha":
        return guarded(lambda g, *a, **k: _mha(owner, g, G, *a, **k))
    dims = _mha_dims(owner) if kind == "mha_vmap" else _Dims(bd, bd)
    return guarded(lambda g, *a, **k: _vmapped(owner, g, G, dims, a, k))


# --------------------------------------------------------------------- structure
# Everything derived from the module's structure is cached in a _Built and rebuilt when that
# structure changes: each call first compares, for every module of the tree, its class and
# the identities of its submodules and parameters with those the cache was built from.


_SUBMODULES = operator.attrgetter("_modules")
_PARAMETERS = operator.attrgetter("_parameters")


class _Fingerprint:
    """The class of every module of a tree and the identities of its submodules and
    parameters, compared in three flat list comparisons."""

    __slots__ = ("modules", "_classes", "_children", "_param_ids", "_params")

    def __init__(self, module: nn.Module):
        self.modules = list(module.modules())
        self._classes = [m.__class__ for m in self.modules]
        self._children = [c for d in map(_SUBMODULES, self.modules) for c in d.values()]
        self._params = [p for d in map(_PARAMETERS, self.modules) for p in d.values()]  # held: ids stay unique
        self._param_ids = [id(p) for p in self._params]

    def unchanged(self) -> bool:
        # modules compare by identity (nn.Module has no __eq__); parameters by id
        return (
            [m.__class__ for m in self.modules] == self._classes
            and [c for d in map(_SUBMODULES, self.modules) for c in d.values()] == self._children
            and [id(p) for d in map(_PARAMETERS, self.modules) for p in d.values()] == self._param_ids
        )


class _Built:
    """What a call needs from the module's structure (see :meth:`Target._current`)."""

    __slots__ = ("fingerprint", "own", "slots", "rnn", "legacy", "no_fastpath", "spectral", "plan")

    def __init__(self, module: nn.Module, spec: WeightSpec):
        self.fingerprint = _Fingerprint(module)
        params = dict(module.named_parameters())
        self.own = {t.name: params[t.name] for t in spec}  # dtype and device of each generated tensor
        canonical = {id(p): name for name, p in params.items()}
        modules = dict(module.named_modules(remove_duplicate=False))
        gen_names = set(spec.names)
        slots, seen, rnn = [], set(), []
        for name, p in module.named_parameters(remove_duplicate=False):
            canon = canonical[id(p)]
            path, _, attr = name.rpartition(".")
            owner = modules[path]
            if canon in gen_names and (id(owner), attr) not in seen:
                seen.add((id(owner), attr))
                slots.append((owner, attr, canon))
                if isinstance(owner, nn.RNNBase) and all(owner is not o for o in rnn):
                    rnn.append(owner)
        # (owner, attribute, spec name) of every reference to a generated tensor
        self.slots = tuple(slots)
        # RNNs cache their weights in _flat_weights; a call restores that cache
        self.rnn = tuple(rnn)
        # attributes legacy hooks (weight_norm, spectral_norm, pruning) write before every forward
        self.legacy = tuple(
            (m, _legacy_attribute(kind, hook)) for m in module.modules() for kind, hook in _legacy_hooks(m).values()
        )
        self.legacy = tuple(dict.fromkeys(self.legacy))
        # MultiheadAttention reads out_proj.weight without calling out_proj, so a legacy hook
        # there never sees generated tensors: its attribute is whatever it last computed
        stale = []
        for path, m in module.named_modules():
            if isinstance(m, nn.MultiheadAttention):
                out_proj = f"{path}.out_proj" if path else "out_proj"
                if any(f"{out_proj}.{n}" in gen_names for n in _legacy_hooks(m.out_proj)):
                    stale.append(out_proj)
        if stale:
            raise ValueError(
                f"Target: {stale} carry a legacy torch.nn.utils reparametrisation hook whose tensors are "
                "generated, but MultiheadAttention reads out_proj.weight without calling out_proj, so the hook "
                "would never apply them; use torch.nn.utils.parametrizations (e.g. weight_norm) instead"
            )
        # these layers have fused inference paths that read their parameters directly
        fused = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerEncoder)
        self.no_fastpath = any(isinstance(m, fused) for m in module.modules())
        # parametrisations that update state in place in training mode (power iteration)
        spectral = {}
        for n in gen_names:
            head, sep, tail = n.partition("parametrizations.")
            if sep and (not head or head.endswith(".")):
                tensor = head + tail.partition(".")[0]
                for m in module.get_submodule(head + "parametrizations." + tail.partition(".")[0]):
                    if isinstance(m, _SpectralNormParametrization):
                        spectral[tensor] = m
        self.spectral = tuple(sorted(spectral.items()))
        self.plan: list[_Entry] | None = None  # grouped calls only; built on first use


# --------------------------------------------------------------------- running a call
# A call enters a _Frame: the weight swap (shared) or the forward swaps (grouped). Frames of
# the running calls are kept per thread, so that torch.utils.checkpoint called inside the
# module can hand its recomputation a function that re-enters them.

_LOCAL = threading.local()  # .frames: running calls, innermost last; .bypass: inside a vmapped subtree


def _running_frames() -> list:
    frames = getattr(_LOCAL, "frames", None)
    if frames is None:
        frames = _LOCAL.frames = []
    return frames


class _Switch:
    """A process-wide setting changed while at least one call needs it (counted, locked)."""

    def __init__(self, turn_on, turn_off):
        self._lock = threading.Lock()
        self._users = 0
        self._turn_on, self._turn_off = turn_on, turn_off
        self._saved: Any = None

    def acquire(self) -> None:
        with self._lock:
            if self._users == 0:
                self._saved = self._turn_on()
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._turn_off(self._saved)
                self._saved = None


_CHECKPOINT_FUNCTION = _checkpoint.CheckpointFunction
_CHECKPOINT_GENERATOR = _checkpoint._checkpoint_without_reentrant_generator


class _CheckpointFunctionInCall:
    """Stands in for ``torch.utils.checkpoint.CheckpointFunction`` (``use_reentrant=True``)
    while a call runs: the generated tensors become extra inputs of the checkpointed function,
    which re-enters the running calls' swaps with them, so the recomputation in backward
    reads them and their gradients flow back."""

    @staticmethod
    def apply(function, preserve_rng_state, *args):
        frames = tuple(getattr(_LOCAL, "frames", ()))
        if not frames:
            return _CHECKPOINT_FUNCTION.apply(function, preserve_rng_state, *args)
        if torch._C._are_functorch_transforms_active():
            return function(*args)  # under vmap: no recomputation (functorch cannot run it)
        n = len(args)
        tensors = [t for f in frames for t in f.tensors()]

        def run(*inputs):
            it = iter(inputs[n:])
            with _Active(tuple(f.rebound(it) for f in frames)):
                return function(*inputs[:n])

        return _CHECKPOINT_FUNCTION.apply(run, preserve_rng_state, *args, *tensors)


def _checkpoint_generator_in_call(function, *rest, **kwargs):
    """Stands in for ``torch.utils.checkpoint._checkpoint_without_reentrant_generator``
    (``use_reentrant=False``) while a call runs: the recomputation re-enters the running
    calls' swaps (the forward itself runs inside the call)."""
    frames = tuple(getattr(_LOCAL, "frames", ()))
    if not frames:
        return _CHECKPOINT_GENERATOR(function, *rest, **kwargs)
    if torch._C._are_functorch_transforms_active():
        return _no_recomputation()

    def run(*a, **k):
        with _Active(frames):
            return function(*a, **k)

    return _CHECKPOINT_GENERATOR(run, *rest, **kwargs)


def _no_recomputation():
    yield  # checkpoint runs the function once, saving its activations as usual


def _checkpoint_on():
    saved = (_checkpoint.CheckpointFunction, _checkpoint._checkpoint_without_reentrant_generator)
    _checkpoint.CheckpointFunction = _CheckpointFunctionInCall
    _checkpoint._checkpoint_without_reentrant_generator = _checkpoint_generator_in_call
    return saved


def _checkpoint_off(saved) -> None:
    _checkpoint.CheckpointFunction, _checkpoint._checkpoint_without_reentrant_generator = saved


def _fastpath_off():
    saved = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    return saved


_CHECKPOINT_SWITCH = _Switch(_checkpoint_on, _checkpoint_off)
# Grouped calls turn off the fused MultiheadAttention / TransformerEncoder inference path,
# which reads the layers' own parameters instead of calling their (replaced) forwards.
_FASTPATH_SWITCH = _Switch(_fastpath_off, torch.backends.mha.set_fastpath_enabled)


class _Frame:
    """One running call: its structure, weights and mode (``G`` is ``None`` when shared)."""

    __slots__ = ("target", "built", "weights", "G", "per_group_norm")

    def __init__(self, target: Target, built: _Built, weights, G: int | None, per_group_norm: bool = False):
        self.target, self.built, self.weights, self.G, self.per_group_norm = target, built, weights, G, per_group_norm

    def swap(self):
        if self.G is None:
            return _ParameterSwap(self.built, self.weights)
        return self.target._swapped_forwards(self.built, self.weights, self.G, self.per_group_norm)

    def tensors(self) -> list[torch.Tensor]:
        return [self.weights[n] for n in self.target._spec.names]

    def rebound(self, it) -> _Frame:
        """This frame with the next tensors of ``it`` as its weights (in spec order)."""
        weights = {n: next(it) for n in self.target._spec.names}
        return _Frame(self.target, self.built, weights, self.G, self.per_group_norm)


class _Active:
    """Enter ``frames``' swaps; restore everything on exit, also after an error."""

    __slots__ = ("frames", "_exits", "_depth", "_fast")

    def __init__(self, frames: tuple[_Frame, ...]):
        self.frames = frames

    def __enter__(self) -> None:
        self._fast = any(f.G is not None and f.built.no_fastpath for f in self.frames)
        _CHECKPOINT_SWITCH.acquire()
        if self._fast:
            _FASTPATH_SWITCH.acquire()
        stack = _running_frames()
        self._depth = len(stack)
        self._exits = []
        try:
            for f in self.frames:
                cm = f.swap()
                cm.__enter__()
                self._exits.append(cm)
                stack.append(f)
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc) -> None:
        try:
            for cm in reversed(self._exits):
                cm.__exit__(None, None, None)
        finally:
            del _running_frames()[self._depth :]
            if self._fast:
                _FASTPATH_SWITCH.release()
            _CHECKPOINT_SWITCH.release()


def _save_caches(built: _Built) -> list | None:
    """What the module caches from its parameters: RNN flat weights and the attributes legacy
    hooks write. A forward re-derives both, so after a call they would hold generated tensors
    until the module's next forward; a call restores them."""
    if not built.rnn and not built.legacy:
        return None
    saved: list = [(o, "_flat_weights", o.__dict__.get("_flat_weights", _MISSING)) for o in built.rnn]
    saved += [(o, "_flat_weight_refs", o.__dict__.get("_flat_weight_refs", _MISSING)) for o in built.rnn]
    saved += [(m, name, m.__dict__.get(name, _MISSING)) for m, name in built.legacy]
    return saved


def _restore_caches(saved: list | None) -> None:
    for m, name, value in saved or ():
        if value is _MISSING:
            m.__dict__.pop(name, None)
        else:
            m.__dict__[name] = value


class _ParameterSwap:
    """Put ``weights`` into the owners' parameter slots until exit; always restored."""

    __slots__ = ("built", "weights", "_saved", "_caches")

    def __init__(self, built: _Built, weights):
        self.built, self.weights = built, weights

    def __enter__(self) -> None:
        self._caches = _save_caches(self.built)
        saved = self._saved = []
        weights = self.weights
        try:
            for owner, attr, canon in self.built.slots:
                params = owner._parameters
                saved.append((params, attr, params[attr]))
                params[attr] = weights[canon]
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc) -> None:
        for params, attr, orig in reversed(self._saved):
            params[attr] = orig
        _restore_caches(self._caches)


@contextmanager
def _restored_caches(built: _Built):
    saved = _save_caches(built)
    try:
        yield
    finally:
        _restore_caches(saved)


@contextmanager
def _swapped_forwards(swaps):
    saved = []
    try:
        for owner, fwd in swaps:
            saved.append((owner, owner.__dict__.get("forward", _MISSING)))
            owner.__dict__["forward"] = fwd
        yield
    finally:
        for owner, prev in reversed(saved):
            if prev is _MISSING:
                owner.__dict__.pop("forward", None)
            else:
                owner.__dict__["forward"] = prev


def _hooked(module: nn.Module) -> bool:
    """Whether calling ``module`` would run hooks (its own or global ones)."""
    from torch.nn.modules import module as _m

    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
        or _m._global_forward_hooks
        or _m._global_forward_pre_hooks
        or _m._global_backward_hooks
        or _m._global_backward_pre_hooks
    )


# --------------------------------------------------------------------- the Target

_FROM_SPEC = object()  # Target built from an explicit spec, not from a selection


class Target(nn.Module):
    """A functional view of ``module`` whose selected parameters come from outside.

    Args:
        module: any ``nn.Module``. It is kept as a submodule (so ``.to()`` moves it and its
            other parameters and buffers train as usual); see "What a call changes" below.
        select: which parameters are generated; see :meth:`WeightSpec.from_module`.
        spec: a prebuilt :class:`WeightSpec` (instead of ``select``).
        batch_dim: where the module's inputs and outputs carry their batch (an int ``>= 0``,
            default 0). Layers that read their input layout-free (``Linear``, ``LayerNorm``,
            ``Embedding``, modules run under vmap) find the batch there; layers with a batch
            position of their own keep it: convolutions, ``BatchNorm`` and ``GroupNorm`` at
            dim 0, ``MultiheadAttention`` and ``RNN``/``GRU``/``LSTM`` per ``batch_first``.
        per_sample: ``"auto"`` (grouped fast paths, vmap for other layers) or ``"vmap"``
            (the whole module under ``torch.func.vmap``; a reference path).
        channels_last: run convolutions in channels-last memory layout: 4-D (5-D) floating
            point inputs are converted with ``.to(memory_format=torch.channels_last)``
            (``channels_last_3d``) at every call, and the grouped per-sample and ensemble
            convolutions keep that layout. Results are the same; on CPU (oneDNN) this is
            often much faster for convolutions, on GPU it depends on the card and dtype.
            Generated conv weights keep their own layout (converting them costs more than
            it saves).

    Call ``target(weights, *inputs, **kwargs)``: weights without batch dims run shared,
    weights ``(B, ...)`` run per sample on inputs of batch ``B``. Use :meth:`ensemble` for K
    weight sets on one shared input. Every weight must have the dtype and device of the
    module's own parameter of that name. An empty batch (``B = 0``, or ``K = 0`` or
    ``N = 0`` in an ensemble) returns the empty result plain PyTorch returns.

    What a call changes: exactly what the module's own forward would change in its buffers
    (in training mode, ``BatchNorm`` running statistics and ``num_batches_tracked``, unless
    per-context statistics are in use). Never changed: parameters (objects and values; the
    module's copies of generated tensors are never read and receive no gradient), the module
    tree, ``forward`` methods, hooks, and what modules cache from their parameters (RNN flat
    weights, the attribute a legacy ``weight_norm`` hook writes): for the duration of a call
    parameters and forwards are swapped and they are restored in ``finally``, also when the
    call fails.

    Supported inside the module, in every mode:

    * ``torch.utils.checkpoint`` (either ``use_reentrant``): during a call, checkpoint is handed
      a function that re-enters the call's swap, so the recomputation in backward reads the
      generated tensors (with ``use_reentrant=True`` they are also passed as inputs of the
      checkpointed function, so their gradients flow back). Gradients equal those without
      checkpointing. Inside a part that runs under vmap, checkpoint cannot recompute and runs
      that part without checkpointing (exact, without the memory saving).
    * ``torch.nn.utils.parametrize`` parametrisations (``parametrizations.weight_norm``,
      ``orthogonal``, your own): generate the originals (their names are what
      ``named_parameters()`` lists); per sample each set is parametrised on its own.
      ``parametrizations.spectral_norm`` runs per sample only in eval mode (in training mode
      its power iteration updates one pair of vectors in place).
    * Legacy hooks: ``torch.nn.utils.weight_norm`` (generate ``weight_g``/``weight_v``) and
      ``torch.nn.utils.prune`` (generate ``weight_orig``); the legacy ``spectral_norm`` hook
      runs shared only, and one on a ``MultiheadAttention``'s ``out_proj`` is refused (attention
      reads ``out_proj.weight`` without calling ``out_proj``, so the hook never applies).

    The structure the module had at construction is checked at every call (the class of
    each module and the identities of its submodules and parameters: about 1.5 us for a
    3-layer MLP, 16 us for a 6-layer ``TransformerEncoder``).
    After a change (a layer replaced, a parameter or parametrisation added) the call
    re-plans when the generated tensors are still parameters of the same names and shapes
    (and, when built from ``select``, the selection still gives exactly them), and raises a
    ``ValueError`` naming the differences otherwise.

    Example::

        >>> import torch, torch.nn as nn
        >>> from hyperdnn import Target
        >>> target = Target(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)))
        >>> w = {k: torch.randn(8, *s) for k, s in target.spec.shapes.items()}
        >>> target(w, torch.randn(8, 3)).shape           # weight set b for sample b
        torch.Size([8, 2])
        >>> target.ensemble(w, torch.randn(5, 3)).shape  # 8 members on one batch of 5
        torch.Size([8, 5, 2])
        >>> net = target.materialize({k: v[0] for k, v in w.items()})  # a plain nn.Module
        >>> type(net).__name__
        'Sequential'
    """

    def __init__(
        self,
        module: nn.Module,
        select: Selection = None,
        *,
        spec: WeightSpec | None = None,
        batch_dim: int = 0,
        per_sample: str = "auto",
        channels_last: bool = False,
    ):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"Target: expected an nn.Module, got {type(module).__name__}")
        if isinstance(batch_dim, bool) or not isinstance(batch_dim, int):
            raise TypeError(f"Target: batch_dim must be an int >= 0, got {batch_dim!r} ({type(batch_dim).__name__})")
        if batch_dim < 0:
            raise ValueError(
                f"Target: batch_dim must be an int >= 0, got {batch_dim} (count from the front: a negative "
                "dim would point at different dims for inputs of different rank)"
            )
        if not isinstance(per_sample, str):
            raise TypeError(
                f"Target: per_sample must be 'auto' or 'vmap', got {per_sample!r} ({type(per_sample).__name__})"
            )
        if per_sample not in ("auto", "vmap"):
            raise ValueError(f"Target: per_sample must be 'auto' or 'vmap', got {per_sample!r}")
        if not isinstance(channels_last, bool):
            raise TypeError(f"Target: channels_last must be a bool, got {type(channels_last).__name__}")
        if spec is None:
            _normalize_selection(select, where="Target")
            spec = WeightSpec.from_module(module, select)
            self._select: Any = select
        else:
            if select is not None:
                raise ValueError(f"Target: pass either select or spec, not both (got select={select!r} and a spec)")
            if not isinstance(spec, WeightSpec):
                raise TypeError(f"Target: spec must be a WeightSpec, got {type(spec).__name__}")
            params = dict(module.named_parameters())
            bad = [t.name for t in spec if t.name not in params or tuple(params[t.name].shape) != t.shape]
            if bad:
                raise ValueError(f"Target: spec tensors {bad} are not parameters of the module with those shapes")
            self._select = _FROM_SPEC
        self.module = module
        self._spec = spec
        self.batch_dim = batch_dim
        self.per_sample_mode = per_sample
        self.channels_last = channels_last
        self._built: _Built | None = _Built(module, spec)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_built"] = None  # rebuilt on the next call
        return state

    @property
    def spec(self) -> WeightSpec:
        """The :class:`WeightSpec` of the generated tensors."""
        return self._spec

    def default_weights(self) -> dict[str, torch.Tensor]:
        """The module's own current values of the generated tensors (detached copies)."""
        own = self._current().own
        return {t.name: own[t.name].detach().clone() for t in self._spec}

    # ------------------------------------------------------------------ calling
    def forward(self, weights: Mapping[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """Run with ``weights``: shared if they have no batch dim, else per sample.

        Args:
            weights: spec name -> tensor, each of the spec's shape (shared) or ``(B, *shape)``
                (per sample), of the dtype and on the device of the module's own parameter.
            *args, **kwargs: the module's inputs; per sample, of batch ``B`` at ``batch_dim``.

        Returns:
            What the module returns; per sample, sample ``b`` computed with weight set ``b``.

        Raises:
            TypeError, ValueError: wrong names (all listed), shapes, dtypes or devices of the
                weights, or a batch that does not match the inputs'.
        """
        built = self._current()
        batch = self._spec.check(weights, where="Target", like=built.own)
        if len(batch) == 0:
            return self._shared(weights, args, kwargs)
        if len(batch) == 1:
            return self._per_sample(weights, batch[0], args, kwargs)
        raise ValueError(f"Target: weights may have at most one batch dim, got batch shape {tuple(batch)}")

    def shared(self, weights: Mapping[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """One weight set (each tensor of its spec shape) for the whole input batch."""
        built = self._current()
        batch = self._spec.check(weights, where="Target.shared", like=built.own)
        if len(batch):
            raise ValueError(f"Target.shared: expected weights without batch dims, got batch shape {tuple(batch)}")
        return self._shared(weights, args, kwargs)

    def per_sample(self, weights: Mapping[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """Weight set ``b`` for sample ``b``: weights ``(B, ...)``, inputs of batch ``B``."""
        built = self._current()
        batch = self._spec.check(weights, where="Target.per_sample", like=built.own)
        if len(batch) != 1:
            raise ValueError(
                f"Target.per_sample: expected weights with one batch dim (B, ...), got batch shape {tuple(batch)}"
            )
        return self._per_sample(weights, batch[0], args, kwargs)

    def ensemble(self, weights: Mapping[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """K weight sets on one shared input of batch N; returns outputs ``(K, N, ...)``
        (the member dim first, then the output's own dims with its batch at ``batch_dim + 1``)."""
        built = self._current()
        batch = self._spec.check(weights, where="Target.ensemble", like=built.own)
        if len(batch) != 1:
            raise ValueError(
                f"Target.ensemble: expected weights with one batch dim (K, ...), got batch shape {tuple(batch)}"
            )
        return self._ensemble(weights, batch[0], args, kwargs)

    def materialize(self, weights: Mapping[str, torch.Tensor]) -> nn.Module:
        """A deep copy of the module with ``weights`` loaded as its ordinary parameters.

        The copy needs nothing from hyperdnn: it runs, trains and saves like the original
        (``torch.save(m.state_dict())``, then ``load_state_dict`` into a freshly constructed
        module of the same class). Its parameters are detached copies of ``weights`` with the
        module's own ``requires_grad``; tied parameters stay tied; buffers (e.g. BatchNorm
        running statistics) are the module's current ones. The module itself is unchanged.

        Args:
            weights: one weight set: spec name -> tensor of the spec's shape (no batch dim).

        Returns:
            The new module; ``materialize(w)(x)`` equals ``target(w, x)``.

        Raises:
            ValueError: batched weights (index one set: ``{k: v[i] for k, v in w.items()}``),
                or the checks of :meth:`forward`.

        Example::

            >>> import torch, torch.nn as nn
            >>> from hyperdnn import Target
            >>> target = Target(nn.Linear(3, 2))
            >>> w = {"weight": torch.ones(2, 3), "bias": torch.zeros(2)}
            >>> target.materialize(w)(torch.ones(1, 3))
            tensor([[3., 3.]], grad_fn=<AddmmBackward0>)
        """
        built = self._current()
        batch = self._spec.check(weights, where="Target.materialize", like=built.own)
        if len(batch):
            raise ValueError(
                f"Target.materialize: expected one weight set without batch dims, got batch shape {tuple(batch)}; "
                "index one set first: {k: v[i] for k, v in weights.items()}"
            )
        # The attribute a legacy hook writes is a non-leaf tensor, which deepcopy refuses;
        # the copy gets it recomputed from its own (loaded) parameters below.
        memo: dict[int, Any] = {}
        for m, name in built.legacy:
            if isinstance(m.__dict__.get(name), torch.Tensor):
                memo[id(m.__dict__[name])] = None
        copy_ = copy.deepcopy(self.module, memo)
        params = dict(copy_.named_parameters())
        with torch.no_grad():
            for t in self._spec:
                params[t.name].copy_(weights[t.name])
        for m in copy_.modules():
            for kind, hook in _legacy_hooks(m).values():
                if kind == "weight_norm":
                    setattr(m, hook.name, hook.compute_weight(m))
                elif kind == "prune":
                    setattr(m, hook._tensor_name, hook.apply_mask(m))
                else:
                    setattr(m, hook.name, hook.compute_weight(m, do_power_iteration=False))
        return copy_

    # ------------------------------------------------------------------ internals
    # The entry points above validate; HyperModel calls these directly with weights it
    # generated for this spec.
    def _current(self) -> _Built:
        """The cached structure, rebuilt (and re-validated) if the module changed since."""
        built = self._built
        if built is None or not built.fingerprint.unchanged():
            self._check_structure()
            built = self._built = _Built(self.module, self._spec)
        return built

    def _check_structure(self) -> None:
        """Raise if the module no longer has the generated tensors of the spec."""
        params = dict(self.module.named_parameters())
        if self._select is _FROM_SPEC:
            now = {n: tuple(params[n].shape) for n in self._spec.names if n in params}
        else:
            try:
                now = WeightSpec.from_module(self.module, self._select).shapes
            except ValueError:  # the selection matches nothing now
                now = {}
        was = self._spec.shapes
        missing = [n for n in was if n not in now]
        new = [n for n in now if n not in was]
        reshaped = [f"{n}: {was[n]} -> {now[n]}" for n in was if n in now and now[n] != was[n]]
        if missing or new or reshaped:
            raise ValueError(
                "Target: the module changed since this Target was built and no longer matches its spec "
                f"(the tensors the hypernetwork generates). No longer parameters: {missing}. "
                f"Newly selected: {new}. Reshaped: {reshaped}. Build a new Target (and hypernetwork) "
                "for the changed module."
            )

    def _shared(self, weights, args, kwargs):
        # functional_call's own swap, minus its per-call walk over the module: the owners
        # of the generated tensors (tied aliases included) are resolved once and cached.
        built = self._current()
        args, kwargs = self._layout(args, kwargs)
        with _Active((_Frame(self, built, weights, None),)):
            return self.module(*args, **kwargs)

    def _per_sample(self, weights, B: int, args, kwargs):
        n = self._input_batch(args, kwargs)
        if n is None:
            raise ValueError(
                f"Target.per_sample: expected a tensor input with a batch dim at {self.batch_dim}, got none"
            )
        if n != B:
            raise ValueError(
                f"Target.per_sample: weights have batch {B} but the input has batch {n} at dim "
                f"{self.batch_dim}; they must match (use Target.ensemble for K weight sets on one shared input)"
            )
        if B == 0:
            return self._empty(weights, 0, args, kwargs)
        return self._grouped(weights, B, args, kwargs, per_group_norm=False)

    def _ensemble(self, weights, K: int, args, kwargs):
        d = self.batch_dim
        n = self._input_batch(args, kwargs)
        if n is None:
            raise ValueError(f"Target.ensemble: expected a tensor input with a batch dim at {d}, got none")
        out = None
        if K == 0 or n == 0:
            out = self._empty(weights, n, args, kwargs)
        else:
            out = self._ensemble_shared_first_layer(weights, K, n, args, kwargs)
        if out is None:

            def rep(t):
                if isinstance(t, torch.Tensor) and t.dim() > d and t.shape[d] == n:
                    t = t.unsqueeze(d).expand(*t.shape[:d], K, *t.shape[d:])
                    return t.reshape(*t.shape[:d], K * n, *t.shape[d + 2 :])
                return t

            args_r = tuple(rep(a) for a in args)
            kwargs_r = {k: rep(v) for k, v in kwargs.items()}
            out = self._grouped(weights, K, args_r, kwargs_r, per_group_norm=True)

        def split(t):
            if isinstance(t, torch.Tensor) and t.dim() > d and t.shape[d] == K * n:
                return t.reshape(*t.shape[:d], K, n, *t.shape[d + 1 :]).movedim(d, 0)
            return t

        return pytree.tree_map(split, out)

    def _empty(self, weights, n: int, args, kwargs):
        """No samples (per sample ``B = 0``; ensemble ``K = 0`` or ``N = 0``): the module's
        forward on the inputs cut to an empty batch, with one weight set summed from the
        generated tensors (so the empty outputs stay connected to them)."""
        d = self.batch_dim

        def cut(t):
            if isinstance(t, torch.Tensor) and t.dim() > d and t.shape[d] == n:
                return t.narrow(d, 0, 0)
            return t

        one = {k: v.sum(0) for k, v in weights.items()}
        return self._shared(one, tuple(cut(a) for a in args), {k: cut(v) for k, v in kwargs.items()})

    def _layout(self, args, kwargs):
        """Inputs in the memory layout the target runs in (channels-last when asked)."""
        if not self.channels_last:
            return args, kwargs

        def conv(t):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                if t.dim() == 4:
                    return t.to(memory_format=torch.channels_last)
                if t.dim() == 5:
                    return t.to(memory_format=torch.channels_last_3d)
            return t

        return tuple(conv(a) for a in args), {k: conv(v) for k, v in kwargs.items()}

    def _input_batch(self, args, kwargs) -> int | None:
        for a in list(args) + list(kwargs.values()):
            if isinstance(a, torch.Tensor) and a.dim() > self.batch_dim:
                return a.shape[self.batch_dim]
        return None

    def _plan(self, built: _Built) -> list[_Entry]:
        """The grouped plan: one entry per module whose ``forward`` a grouped call replaces."""
        if built.plan is None:
            built.plan = _build_plan(self.module, self._spec.names, self.per_sample_mode == "vmap")
        return built.plan

    @contextmanager
    def _swapped_forwards(self, built: _Built, weights, G: int, per_group_norm: bool):
        training = [name for name, m in built.spectral if m.training]
        if training:
            raise ValueError(
                f"Target: the spectral_norm parametrisation of {training} runs its power iteration in "
                "training mode, updating one pair of vectors in place; with batched weights call .eval() "
                "on the module first, or use shared weights"
            )
        swaps = [
            (
                e.owner,
                _make_forward(
                    e,
                    {local: weights[canon] for local, canon in e.names.items()},
                    G,
                    per_group_norm,
                    self.channels_last,
                    self.batch_dim,
                ),
            )
            for e in self._plan(built)
        ]
        with _swapped_forwards(swaps), _restored_caches(built):
            yield

    def _grouped(self, weights, G: int, args, kwargs, per_group_norm: bool):
        built = self._current()
        args, kwargs = self._layout(args, kwargs)
        with _Active((_Frame(self, built, weights, G, per_group_norm),)):
            return self.module(*args, **kwargs)

    def _ensemble_shared_first_layer(self, weights, K: int, n: int, args, kwargs):
        """Ensemble fast path for an ``nn.Sequential`` that starts with a generated ``Linear``
        or (ungrouped) convolution: that layer meets the shared input once for all K weight
        sets (one GEMM, or one convolution with K times the output channels) instead of
        meeting K copies of it; the other layers run grouped. ``None`` when the module is not
        of that form (then the input is replicated K times)."""
        m = self.module
        if type(m) is not nn.Sequential or len(m) == 0 or self.batch_dim != 0 or kwargs or len(args) != 1:
            return None
        first = m[0]
        x = args[0]
        if not isinstance(x, torch.Tensor) or self.per_sample_mode != "auto" or _hooked(m) or _hooked(first):
            return None
        built = self._current()
        entry = next((e for e in self._plan(built) if e.owner is first), None)
        if entry is None or entry.kind not in ("linear", "conv") or entry.derived or "weight" not in entry.names:
            return None
        gen = {local: weights[canon] for local, canon in entry.names.items()}
        w = gen["weight"]
        b = gen["bias"] if "bias" in gen else first.bias
        bias = None if b is None else (b.reshape(-1) if "bias" in gen else b.repeat(K))
        (x,), _ = self._layout((x,), {})
        if entry.kind == "linear":
            y = F.linear(x, w.reshape(-1, w.shape[-1]), bias)  # (n, ..., K*O)
            y = y.unflatten(-1, (K, w.shape[1])).movedim(-2, 0)  # (K, n, ..., O)
            h = y.reshape(K * n, *y.shape[2:])
        else:
            nd = len(first.kernel_size)
            if first.groups != 1 or x.dim() != nd + 2:
                return None
            padding = first.padding
            if first.padding_mode != "zeros":
                x = F.pad(x, first._reversed_padding_repeated_twice, mode=first.padding_mode)
                padding = 0
            y = _CONV[nd](x, w.reshape(-1, *w.shape[2:]), bias, first.stride, padding, first.dilation, 1)
            h = _from_grouped_channels(y, K, self.channels_last)
        with _Active((_Frame(self, built, weights, K, True),)):
            for layer in list(m)[1:]:
                h = layer(h)
        return h
