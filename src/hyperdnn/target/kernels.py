"""Grouped kernels: each supported layer type run with ``G`` weight sets in one batched call.

A grouped call (per sample or ensemble, see :class:`~hyperdnn.target.Target`) replaces, for its
duration, the ``forward`` of every layer that owns generated tensors by that layer type's
*kernel*: a function ``run(call, *inputs, **kwargs)`` with the layer's own forward signature
after ``call``. It sees the input batch as ``G`` groups of ``N`` samples, group-major, at the
layer's batch position, and the generated tensors with a leading ``G``
(``call.weights``); tensors the hypernetwork does not generate come from the layer itself,
unbatched (:meth:`GroupedCall.get` returns either).

One table maps a module type to its kernel. A built-in layer type is one kernel function below and
one line in ``_KERNELS``; a layer of your own is one function and one :func:`register_kernel`
call:

    >>> import torch, torch.nn as nn
    >>> from hyperdnn import Target
    >>> from hyperdnn.target import GroupedCall, register_kernel
    >>> class Scale(nn.Module):                       # y = x * weight, weight (D,)
    ...     def __init__(self, d):
    ...         super().__init__()
    ...         self.weight = nn.Parameter(torch.ones(d))
    ...     def forward(self, x):
    ...         return x * self.weight
    >>> @register_kernel(Scale, reads={"weight"})
    ... def grouped_scale(call: GroupedCall, x):
    ...     w = call.get("weight")                    # (G, D) generated, or the layer's (D,)
    ...     xg = x.unflatten(0, (call.groups, -1))    # (G, N, D)
    ...     w = w.unsqueeze(1) if "weight" in call.weights else w
    ...     return (xg * w).flatten(0, 1)
    >>> target = Target(nn.Sequential(nn.Linear(3, 4), Scale(4)))
    >>> w = {k: torch.randn(6, *s) for k, s in target.spec.shapes.items()}
    >>> target(w, torch.randn(6, 3)).shape            # no vmap: Scale runs grouped_scale
    torch.Size([6, 4])

A layer type without a kernel, a subclass that overrides ``forward``, a layer given an
instance-level ``forward``, or a layer that owns generated tensors its kernel does not read
runs under :func:`torch.func.vmap` instead (:mod:`hyperdnn.target.vmap`).

Built-in kernels:

* ``Linear``: ``baddbmm`` over ``(G, N*..., in)``, the batch moved from ``batch_dim`` to the front;
* ``Conv1d/2d/3d``: one grouped convolution with ``groups = G * groups`` on ``(N, G*C, ...)``
  (non-zero padding modes pad first), channels-last when the target asks;
* ``ConvTranspose1d/2d/3d``: one grouped transposed convolution;
* ``BatchNorm`` (and ``SyncBatchNorm`` in one process): normalisation without affine (over the
  whole batch per sample, over each member in an ensemble; running statistics update as the
  layer would), then the per-group affine;
* ``LayerNorm``, ``GroupNorm``: normalisation without affine, then the per-group affine;
* ``Embedding``: one gather from the ``(G*V, D)`` stacked tables (an index outside
  ``[0, V)`` raises ``IndexError`` as ``F.embedding`` does; the ``padding_idx`` row gets no
  gradient);
* ``RNN``/``GRU``/``LSTM``: the input projection for all time steps in one ``bmm``, then a loop
  over time (not samples) with a ``bmm`` per step; multi-layer, bidirectional, batch-first;
* ``MultiheadAttention``: batched projections and ``scaled_dot_product_attention``; it reads
  ``out_proj`` itself, so it owns the tensors of its subtree. With
  ``add_bias_kv``/``add_zero_attn`` it runs under vmap.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn.target.vmap import Dims

__all__ = [
    "GroupedCall",
    "GroupedKernel",
    "register_kernel",
    "kernel_for",
    "reads_submodules",
    "from_grouped_channels",
]


@dataclass(frozen=True, slots=True)
class GroupedCall:
    """What a kernel knows about the call it serves.

    Attributes:
        module: the layer whose forward the kernel replaces.
        weights: its generated tensors by local name (``"weight"``, ``"out_proj.bias"``), each
            ``(G, *shape)``; a reparametrised tensor appears under the name the layer reads,
            already computed per group.
        groups: ``G``, the number of weight sets; the input batch is ``G * N``, group-major.
        batch_dim: where the target's inputs carry their batch (layers with a batch position
            of their own, such as convolutions at dim 0, keep theirs).
        per_group_norm: normalise batch statistics per group (ensemble members) instead of
            over the whole batch (per sample).
        channels_last: run convolutions in channels-last memory layout.
    """

    module: nn.Module
    weights: Mapping[str, torch.Tensor]
    groups: int
    batch_dim: int = 0
    per_group_norm: bool = False
    channels_last: bool = False

    def get(self, name: str) -> Any:
        """The generated tensor ``name`` ``(G, ...)`` if there is one, else the layer's own
        attribute (a dotted path such as ``"out_proj.bias"`` is followed), unbatched."""
        weights = self.weights
        if name in weights:
            return weights[name]
        obj = self.module
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj

    def groups_first(self, x: Any, dim: int) -> torch.Tensor:
        """``x`` with its batch (``G`` groups of ``N``) moved from ``dim`` to dim 0.

        Raises:
            ValueError: ``x`` is not a tensor with a batch divisible by ``G`` at ``dim``
                (the message names the layer and the shape).
        """
        G = self.groups
        if not isinstance(x, torch.Tensor) or x.dim() <= dim or x.shape[dim] % G:
            given = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"Target: {type(self.module).__name__} with batched weights expected an input with its batch of "
                f"{G} weight sets x N samples at dim {dim}, got {given}"
            )
        return x.movedim(dim, 0) if dim else x


Reads = frozenset[str] | Callable[[nn.Module], Iterable[str]]


@dataclass(frozen=True)
class GroupedKernel:
    """A layer type's grouped implementation: one line of the kernel table.

    Attributes:
        run: ``run(call, *inputs, **kwargs)``: the layer's forward for ``call.groups`` weight
            sets (see :class:`GroupedCall`).
        reads: local names of the tensors ``run`` can take generated (``{"weight", "bias"}``),
            or a function of the layer giving them; a layer with other generated tensors runs
            under vmap.
        supports: a function of the layer saying whether ``run`` handles this instance
            (``None``: every instance); an unsupported one runs under vmap.
        subtree: ``run`` reads its submodules' tensors itself (attention reads
            ``out_proj.weight`` without calling ``out_proj``), so generated tensors anywhere
            below the layer are handed to it.
        vmap_dims: batch dims of the layer's inputs and outputs when it runs under vmap
            (``None``: ``batch_dim`` for every tensor).
    """

    run: Callable[..., Any]
    reads: Reads
    supports: Callable[[nn.Module], bool] | None = None
    subtree: bool = False
    vmap_dims: Callable[[nn.Module], Dims] | None = None

    def handles(self, module: nn.Module, names: Iterable[str]) -> bool:
        """Whether ``run`` can serve ``module`` with the generated tensors ``names``."""
        if self.supports is not None and not self.supports(module):
            return False
        reads = self.reads if isinstance(self.reads, frozenset) else frozenset(self.reads(module))
        return set(names) <= reads


# --------------------------------------------------------------------- layout helpers


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


def from_grouped_channels(y: torch.Tensor, G: int, channels_last: bool = False) -> torch.Tensor:
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


def _spatial_input(call: GroupedCall, x: Any, nd: int) -> torch.Tensor:
    """A convolution's input ``(G*N, C, *S)``, checked."""
    if not isinstance(x, torch.Tensor) or x.dim() != nd + 2:
        given = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"Target: {type(call.module).__name__} with batched weights expected a batched {nd + 2}-D input "
            f"(batch, channels, ...), got {given}"
        )
    return call.groups_first(x, 0)


