"""Target: run any ``nn.Module`` with generated weights, one set or one per sample.

Three execution modes, chosen by the weights' leading batch dims:

* **shared** - weights without batch dims: one weight set for the whole input batch
  (``torch.func.functional_call``).
* **per-sample** - weights ``(B, ...)`` and inputs of batch ``B``: sample ``b`` runs with
  weight set ``b``. Runs batched: every supported layer has a grouped fast path (``baddbmm``
  for ``Linear``, grouped convolution for ``Conv``/``ConvTranspose``, batched affine for norm
  layers, a batched gather for ``Embedding``, a batched time loop for ``RNN``/``GRU``/``LSTM``,
  ``torch.func.vmap`` for ``MultiheadAttention``); a module of any other type that owns
  generated tensors is run under ``torch.func.vmap``. Never a Python loop over samples.
* **ensemble** - weights ``(K, ...)`` and one shared input batch of ``N``: K predictions
  ``(K, N, ...)`` in one batched pass.

The module is never left modified: the grouped mode swaps ``forward`` on the owning
modules for the duration of the call and restores it in ``finally``.

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
Inputs must carry their batch at ``batch_dim`` (0 by default; non-batch-first
``MultiheadAttention``/RNN layers inside the module keep their own convention).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap
from torch.utils import _pytree as pytree

from hyperdnn.spec import Selection, WeightSpec

__all__ = ["Target"]

_MISSING = object()


# --------------------------------------------------------------------- fast paths
# Every handler runs a module whose generated tensors carry a leading group dim G on an
# input whose batch (at the module's own batch dim) is G * N, group-major. Tensors the
# hypernetwork does not generate come from the module itself, unbatched.


def _get(owner: nn.Module, gen: Mapping[str, torch.Tensor], attr: str):
    return gen[attr] if attr in gen else getattr(owner, attr)


def _linear(owner: nn.Linear, gen, G: int, x: torch.Tensor) -> torch.Tensor:
    w, b = _get(owner, gen, "weight"), _get(owner, gen, "bias")
    shape = x.shape
    x3 = x.reshape(G, -1, shape[-1])
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
    return y.reshape(*shape[:-1], y.shape[-1])


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
    w, b = _get(owner, gen, "weight"), _get(owner, gen, "bias")
    unbatched_input = x.dim() == nd + 1
    if unbatched_input:
        x = x.unsqueeze(0)
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
    y = _from_grouped_channels(y, G, cl)
    return y.squeeze(0) if unbatched_input else y


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
    yv = y.reshape(G, -1, *shape[1:])  # (G, N, ...)
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


def _layer_norm(owner: nn.LayerNorm, gen, G: int, x: torch.Tensor):
    y = F.layer_norm(x, owner.normalized_shape, None, None, owner.eps)
    w, b = _get(owner, gen, "weight"), _get(owner, gen, "bias")
    return _affine(y, w, b, G, -1, gen)


def _group_norm(owner: nn.GroupNorm, gen, G: int, x: torch.Tensor):
    y = F.group_norm(x, owner.num_groups, None, None, owner.eps)
    w, b = _get(owner, gen, "weight"), _get(owner, gen, "bias")
    return _affine(y, w, b, G, 1, gen)


def _embedding(owner: nn.Embedding, gen, G: int, idx: torch.Tensor):
    if owner.max_norm is not None:
        raise ValueError(
            "Target: Embedding with max_norm renormalises weights in place; not supported with batched weights"
        )
    w = gen["weight"]
    V = w.shape[1]
    offs = (torch.arange(G, device=idx.device) * V).view(G, *([1] * idx.dim()))
    flat = idx.reshape(G, -1, *idx.shape[1:]) + offs
    out = F.embedding(flat.reshape(-1), w.reshape(G * V, -1))
    return out.reshape(*idx.shape, w.shape[-1])


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


_BYPASS = threading.local()


def _vmapped(owner: nn.Module, gen_subtree: Mapping[str, torch.Tensor], G: int, dims: _Dims, args, kwargs):
    """Run ``owner`` under vmap over G groups; ``dims`` maps (args, kwargs) to batch dims."""
    arg_dims, kw_dims = dims(args, kwargs)

    def split(t, d):
        if d is None or not isinstance(t, torch.Tensor):
            return t
        return t.reshape(*t.shape[:d], G, -1, *t.shape[d + 1 :])

    args_g = tuple(split(a, d) for a, d in zip(args, arg_dims, strict=False))
    kw_names = list(kwargs)
    kw_vals = tuple(split(kwargs[k], kw_dims.get(k)) for k in kw_names)
    kw_in = tuple(kw_dims.get(k) for k in kw_names)

    treedef_box: list = []

    def one(w, a, kv):
        prev = getattr(_BYPASS, "on", False)
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

    tensors = vmap(one, in_dims=(0, tuple(arg_dims), kw_in), out_dims=0, randomness="different")(
        dict(gen_subtree), args_g, kw_vals
    )
    treedef, is_tensor, others = treedef_box
    out_dim = dims.out_dim

    def merge(t):
        t = t.movedim(0, out_dim)
        return t.reshape(*t.shape[:out_dim], -1, *t.shape[out_dim + 2 :])

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


# --------------------------------------------------------------------- the Target


class Target(nn.Module):
    """A functional view of ``module`` whose selected parameters come from outside.

    Args:
        module: any ``nn.Module``. It is kept as a submodule (so ``.to()`` moves it and its
            other parameters and buffers train as usual) and never modified by a call.
        select: which parameters are generated; see :meth:`WeightSpec.from_module`.
        spec: a prebuilt :class:`WeightSpec` (instead of ``select``).
        batch_dim: where inputs and outputs carry their batch (default 0).
        per_sample: ``"auto"`` (grouped fast paths, vmap for unknown layers) or ``"vmap"``
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
    weight sets on one shared input.
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
        if per_sample not in ("auto", "vmap"):
            raise ValueError(f"Target: per_sample must be 'auto' or 'vmap', got {per_sample!r}")
        if not isinstance(channels_last, bool):
            raise TypeError(f"Target: channels_last must be a bool, got {type(channels_last).__name__}")
        if spec is None:
            spec = WeightSpec.from_module(module, select)
        else:
            params = dict(module.named_parameters())
            bad = [t.name for t in spec if t.name not in params or tuple(params[t.name].shape) != t.shape]
            if bad:
                raise ValueError(f"Target: spec tensors {bad} are not parameters of the module with those shapes")
        self.module = module
        self._spec = spec
        self.batch_dim = batch_dim
        self.per_sample_mode = per_sample
        self.channels_last = channels_last
        self._plan_cache: list | None = None
        self._slot_cache: list | None = None

    @property
    def spec(self) -> WeightSpec:
        """The :class:`WeightSpec` of the generated tensors."""
        return self._spec

    def default_weights(self) -> dict[str, torch.Tensor]:
        """The module's own current values of the generated tensors (detached copies)."""
        params = dict(self.module.named_parameters())
        return {t.name: params[t.name].detach().clone() for t in self._spec}

    # ------------------------------------------------------------------ calling
    def forward(self, weights: Mapping[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """Run with ``weights``: shared if they have no batch dim, else per sample."""
        batch = self._spec.check(weights, where="Target")
        if len(batch) == 0:
            return self._shared(weights, args, kwargs)
        if len(batch) == 1:
            return self._per_sample(weights, batch[0], args, kwargs)
        raise ValueError(f"Target: weights may have at most one batch dim, got batch shape {tuple(batch)}")

    def shared(self, weights: Mapping[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """One weight set for the whole input batch."""
        batch = self._spec.check(weights, where="Target.shared")
        if len(batch):
            raise ValueError(f"Target.shared: expected weights without batch dims, got batch shape {tuple(batch)}")
        return self._shared(weights, args, kwargs)

    def per_sample(self, weights: Mapping[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """Weight set ``b`` for sample ``b``: weights ``(B, ...)``, inputs of batch ``B``."""
        batch = self._spec.check(weights, where="Target.per_sample")
        if len(batch) != 1:
            raise ValueError(
                f"Target.per_sample: expected weights with one batch dim (B, ...), got batch shape {tuple(batch)}"
            )
        return self._per_sample(weights, batch[0], args, kwargs)

    def _shared(self, weights, args, kwargs):
        # functional_call's own swap, minus its per-call walk over the module: the owners
        # of the generated tensors (tied aliases included) are resolved once and cached.
        args, kwargs = self._layout(args, kwargs)
        with _swapped_parameters(self._slots(), weights):
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
        return self._grouped(weights, B, args, kwargs, per_group_norm=False)

    def ensemble(self, weights: Mapping[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """K weight sets on one shared input of batch N; returns outputs ``(K, N, ...)``."""
        batch = self._spec.check(weights, where="Target.ensemble")
        if len(batch) != 1:
            raise ValueError(
                f"Target.ensemble: expected weights with one batch dim (K, ...), got batch shape {tuple(batch)}"
            )
        return self._ensemble(weights, batch[0], args, kwargs)

    def _ensemble(self, weights, K: int, args, kwargs):
        d = self.batch_dim
        n = self._input_batch(args, kwargs)
        if n is None:
            raise ValueError(f"Target.ensemble: expected a tensor input with a batch dim at {d}, got none")
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

    # ------------------------------------------------------------------ internals
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

    def _plan(self) -> list:
        """(owner, kind, local gen names -> spec names, subtree prefix) for each swap."""
        if self._plan_cache is not None:
            return self._plan_cache
        gen_names = set(self._spec.names)
        # every (owner path, attr) that refers to a generated parameter, tied aliases included
        canonical: dict[int, str] = {}
        for name, p in self.module.named_parameters():
            canonical[id(p)] = name
        owners: dict[str, dict[str, str]] = {}
        for name, p in self.module.named_parameters(remove_duplicate=False):
            canon = canonical[id(p)]
            if canon not in gen_names:
                continue
            path, _, attr = name.rpartition(".")
            owners.setdefault(path, {})[attr] = canon
        modules = dict(self.module.named_modules(remove_duplicate=False))
        # Layers whose forward reads child parameters directly (MultiheadAttention reads
        # out_proj.weight) own their whole subtree.
        for path in list(owners):
            parts = path.split(".") if path else []
            for i in range(len(parts)):
                anc = ".".join(parts[:i])
                if isinstance(modules[anc], nn.MultiheadAttention):
                    rel = ".".join(parts[i:])
                    for attr, canon in owners.pop(path).items():
                        owners.setdefault(anc, {})["\0" + rel + "." + attr] = canon
                    break
        force_vmap = self.per_sample_mode == "vmap"
        if force_vmap:
            self._plan_cache = [("", self.module, "vmap", {n: n for n in self._spec.names})]
            return self._plan_cache
        plan = []
        subtrees: list[str] = []
        for path in sorted(owners, key=lambda p: (p.count(".") + (p != ""), p)):
            if any(v == "" or path == v or path.startswith(v + ".") for v in subtrees):
                continue
            owner = modules[path]
            kind = _kind(owner) or "vmap"
            if kind in ("vmap", "mha", "mha_vmap"):
                subtrees.append(path)
                prefix = path + "." if path else ""
                sub = {}
                for p2, attrs in owners.items():
                    if p2 == path or p2.startswith(prefix) or path == "":
                        rel = p2[len(prefix) :] if prefix else p2
                        for attr, canon in attrs.items():
                            local = attr[1:] if attr.startswith("\0") else (rel + "." if rel else "") + attr
                            sub[local] = canon
                plan.append((path, owner, kind, sub))
            else:
                plan.append((path, owner, kind, dict(owners[path])))
        self._plan_cache = plan
        return plan

    def _slots(self) -> list[tuple[nn.Module, str, str]]:
        """(owner module, attribute, spec name) of every reference to a generated tensor."""
        if self._slot_cache is not None:
            return self._slot_cache
        canonical: dict[int, str] = {}
        for name, p in self.module.named_parameters():
            canonical[id(p)] = name
        modules = dict(self.module.named_modules(remove_duplicate=False))
        gen_names = set(self._spec.names)
        slots, seen = [], set()
        for name, p in self.module.named_parameters(remove_duplicate=False):
            canon = canonical[id(p)]
            path, _, attr = name.rpartition(".")
            owner = modules[path]
            if canon in gen_names and (id(owner), attr) not in seen:
                seen.add((id(owner), attr))
                slots.append((owner, attr, canon))
        self._slot_cache = slots
        return slots

    def _swaps(self, weights, G: int, per_group_norm: bool) -> list:
        swaps = []
        for _path, owner, kind, names in self._plan():
            gen = {local: weights[canon] for local, canon in names.items()}
            swaps.append((owner, _make_forward(owner, kind, gen, G, per_group_norm, self.channels_last)))
        return swaps

    def _grouped(self, weights, G: int, args, kwargs, per_group_norm: bool):
        args, kwargs = self._layout(args, kwargs)
        with _swapped_forwards(self._swaps(weights, G, per_group_norm)):
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
        entry = next((e for e in self._plan() if e[1] is first), None)
        if entry is None or entry[2] not in ("linear", "conv") or entry[3].get("weight") is None:
            return None
        gen = {local: weights[canon] for local, canon in entry[3].items()}
        w = gen["weight"]
        b = gen["bias"] if "bias" in gen else first.bias
        bias = None if b is None else (b.reshape(-1) if "bias" in gen else b.repeat(K))
        (x,), _ = self._layout((x,), {})
        if entry[2] == "linear":
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
        with _swapped_forwards(self._swaps(weights, K, per_group_norm=True)):
            for layer in list(m)[1:]:
                h = layer(h)
        return h


def _kind(owner: nn.Module) -> str | None:
    if isinstance(owner, nn.Linear):
        return "linear"
    if isinstance(owner, nn.modules.conv._ConvTransposeNd):
        return "convt"
    if isinstance(owner, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(owner, nn.modules.batchnorm._BatchNorm):
        return "bn"
    if isinstance(owner, nn.LayerNorm):
        return "ln"
    if isinstance(owner, nn.GroupNorm):
        return "gn"
    if isinstance(owner, nn.Embedding):
        return "emb"
    if isinstance(owner, nn.RNNBase):
        return "rnn"
    if isinstance(owner, nn.MultiheadAttention):
        return "mha_vmap" if owner.bias_k is not None or owner.add_zero_attn else "mha"
    return None


def _make_forward(owner: nn.Module, kind: str, gen, G: int, per_group_norm: bool, channels_last: bool = False):
    orig = type(owner).forward.__get__(owner)

    def guarded(fn):
        def forward(*args, **kwargs):
            if getattr(_BYPASS, "on", False):
                return orig(*args, **kwargs)
            return fn(*args, **kwargs)

        return forward

    if kind == "linear":
        return guarded(lambda x: _linear(owner, gen, G, x))
    if kind == "conv":
        return guarded(lambda x: _conv(owner, gen, G, x, channels_last))
    if kind == "convt":
        return guarded(lambda x, output_size=None: _conv_transpose(owner, gen, G, x, output_size, channels_last))
    if kind == "bn":
        return guarded(lambda x: _batch_norm(owner, gen, G, x, per_group_norm))
    if kind == "ln":
        return guarded(lambda x: _layer_norm(owner, gen, G, x))
    if kind == "gn":
        return guarded(lambda x: _group_norm(owner, gen, G, x))
    if kind == "emb":
        return guarded(lambda idx: _embedding(owner, gen, G, idx))
    if kind == "rnn":
        return guarded(lambda input, hx=None: _rnn(owner, gen, G, input, hx))
    if kind == "mha":
        return guarded(lambda *a, **k: _mha(owner, gen, G, *a, **k))
    if kind == "mha_vmap":
        dims = _mha_dims(owner)
        return guarded(lambda *a, **k: _vmapped(owner, gen, G, dims, a, k))
    dims = _Dims(0, 0)
    return guarded(lambda *a, **k: _vmapped(owner, gen, G, dims, a, k))


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


@contextmanager
def _swapped_parameters(slots, weights):
    """Put ``weights`` into the owners' parameter slots for the duration; always restored."""
    saved = []
    try:
        for owner, attr, canon in slots:
            params = owner._parameters
            saved.append((params, attr, params[attr]))
            params[attr] = weights[canon]
        yield
    finally:
        for params, attr, orig in reversed(saved):
            params[attr] = orig


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