def _conv_weights(call: GroupedCall) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A convolution's weight ``(G*O, I/groups, *K)`` and bias ``(G*O,)`` (or ``None``)."""
    G = call.groups
    w, b = call.get("weight"), call.get("bias")
    if "weight" not in call.weights:
        w = w.expand(G, *w.shape)
    if b is not None and "bias" not in call.weights:
        b = b.expand(G, -1)
    return w.reshape(G * w.shape[1], *w.shape[2:]), None if b is None else b.reshape(-1)


def _affine(y: torch.Tensor, call: GroupedCall, channel_dim: int) -> torch.Tensor:
    """Per-group affine on y (G*N, ...) with the layer's weight, bias (G, C) along
    ``channel_dim`` (or over the trailing dims with ``-1``)."""
    G = call.groups
    w, b = call.get("weight"), call.get("bias")
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

    wv, bv = view(w, "weight" in call.weights), view(b, "bias" in call.weights)
    if wv is not None:
        yv = yv * wv
    if bv is not None:
        yv = yv + bv
    return yv.reshape(shape)


# --------------------------------------------------------------------- kernels


def linear(call: GroupedCall, x: torch.Tensor) -> torch.Tensor:
    """``nn.Linear``: one ``baddbmm`` (``bmm`` without a generated bias)."""
    G, bd = call.groups, call.batch_dim
    x = call.groups_first(x, bd)
    w, b = call.get("weight"), call.get("bias")
    y = grouped_linear(x, G, w, b, "weight" in call.weights, "bias" in call.weights)
    return y.movedim(0, bd) if bd else y


# one row against a weight of at least this many numbers runs as a matrix-vector product on
# the CPU (:func:`row_linear`)
MV_MIN_NUMEL = 1 << 16


def row_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``; for one row ``x (1, in)`` on the CPU against a weight of
    at least :data:`MV_MIN_NUMEL` numbers (a generate-once head for one context),
    ``addmv``: the same product. Its weight gradient is then an element-wise outer product,
    which the CPU spreads over every thread, where a matrix product with an inner size of 1
    does not: for a ``(89610, 100)`` layer forward and backward take 0.75x the time with two
    threads, the same with one. Eager, plain tensors of one dtype, no autocast."""
    if (
        x.dim() == 2
        and x.shape[0] == 1
        and weight.dim() == 2
        and weight.numel() >= MV_MIN_NUMEL
        and x.device.type == "cpu"
        and type(x) is torch.Tensor
        and type(weight) in (torch.Tensor, nn.Parameter)
        and x.dtype == weight.dtype
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    ):
        if bias is None:
            return torch.mv(weight, x[0]).unsqueeze(0)
        if bias.shape == weight.shape[:1] and bias.dtype == weight.dtype and type(bias) in (torch.Tensor, nn.Parameter):
            return torch.addmv(bias, weight, x[0]).unsqueeze(0)
    return F.linear(x, weight, bias)


def scale_smaller(x: torch.Tensor, w: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, w)`` of a product ``x w^T`` whose weight counts as ``scale * w``: the scale on
    whichever of the two has fewer numbers (``(s x) w^T = x (s w)^T``)."""
    if scale == 1.0:
        return x, w
    if x.numel() <= w.numel():
        return x * scale, w
    return x, w * scale


def grouped_linear(
    x: torch.Tensor,
    G: int,
    w: torch.Tensor,
    b: torch.Tensor | None,
    w_generated: bool,
    b_generated: bool,
    w_scale: float = 1.0,
    b_scale: float = 1.0,
) -> torch.Tensor:
    """The ``Linear`` kernel's product: ``x (G * N, ..., in)``, group-major, with ``G`` weight
    sets; ``w`` is ``(G, out, in)`` when generated, else the layer's own, and ``b`` likewise
    (at least one of them generated). The generated weight counts as ``w_scale * w`` and the
    generated bias as ``b_scale * b``: the weight's scale multiplies whichever of the input
    and the weight has fewer numbers (``(s x) W^T = x (s W)^T``), the bias's is
    ``baddbmm``'s ``beta``."""
    shape = x.shape
    x3 = x.reshape(G, shape[0] // G * math.prod(shape[1:-1]), shape[-1])
    if w_generated:
        x3, w = scale_smaller(x3, w, w_scale)
        wt = w.transpose(1, 2)
        if b is None:
            y = torch.bmm(x3, wt)
        elif b_generated:
            y = (
                torch.baddbmm(b.unsqueeze(1), x3, wt)
                if b_scale == 1.0
                else torch.baddbmm(b.unsqueeze(1), x3, wt, beta=b_scale)
            )
        else:
            y = torch.bmm(x3, wt) + b
    else:
        y = F.linear(x3, w) + (b if b_scale == 1.0 else b * b_scale).unsqueeze(1)
    return y.reshape(*shape[:-1], y.shape[-1])


CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def conv(call: GroupedCall, x: torch.Tensor) -> torch.Tensor:
    """``nn.Conv1d/2d/3d``: one convolution with ``G`` times the groups."""
    m, G = call.module, call.groups
    nd = len(m.kernel_size)
    x = _spatial_input(call, x, nd)
    padding = m.padding
    if m.padding_mode != "zeros":
        x = F.pad(x, m._reversed_padding_repeated_twice, mode=m.padding_mode)
        padding = 0
    w, b = _conv_weights(call)
    xg = _to_grouped_channels(x, G, call.channels_last)
    y = CONV[nd](xg, w, b, m.stride, padding, m.dilation, m.groups * G)
    return from_grouped_channels(y, G, call.channels_last)


def conv_transpose(call: GroupedCall, x: torch.Tensor, output_size: Any = None) -> torch.Tensor:
    """``nn.ConvTranspose1d/2d/3d``: one transposed convolution with ``G`` times the groups."""
    m, G = call.module, call.groups
    if output_size is not None:
        raise ValueError(
            f"Target: {type(m).__name__} with output_size is not supported with batched weights; "
            "set output_padding on the layer instead"
        )
    if m.padding_mode != "zeros":
        raise ValueError(f"Target: {type(m).__name__} supports only padding_mode='zeros', got {m.padding_mode!r}")
    nd = len(m.kernel_size)
    x = _spatial_input(call, x, nd)
    w, b = _conv_weights(call)
    xg = _to_grouped_channels(x, G, call.channels_last)
    y = _CONV_TRANSPOSE[nd](xg, w, b, m.stride, m.padding, m.output_padding, m.groups * G, m.dilation)
    return from_grouped_channels(y, G, call.channels_last)


def _synchronised() -> bool:
    """Whether SyncBatchNorm would synchronise statistics across processes now."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def batch_norm(call: GroupedCall, x: torch.Tensor) -> torch.Tensor:
    """``BatchNorm``: batch statistics over the whole batch (per sample) or per group
    (ensemble), running statistics updated as the layer would, then the per-group affine."""
    m, G = call.module, call.groups
    x = call.groups_first(x, 0)
    if isinstance(m, nn.SyncBatchNorm) and m.training and _synchronised():
        raise ValueError(
            "Target: SyncBatchNorm in training mode across processes cannot run with batched weights "
            "(its statistics would not be synchronised); convert it with a BatchNorm per process or use shared weights"
        )
    # Momentum bookkeeping as in torch.nn.modules.batchnorm._BatchNorm.forward.
    eaf = 0.0 if m.momentum is None else m.momentum
    if m.training and m.track_running_stats and m.num_batches_tracked is not None:
        m.num_batches_tracked.add_(1)
        eaf = 1.0 / float(m.num_batches_tracked) if m.momentum is None else m.momentum
    use_batch = m.training or (m.running_mean is None and m.running_var is None)
    rm = m.running_mean if not m.training or m.track_running_stats else None
    rv = m.running_var if not m.training or m.track_running_stats else None
    if call.per_group_norm and use_batch:
        xg = _to_grouped_channels(x, G)
        rmg = None if rm is None else rm.repeat(G)
        rvg = None if rv is None else rv.repeat(G)
        y = F.batch_norm(xg, rmg, rvg, None, None, use_batch, eaf, m.eps)
        y = from_grouped_channels(y, G)
        if rm is not None and m.training:
            with torch.no_grad():
                rm.copy_(rmg.view(G, -1).mean(0))
                rv.copy_(rvg.view(G, -1).mean(0))
    else:
        y = F.batch_norm(x, rm, rv, None, None, use_batch, eaf, m.eps)
    return _affine(y, call, 1)


def layer_norm(call: GroupedCall, x: torch.Tensor) -> torch.Tensor:
    """``LayerNorm``: normalisation without affine, then the per-group affine."""
    bd = call.batch_dim
    x = call.groups_first(x, bd)
    y = F.layer_norm(x, call.module.normalized_shape, None, None, call.module.eps)
    y = _affine(y, call, -1)
    return y.movedim(0, bd) if bd else y


def group_norm(call: GroupedCall, x: torch.Tensor) -> torch.Tensor:
    """``GroupNorm``: normalisation without affine, then the per-group affine."""
    x = call.groups_first(x, 0)
    y = F.group_norm(x, call.module.num_groups, None, None, call.module.eps)
    return _affine(y, call, 1)


def embedding(call: GroupedCall, idx: torch.Tensor) -> torch.Tensor:
    """``Embedding``: one gather from the ``(G*V, D)`` stacked tables. With ``max_norm``, each
    set's looked-up rows are first renormalised in place, as ``F.embedding`` does to its one
    table; tables that are not leaves and need gradients (generated: views of the
    hypernetwork's output) are left as they are and their renormalised copy is read
    (:func:`renormed_table`)."""
    m, G, bd = call.module, call.groups, call.batch_dim
    idx = call.groups_first(idx, bd)
    w = call.weights["weight"]
    V = w.shape[1]
    # One gather from the (G*V, D) stacked tables. An index outside [0, V) is sent past the
    # end of the stack, so F.embedding raises for it as it does for one table, instead of
    # reading a row of another sample's table.
    offs = (torch.arange(G, device=idx.device) * V).view(G, *([1] * idx.dim()))
    grouped = idx.reshape(G, idx.shape[0] // G, *idx.shape[1:])
    flat = torch.where((grouped >= 0) & (grouped < V), grouped + offs, G * V)
    if m.max_norm is not None:
        if needs_copy_to_renorm(w):
            w = renormed_table(w, m.max_norm, m.norm_type)
        else:
            _renorm_rows(w, flat, m.max_norm, m.norm_type)
    out = F.embedding(flat, w.reshape(G * V, -1), scale_grad_by_freq=m.scale_grad_by_freq)
    if m.padding_idx is not None:
        # the padding row gets no gradient, as in F.embedding(..., padding_idx=...)
        out = torch.where((grouped == m.padding_idx).unsqueeze(-1), out.detach(), out)
    out = out.reshape(*idx.shape, w.shape[-1])
    return out.movedim(0, bd) if bd else out


def needs_copy_to_renorm(w: torch.Tensor) -> bool:
    """Whether an embedding table is renormalised out of place (:func:`renormed_table`): it
    needs gradients and is computed (not a leaf, nor a view of one), as a hypernetwork's
    output is; a leaf (a module's own table, a caller's tensor) is rescaled in place, as
    ``F.embedding`` does."""
    root = w if w._base is None else w._base
    return w.requires_grad and not root.is_leaf


def renormed_table(w: torch.Tensor, max_norm: float, norm_type: float) -> torch.Tensor:
    """Embedding tables ``w`` (``(..., V, D)``) with every row whose norm exceeds ``max_norm``
    scaled to it, out of place, for tables that cannot be renormalised in place (generated:
    views of the hypernetwork's output that autograd needs). The looked-up values are those of
    ``F.embedding(..., max_norm=...)``, and the gradient reaches ``w`` unscaled, as it reaches
    the table ``F.embedding`` rescales in place without gradient (rows never looked up do not
    reach the output, so rescaling them too changes nothing)."""
    with torch.no_grad():
        change = _renorm_scale(w, max_norm, norm_type) - 1
    return w + w.detach() * change


def _renorm_scale(rows: torch.Tensor, max_norm: float, norm_type: float) -> torch.Tensor:
    """Per row of ``rows`` (``(..., D)``), the factor ``torch.embedding_renorm_`` applies: ``max_norm
    / (norm + 1e-7)`` where the norm exceeds ``max_norm``, else 1 (``(..., 1)``)."""
    norms = torch.linalg.vector_norm(rows, norm_type, dim=-1, keepdim=True)
    return torch.where(norms > max_norm, max_norm / (norms + 1e-7), torch.ones_like(norms))


@torch.no_grad()
def _renorm_rows(w: torch.Tensor, flat: torch.Tensor, max_norm: float, norm_type: float) -> None:
    """``torch.embedding_renorm_`` on the ``(G, V, D)`` tables ``w`` in place, for the rows at the
    stacked indices ``flat`` (``g * V + row``): a row whose norm exceeds ``max_norm`` is scaled to
    it, as ``F.embedding(..., max_norm=...)`` does (no gradient flows through the rescaling).
    Nothing is changed when an index is out of range (the lookup raises for it next)."""
    G, V = w.shape[0], w.shape[1]
    if bool((flat == G * V).any()):
        return
    rows = flat.unique()
    at = (rows // V, rows % V)
    values = w[at]
    w.index_put_(at, values * _renorm_scale(values, max_norm, norm_type))


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


def rnn(call: GroupedCall, input: torch.Tensor, hx: Any = None) -> Any:
    """``RNN``/``GRU``/``LSTM``: all time steps' input projections in one ``bmm``, then a
    loop over time (not samples) with a ``bmm`` per step. A ``PackedSequence`` is padded back
    in the batch's order, each sample's state is held past its own length, and the output is
    packed as the input was."""
    m, G = call.module, call.groups
    packed = input if isinstance(input, nn.utils.rnn.PackedSequence) else None
    lengths = None
    if packed is not None:
        # padded back in the batch's own order (the order of the weight sets); each sample's
        # state stops at its own length (and the reverse direction starts there)
        input, lengths = nn.utils.rnn.pad_packed_sequence(packed)
    mode = m.mode
    H, L = m.hidden_size, m.num_layers
    P = getattr(m, "proj_size", 0)  # LSTM with projections: h = W_hr (o * tanh(c)), of width P
    dirs = 2 if m.bidirectional else 1
    if input.dim() == 2:  # one sequence: no batch to pair with G weight sets
        raise ValueError(
            f"Target: {type(m).__name__} with batched weights expected a batched input (3-D, or a "
            "PackedSequence), got an unbatched (2-D) one; add a batch dim "
            f"(x.unsqueeze({0 if m.batch_first else 1})) or run it with one weight set (Target.shared)"
        )
    if packed is not None:
        x = input  # (T, B, I): a packed sequence is time-first whatever batch_first says
    else:
        x = input.transpose(0, 1) if m.batch_first else input
    T, B = x.shape[0], x.shape[1]
    # (T, B, 1): whether step t is inside sample b's sequence (packed input only)
    live = None if lengths is None else (torch.arange(T).unsqueeze(1) < lengths).unsqueeze(-1).to(x.device)
    if hx is None:
        h0 = x.new_zeros(L * dirs, B, P or H)
        c0 = x.new_zeros(L * dirs, B, H) if mode == "LSTM" else None
    elif mode == "LSTM":
        h0, c0 = hx
    else:
        h0, c0 = hx, None
    hn, cn = [], []
    layer_in = x
    for layer in range(L):
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_ih, w_hh = call.get("weight_ih" + sfx), call.get("weight_hh" + sfx)
            b_ih = call.get("bias_ih" + sfx) if m.bias else None
            b_hh = call.get("bias_hh" + sfx) if m.bias else None
            w_hr = call.get("weight_hr" + sfx) if P else None
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
                h_prev, c_prev = h, c
                if mode == "LSTM":
                    i, f, g, o = (gi + gh).chunk(4, dim=-1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(c)
                    if w_hr is not None:
                        h = _grouped_matmul(h, w_hr, G)
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
                out_d[t] = h  # past a sample's end: never read (repacking drops those steps)
                if live is not None:  # a sample past its end keeps its state
                    h = torch.where(live[t], h, h_prev)
                    if c is not None:
                        c = torch.where(live[t], c, c_prev)
            outs.append(torch.stack(out_d, 0))
            hn.append(h)
            if c is not None:
                cn.append(c)
        layer_in = torch.cat(outs, dim=-1) if dirs == 2 else outs[0]
        if m.dropout and m.training and layer < L - 1:
            layer_in = F.dropout(layer_in, m.dropout, True)
    out = layer_in
    h_n = torch.stack(hn, 0)
    if packed is not None:
        out = _repack(out, packed)
    elif m.batch_first:
        out = out.transpose(0, 1)
    if mode == "LSTM":
        c_n = torch.stack(cn, 0)
        return out, (h_n, c_n)
    return out, h_n


def rnn_cell(call: GroupedCall, input: torch.Tensor, hx: Any = None) -> Any:
    """``RNNCell``/``GRUCell``/``LSTMCell``: one step, each projection one ``bmm`` over the
    groups (the batch at dim 0, as the cells keep it)."""
    m, G = call.module, call.groups
    if input.dim() != 2:
        raise ValueError(
            f"Target: {type(m).__name__} with batched weights expected a batched (2-D) input of shape "
            f"(batch, {m.input_size}), got {tuple(input.shape)}; add a batch dim or use shared weights"
        )
    x = call.groups_first(input, 0)
    B = x.shape[0]
    lstm = isinstance(m, nn.LSTMCell)
    if hx is None:
        h = x.new_zeros(B, m.hidden_size)
        c = x.new_zeros(B, m.hidden_size) if lstm else None
    else:
        h, c = hx if lstm else (hx, None)
        if any(t.dim() != 2 or t.shape[0] != B for t in (h, c) if t is not None):
            given = [tuple(t.shape) for t in (h, c) if t is not None]
            raise ValueError(
                f"Target: {type(m).__name__} with batched weights expected its state of shape ({B}, "
                f"{m.hidden_size}) (the input's batch), got {given[0] if len(given) == 1 else given}"
            )
    gi = _grouped_matmul(x, call.get("weight_ih"), G) + _grouped_bias(call.get("bias_ih"), G, B)
    gh = _grouped_matmul(h, call.get("weight_hh"), G) + _grouped_bias(call.get("bias_hh"), G, B)
    if lstm:
        i, f, g, o = (gi + gh).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    if isinstance(m, nn.GRUCell):
        ir, iz, in_ = gi.chunk(3, dim=-1)
        hr, hz, hn = gh.chunk(3, dim=-1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        return (1 - z) * torch.tanh(in_ + r * hn) + z * h
    return torch.tanh(gi + gh) if m.nonlinearity == "tanh" else torch.relu(gi + gh)


def instance_norm(call: GroupedCall, x: torch.Tensor) -> torch.Tensor:
    """``InstanceNorm1d/2d/3d``: statistics per sample and channel over the whole batch (so
    running statistics update as the layer's own would), then the per-group affine."""
    m = call.module
    if x.dim() != m._get_no_batch_dim() + 1:
        raise ValueError(
            f"Target: {type(m).__name__} with batched weights expected a batched "
            f"({m._get_no_batch_dim() + 1}-D) input, got {tuple(x.shape)}"
        )
    x = call.groups_first(x, 0)
    use_input_stats = m.training or not m.track_running_stats
    y = F.instance_norm(x, m.running_mean, m.running_var, None, None, use_input_stats, m.momentum or 0.0, m.eps)
    return _affine(y, call, 1)


def _repack(out: torch.Tensor, like: nn.utils.rnn.PackedSequence) -> nn.utils.rnn.PackedSequence:
    """``out (T, B, F)``, in the batch's own order, packed as ``like`` is: step ``t`` holds the
    first ``batch_sizes[t]`` samples of ``like``'s sorted order."""
    sizes = like.batch_sizes
    steps = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    starts = torch.cumsum(sizes, 0) - sizes
    pos = torch.arange(int(sizes.sum())) - starts[steps]
    rows = pos if like.sorted_indices is None else like.sorted_indices.cpu()[pos]
    data = out[steps.to(out.device), rows.to(out.device)]
    return nn.utils.rnn.PackedSequence(data, sizes, like.sorted_indices, like.unsorted_indices)


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


def multihead_attention(
    call: GroupedCall,
    query,
    key,
    value,
    key_padding_mask=None,
    need_weights=True,
    attn_mask=None,
    average_attn_weights=True,
    is_causal=False,
):
    """``MultiheadAttention``: batched projections and ``scaled_dot_product_attention``."""
    m, G = call.module, call.groups
    if query.dim() != 3:
        raise ValueError(
            f"Target: MultiheadAttention needs batched (3-D) inputs with batched weights, got {tuple(query.shape)}"
        )
    bf = m.batch_first
    q, k, v = (query, key, value) if bf else (query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1))
    B, L, E = q.shape
    S = k.shape[1]
    h = m.num_heads
    hd = E // h
    if m._qkv_same_embed_dim:
        wq, wk, wv = call.get("in_proj_weight").chunk(3, dim=-2)
    else:
        wq, wk, wv = (call.get(n) for n in ("q_proj_weight", "k_proj_weight", "v_proj_weight"))
    bias = call.get("in_proj_bias")
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
    p = m.dropout if m.training else 0.0
    weights = None
    if need_weights:
        scores = (Q @ K.transpose(-2, -1)) / (hd**0.5)
        if mask is not None:
            scores = scores + mask
        attn = torch.softmax(scores, dim=-1)
        if p:
            attn = F.dropout(attn, p, True)
        weights = attn.mean(1) if average_attn_weights else attn  # after dropout, as torch returns them
        out = attn @ V
    else:
        out = F.scaled_dot_product_attention(Q, K, V, attn_mask=mask, dropout_p=p)
    out = out.transpose(1, 2).reshape(B, L, E)
    out = _gproj(out, call.get("out_proj.weight"), call.get("out_proj.bias"), G)
    if not bf:
        out = out.transpose(0, 1)
    return out, weights


def _mha_dims(m: nn.MultiheadAttention) -> Dims:
    b = 0 if m.batch_first else 1
    # key_padding_mask is (B, S); attn_mask is shared across the batch; the output has its
    # batch at b, the attention weights (B, ...) at 0.
    return Dims(
        batch=b,
        out_dim=(b, 0),
        kw={"key_padding_mask": 0, "attn_mask": _attn_mask_dim, "need_weights": None},
        names=_MHA_ARGS,
    )


_MHA_ARGS = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask")


def _attn_mask_dim(mask: torch.Tensor) -> int | None:
    """A 3-D attention mask ``(N * heads, L, S)`` has a batch at dim 0; a 2-D one is shared."""
    return 0 if mask.dim() == 3 else None


# --------------------------------------------------------------------- the table

AFFINE = frozenset({"weight", "bias"})
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

LINEAR = GroupedKernel(linear, AFFINE)
CONVOLUTION = GroupedKernel(conv, AFFINE)
_CONV_T = GroupedKernel(conv_transpose, AFFINE)
_BN = GroupedKernel(batch_norm, AFFINE)
_RNN = GroupedKernel(rnn, lambda m: m._flat_weights_names)
_CELL = GroupedKernel(rnn_cell, frozenset({"weight_ih", "weight_hh", "bias_ih", "bias_hh"}))

# Module type -> grouped kernel. A layer matches the first type of its class's MRO found
# here, and only while its class still uses that type's own forward (a subclass that
# overrides forward runs under vmap).
_KERNELS: dict[type[nn.Module], GroupedKernel] = {
    nn.Linear: LINEAR,
    nn.Conv1d: CONVOLUTION,
    nn.Conv2d: CONVOLUTION,
    nn.Conv3d: CONVOLUTION,
    nn.ConvTranspose1d: _CONV_T,
    nn.ConvTranspose2d: _CONV_T,
    nn.ConvTranspose3d: _CONV_T,
    nn.modules.batchnorm._BatchNorm: _BN,
    nn.SyncBatchNorm: _BN,
    nn.LayerNorm: GroupedKernel(layer_norm, AFFINE),
    nn.GroupNorm: GroupedKernel(group_norm, AFFINE),
    nn.Embedding: GroupedKernel(embedding, frozenset({"weight"})),
    nn.RNN: _RNN,
    nn.LSTM: _RNN,
    nn.GRU: _RNN,
    nn.RNNCell: _CELL,
    nn.LSTMCell: _CELL,
    nn.GRUCell: _CELL,
    nn.modules.instancenorm._InstanceNorm: GroupedKernel(instance_norm, AFFINE),
    nn.MultiheadAttention: GroupedKernel(
        multihead_attention,
        _MHA_NAMES,
        supports=lambda m: m.bias_k is None and not m.add_zero_attn,
        subtree=True,
        vmap_dims=_mha_dims,
    ),
}

F_ = TypeVar("F_", bound=Callable[..., Any])


def register_kernel(
    module_type: type[nn.Module],
    run: Callable[..., Any] | None = None,
    *,
    reads: Iterable[str] | Callable[[nn.Module], Iterable[str]],
    supports: Callable[[nn.Module], bool] | None = None,
    subtree: bool = False,
    vmap_dims: Callable[[nn.Module], Dims] | None = None,
) -> Any:
    """Make ``run`` the grouped kernel of ``module_type``; without ``run``, a decorator that does so.

    Args:
        module_type: the layer class (its subclasses that keep its ``forward`` match too).
        run: ``run(call, *inputs, **kwargs)`` (see :class:`GroupedCall`).
        reads, supports, subtree, vmap_dims: see :class:`GroupedKernel`; ``reads`` may be a
            set of local names or a function of the layer.

    Returns:
        ``run`` (so it can decorate).

    Registering a type a second time warns (``UserWarning`` naming both functions) and the
    new kernel wins. Plans are cached per module structure: register before a target's first
    batched call.

    Raises:
        TypeError: ``module_type`` is not an ``nn.Module`` subclass, ``run`` or ``supports`` is
            not callable, or ``reads`` is neither names nor a function.
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"register_kernel: module_type must be an nn.Module subclass, got {module_type!r}")
    if callable(reads):
        names: Reads = reads
    elif isinstance(reads, str) or not all(isinstance(n, str) for n in reads):
        raise TypeError(
            f"register_kernel: reads must be a set of tensor names (e.g. {{'weight', 'bias'}}) or a function "
            f"of the layer, got {reads!r}"
        )
    else:
        names = frozenset(reads)
    if supports is not None and not callable(supports):
        raise TypeError(f"register_kernel: supports must be a function of the layer or None, got {supports!r}")

    def add(fn: F_) -> F_:
        if not callable(fn):
            raise TypeError(f"register_kernel: run must be a function (call, *inputs), got {fn!r}")
        old = _KERNELS.get(module_type)
        if old is not None:
            warnings.warn(
                f"grouped kernel for {module_type.__name__} registered again by {fn.__module__}.{fn.__qualname__} "
                f"(was {old.run.__module__}.{old.run.__qualname__}); the new kernel wins",
                UserWarning,
                stacklevel=2,
            )
        _KERNELS[module_type] = GroupedKernel(fn, names, supports, subtree, vmap_dims)
        return fn

    return add if run is None else add(run)


def kernel_for(module: nn.Module) -> GroupedKernel | None:
    """The grouped kernel of ``module``'s class, or ``None`` (it runs under vmap).

    The first class of the MRO with a kernel decides, and only if ``module``'s class still
    uses that class's ``forward``. An instance-level ``forward`` is the planner's concern.
    """
    cls = type(module)
    for base in cls.__mro__:
        kernel = _KERNELS.get(base)
        if kernel is not None:
            return kernel if cls.forward is base.forward else None
    return None


def reads_submodules(module: nn.Module) -> bool:
    """Whether ``module``'s kernel reads tensors of its submodules itself (attention reads
    ``out_proj``): generated tensors below it belong to it (decided by type, so a subclass
    that overrides ``forward`` still owns them and runs its subtree under vmap)."""
    return any(k.subtree and isinstance(module, t) for t, k in _KERNELS.items())
