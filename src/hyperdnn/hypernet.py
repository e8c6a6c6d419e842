"""HyperNetwork (conditioner -> trunk -> head -> scale) and HyperModel (hypernet + target).

``HyperModel`` also decides which running statistics the target's BatchNorm layers use per
context (:mod:`hyperdnn.norm_stats`) and exports one context's network as a plain module
(:meth:`HyperModel.materialize`).

Example::

    >>> import torch, torch.nn as nn
    >>> from hyperdnn import HyperModel, HyperNetwork, Target, TaskEmbedding, MLP, Chunked
    >>> target = Target(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)))
    >>> hnet = HyperNetwork(target, TaskEmbedding(2, 8), MLP((32,)), Chunked(256, 4))
    >>> model = HyperModel(hnet, target)
    >>> model(torch.randn(5, 64), 1).shape
    torch.Size([5, 10])
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.autograd import forward_ad
from torch.utils import _pytree as pytree

from hyperdnn._checks import check_bool, check_choice, check_float, check_int
from hyperdnn.conditioners import Conditioner, Execution, LearnedLatent, TaskEmbedding, check_conditioner
from hyperdnn.heads import ChunkedModule, Head, Once, OnceModule
from hyperdnn.init import calibrate as calibrate_last_layers
from hyperdnn.init import check_init_mode, element_stats, residual_base
from hyperdnn.norm_stats import NormStats, resolve_norm_stats
from hyperdnn.optim import adam
from hyperdnn.spec import WeightSpec
from hyperdnn.target import Target
from hyperdnn.target.structure import Chain, plain_call
from hyperdnn.trunks import MLP, Trunk, build_trunk

__all__ = ["HyperNetwork", "HyperModel", "compile_settings"]


try:  # the partitioner's options; absent from other torch versions
    from torch._functorch import config as _functorch_config
except ImportError:  # pragma: no cover - other torch versions
    _functorch_config = None
_RECOMPUTE_VIEWS = _functorch_config is not None and hasattr(_functorch_config, "recompute_views")


class _CompileSettings:
    """The context :func:`compile_settings` returns (a plain class: entered on every call of a
    compiled model, so it costs a few attribute writes, not a config patch)."""

    __slots__ = ("_saved",)

    def __enter__(self) -> None:
        if _RECOMPUTE_VIEWS:
            self._saved = _functorch_config.recompute_views
            _functorch_config.recompute_views = True

    def __exit__(self, *exc: object) -> None:
        if _RECOMPUTE_VIEWS:
            _functorch_config.recompute_views = self._saved


def compile_settings() -> contextlib.AbstractContextManager[None]:
    """The compiler settings hyperdnn's traced steps are made for; compile inside this context.

    AOTAutograd's partitioner, which decides what the forward saves for the backward, is told to
    recompute view operations (``torch._functorch.config.recompute_views``) instead of saving
    them. The generated layers reshape between ``(G * N, ...)`` and ``(G, N, ...)`` around each
    batched matmul; without it the partitioner saves each ReLU's output behind such a view *and*
    a boolean mask of it, and inductor's CPU kernels write those masks slowly (an ensemble of 16
    MLPs 784-100-100-10 on a batch of 128: 1.20x the hand-written step compiled the same way,
    1.01-1.03x with it). The math is the same; only what is saved and recomputed changes.
    :meth:`HyperModel.compile` applies it; a step compiled by hand needs it around the calls
    that compile (the first ones, and any that recompile)::

        step = torch.compile(loss_fn, fullgraph=True)
        with hyperdnn.compile_settings():
            step(x).backward()

    The previous settings are restored on exit, also after an error. A torch without the
    setting gets a no-op context.
    """
    return _CompileSettings()


def _one_task_id(args: tuple, kwargs: dict, fullgraph: bool) -> tuple[tuple, dict]:
    """A compiled :class:`HyperModel` call's task context: one id given as a 0-d integer
    tensor or a NumPy integer becomes an ``int`` (it failed to trace); a batch of ids, which
    splits the graph in :class:`TaskEmbedding`, is refused by name under ``fullgraph``."""
    if "context" in kwargs:
        context = kwargs["context"]
    elif len(args) > 1:
        context = args[1]
    else:
        return args, kwargs
    if isinstance(context, torch.Tensor) and context.dim() == 0 and not context.dtype.is_floating_point:
        one = int(context)
    elif isinstance(context, numbers.Integral) and not isinstance(context, (bool, int)):
        one = int(context)
    else:
        if fullgraph and isinstance(context, (list, tuple, torch.Tensor)):
            n = len(context) if isinstance(context, (list, tuple)) else tuple(context.shape)
            raise ValueError(
                f"HyperModel (compiled with fullgraph=True): expected one task id per call, got a batch of "
                f"task ids ({type(context).__name__} of {n}); a batch of ids splits the graph in TaskEmbedding. "
                f"Call with one id per step, or compile with fullgraph=False"
            )
        return args, kwargs
    if "context" in kwargs:
        return args, {**kwargs, "context": one}
    return (args[0], one, *args[2:]), kwargs


def _sum_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Reduce a broadcast gradient back to ``shape``."""
    if grad.shape == shape:
        return grad
    lead = grad.dim() - len(shape)
    grad = grad.sum(dim=tuple(range(lead))) if lead else grad
    keep = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(dim=keep, keepdim=True) if keep else grad


# Below this many generated numbers (summed over the batch) the data stays in cache and
# addcmul's second backward pass is cheaper than _Affine's Python overhead (measured on CPU:
# _Affine is slower at 1e5 numbers, faster from about 6e5 on; 1.1x faster at 1e7).
_AFFINE_FUNCTION_MIN_NUMEL = 1 << 18


class _Affine(torch.autograd.Function):
    """``mean + scale * raw`` (the hyperfan affine) with a one-multiply backward.

    Same values and gradients as ``torch.addcmul(mean, scale, raw)``, whose backward for
    ``raw`` multiplies twice (``grad * (scale * 1)``): for a chunked hypernet generating
    millions of numbers each pass over them is a large, memory-bound share of the step.
    The backward is built from differentiable ops (double backward works) and vmap rules
    are generated.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(mean: torch.Tensor, scale: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(mean, scale, raw)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        mean, scale, raw = inputs
        ctx.shapes = (mean.shape, scale.shape)
        ctx.save_for_backward(scale, raw if ctx.needs_input_grad[1] else None)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        scale, raw = ctx.saved_tensors
        mean_shape, scale_shape = ctx.shapes
        g_mean = _sum_to(grad, mean_shape) if ctx.needs_input_grad[0] else None
        g_scale = _sum_to(grad * raw, scale_shape) if ctx.needs_input_grad[1] else None
        g_raw = grad * scale if ctx.needs_input_grad[2] else None
        return g_mean, g_scale, g_raw


def _state_key(t: torch.Tensor) -> tuple | None:
    """What identifies ``t``'s contents between calls (the tensor, its storage, its version
    counter, device, dtype, whether it is trainable); ``None`` inside a ``torch.func``
    transform, where there is none to read."""
    try:
        return (id(t), t.data_ptr(), t._version, t.device, t.dtype, t.requires_grad)
    except RuntimeError:
        return None


def _constant(t: torch.Tensor) -> bool:
    """Whether ``t`` carries neither a gradient nor a forward-mode tangent
    (``torch.autograd.forward_ad``), so a value derived from it may be kept."""
    return not t.requires_grad and forward_ad.unpack_dual(t).tangent is None


class _Memo:
    """A value kept on a module under a key; a copy or an unpickled module gets none (it is
    rebuilt on first use)."""

    __slots__ = ("key", "value")

    def __init__(self, key: Any = None, value: Any = None):
        self.key, self.value = key, value

    def __deepcopy__(self, memo: dict) -> _Memo:
        return _Memo()

    def __reduce__(self):
        return (_Memo, ())


class HyperNetwork(nn.Module):
    """H(c; phi): generates a name -> tensor mapping for a :class:`WeightSpec`.

    Args:
        spec: the :class:`WeightSpec` to generate, or a :class:`Target` (its spec; and its
            module's values when ``residual="target"``).
        conditioner: the input (:class:`TaskEmbedding`, :class:`DataEncoder`, :class:`Noise`,
            :class:`Continuous`, :class:`LearnedLatent`).
        trunk: the body, a :class:`~hyperdnn.trunks.Trunk` description (default
            ``MLP((100, 100))``); built here for the conditioner's width: ``hnet.trunk`` is the
            built encoder, ``hnet.trunk_config`` the description.
        head: the output strategy, a :class:`~hyperdnn.heads.Head` description (default
            :class:`Once`); built here for the spec and the trunk: ``hnet.head`` is the built
            head module, ``hnet.head_config`` the description.
        init: ``"hyperfan_in"`` (default), ``"hyperfan_out"`` or ``"unit"``; see :mod:`hyperdnn.init`.
        residual: ``None`` (theta = generated), ``"target"`` (theta = theta0 + delta with
            theta0 the target's current values; needs a Target as ``spec``), ``"neutral"``
            (theta0 = 1 for norm scales, 0 elsewhere) or a name -> tensor mapping (e.g.
            pretrained weights).
        residual_scale: initial size of delta relative to the hyperfan scale.
        learn_theta0: make theta0 a trainable parameter instead of a fixed buffer.
        check_finite: raise ``FloatingPointError`` naming the tensor when generated weights
            are not finite.
        calibrate: rescale the head's last layers so raw outputs start with unit variance
            over representative contexts (``conditioner.probe``; N(0, 1) codes otherwise).

    ``hnet(context)`` returns weights with a leading batch dim iff the context is batched:
    ``theta_mean + theta_scale * head(trunk(c))``, the hyperfan affine (``theta_mean`` is
    theta0 with ``residual``, else zero but for norm layers' scales). Write ``theta_mean``
    through ``hnet.theta_mean`` or ``load_state_dict``; a write through ``.data`` of a tensor
    reached another way (``hnet.buffers()``) is not seen by eager mode's zero-mean shortcut.

    Under ``torch.compile`` the forward has no data-dependent branch: the hyperfan affine is
    one ``addcmul`` whatever ``theta_mean`` holds (eager mode skips the mean when it is a fixed
    all-zero buffer, rechecked whenever the buffer may have changed). A context of one task
    id, noise, continuous values or none compiles to one graph; a tensor of several task ids still breaks
    the graph in :class:`TaskEmbedding`, which stacks only the tasks in use. ``check_finite``
    also reads the weights' values.
    """

    def __init__(
        self,
        spec: WeightSpec | Target,
        conditioner: Conditioner,
        trunk: Trunk | None = None,
        head: Head | None = None,
        *,
        init: str = "hyperfan_in",
        residual: None | str | Mapping[str, torch.Tensor] = None,
        residual_scale: float = 0.1,
        learn_theta0: bool = False,
        check_finite: bool = False,
        calibrate: bool = True,
    ):
        super().__init__()
        where = "HyperNetwork"
        target = spec if isinstance(spec, Target) else None
        if target is not None:
            spec = target.spec
        if not isinstance(spec, WeightSpec):
            raise TypeError(f"HyperNetwork: spec must be a WeightSpec or a Target, got {type(spec).__name__}")
        check_conditioner(where, conditioner)
        head = Once() if head is None else head
        if not isinstance(head, Head):
            raise TypeError(f"HyperNetwork: head must be a Head, got {type(head).__name__}")
        check_init_mode(where, init)
        residual_scale = check_float(where, "residual_scale", residual_scale, 0.0)
        check_bool(where, "learn_theta0", learn_theta0)
        check_bool(where, "check_finite", check_finite)
        check_bool(where, "calibrate", calibrate)
        self.spec = spec
        self.conditioner = conditioner
        self.trunk_config, self.trunk = build_trunk(where, trunk, conditioner.out_features, MLP())
        self.head_config: Head = head
        self.head = head.build(spec, self.trunk.out_features, self.trunk_config)
        self.init_mode = init
        self.check_finite = check_finite
        mean, scale = element_stats(spec, init)
        if residual is None:
            if learn_theta0:
                raise ValueError(
                    "HyperNetwork: learn_theta0=True makes the residual form's theta0 trainable, but residual is "
                    "None (no theta0); pass residual='target', 'neutral' or a mapping, or learn_theta0=False"
                )
            self.residual = False
            self.register_buffer("theta_mean", mean)
        else:
            if isinstance(residual, str):
                if residual == "target":
                    if target is None:
                        raise ValueError("HyperNetwork: residual='target' needs a Target as spec")
                    values = target.default_weights()
                elif residual == "neutral":
                    values = None
                else:
                    raise ValueError(
                        f"HyperNetwork: residual must be None, 'target', 'neutral' or a mapping, got {residual!r}"
                    )
            elif isinstance(residual, Mapping):
                values = residual
            else:
                raise TypeError(
                    f"HyperNetwork: residual must be None, a string or a mapping, got {type(residual).__name__}"
                )
            theta0 = residual_base(spec, values)
            self.residual = True
            scale = scale * residual_scale
            if learn_theta0:
                self.theta_mean = nn.Parameter(theta0)
            else:
                self.register_buffer("theta_mean", theta0)
        self.register_buffer("theta_scale", scale)
        if calibrate:
            self.calibrate()

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def calibrate(self, context: Any = None, n: int = 64) -> None:
        """Re-initialise the head's last layers so raw outputs have unit variance.

        Measures the second moment ``E[u^2]`` of the input ``u`` of each last layer over
        representative contexts (``context``; default: the conditioner's probe, a
        :class:`LearnedLatent`'s own code, or N(0, 1) codes), then draws that layer's weights from ``N(0, 1 / (m * fan_in * E[u^2]))`` with
        zero bias, where ``m`` is the number of last layers whose outputs add up (hyperfan
        initialisation with a measured input variance; :func:`hyperdnn.init.calibrate`).
        Every output element then has unit variance over the initialisation, whatever the
        size of its tensor.

        Args:
            context: representative contexts (default: ``conditioner.probe(n)``).
            n: number of probe contexts when ``context`` is not given.
        """
        check_int("HyperNetwork.calibrate", "n", n)

        def run() -> None:
            probe = self.conditioner.probe(n) if context is None else context
            if probe is None and isinstance(self.conditioner, LearnedLatent):
                self.head(self.trunk(self.conditioner(None).c))  # its one code is the context
                return
            if probe is None:
                ref = next(iter(self.head.parameters()))
                c = torch.randn(n, self.conditioner.out_features, device=ref.device, dtype=ref.dtype)
            else:
                c = self.conditioner(probe).c
            self.head(self.trunk(c))

        calibrate_last_layers(self, [finals for finals, _ in self.head.calibration_groups()], run)

    # ------------------------------------------------------------------ forward
    def generate_flat(self, context: Any = None) -> tuple[torch.Tensor, bool]:
        """Flat weights ``(B, numel)`` and whether the context was batched."""
        flat, batched, _ = self._generate(context)
        return flat, batched

    def _generate(
        self, context: Any, defer: Callable[[], Any] | None = None, padded: bool = False
    ) -> tuple[torch.Tensor, bool, tuple[dict[str, float], Any] | None]:
        """:meth:`generate_flat`, and the scales it left out: for a batched context, when
        ``defer`` is given, the affine is one scale per tensor over a zero mean
        (:meth:`_tensor_scales`) and ``defer()`` returns something (the caller's way to apply
        them), returns the raw head output and ``(scales, that)`` (scales: name -> float);
        else the weights and ``None``. With ``padded`` (eager), a chunked head's output may
        keep the last chunk's tail, ``(B, n >= numel)``: read it with
        :meth:`~hyperdnn.spec.WeightSpec.unflatten_prefix`, whose one split cuts the tail
        (a slice's backward would write a zero-filled copy of the whole output)."""
        modules = self._modules  # hot path: no __getattr__ (nn.Module's, and this class's own)
        cond = modules["conditioner"](context)
        h = modules["trunk"](cond.c)
        head = modules["head"]
        # the head's module call does nothing but its forward: its padded output can be taken
        pad = padded and type(head) is ChunkedModule and plain_call(head)
        if defer is not None and cond.batched:
            scales = self._tensor_scales()
            if scales is not None:
                taker = defer()
                if taker is not None:
                    return (head.forward_padded(h) if pad else head(h)), True, (scales, taker)
        if pad:
            scale = self._padded_scale(head.num_chunks * head.chunk_size)
            if scale is not None:
                return head.forward_padded(h) * scale, cond.batched, None
        folded = self._folded_once(head, h)
        if folded is not None:
            return folded, cond.batched, None
        return self._affine(head(h)), cond.batched, None

    def _tensor_scales(self) -> dict[str, float] | None:
        """Name -> scale when the hyperfan affine is ``scale * raw`` with one scale per tensor
        (``theta_mean`` a fixed all-zero buffer, ``theta_scale`` constant over each tensor)
        and no ``check_finite`` (which reads the scaled weights); else ``None``. Eager mode
        only. Rechecked, like the zero-mean shortcut, only when ``theta_scale`` may have
        changed."""
        if self.check_finite or not self._mean_is_zero(self._mean()):
            return None
        s = self._buffers["theta_scale"]
        key = _state_key(s)
        if key is None:
            return None
        if self.__dict__.get("_tensor_scales_key") != key:
            scales = None
            sizes = [t.numel for t in self.spec]
            if _constant(s) and min(sizes) > 0:
                # each tensor's first scale, repeated over the tensor, must give theta_scale back
                starts = torch.tensor(list(itertools.accumulate(sizes[:-1], initial=0)), device=s.device)
                firsts = s.index_select(0, starts)
                counts = torch.tensor(sizes, device=s.device)
                if torch.equal(s, firsts.repeat_interleave(counts, output_size=s.numel())):
                    scales = dict(zip(self.spec.names, firsts.tolist(), strict=True))
            self._tensor_scales_cache = scales
            self._tensor_scales_key = key
        return self._tensor_scales_cache

    def _padded_scale(self, width: int) -> torch.Tensor | None:
        """``theta_scale`` followed by zeros up to ``width`` numbers, when the affine is
        ``theta_scale * raw`` (``theta_mean`` a fixed all-zero buffer) and ``theta_scale`` a
        constant (no gradient, no forward-mode tangent); else ``None``. Kept until
        ``theta_scale`` may have changed (as :meth:`_tensor_scales`). Eager mode only."""
        if not self._mean_is_zero(self._mean()):
            return None
        s = self._buffers["theta_scale"]
        key = _state_key(s)
        if key is None:
            return None
        key = (key, width)
        memo = self.__dict__.get("_padded_scale_memo")
        if memo is None or memo.key != key:
            value = None
            if _constant(s) and width >= s.numel():
                value = torch.cat([s, s.new_zeros(width - s.numel())])
            memo = self.__dict__["_padded_scale_memo"] = _Memo(key, value)
        return memo.value

    def __getattr__(self, name: str) -> Any:
        if name == "theta_mean":
            # a read from outside may be followed by a write the version counter does not see
            # (``hnet.theta_mean.data.fill_(...)``): recheck the zero-mean shortcut next call
            self.__dict__.pop("_zero_mean_key", None)
        elif name == "theta_scale":
            self.__dict__.pop("_tensor_scales_key", None)
            self.__dict__.pop("_padded_scale_memo", None)
        return super().__getattr__(name)

    def _mean(self) -> torch.Tensor:
        """``theta_mean`` (a buffer, or a parameter when learned) without the read hook."""
        mean = self._parameters.get("theta_mean")
        return self._buffers["theta_mean"] if mean is None else mean

    def _folded_once(self, head: nn.Module, h: torch.Tensor) -> torch.Tensor | None:
        """``theta_mean + theta_scale * head(h)`` from :meth:`OnceModule.scaled` (the scale, and
        a mean that is not zero, folded into the generate-once head's linear layer) in eager
        mode; ``None`` elsewhere."""
        if not isinstance(head, OnceModule) or torch.compiler.is_compiling():
            return None
        mean = self._mean()
        return head.scaled(h, self._buffers["theta_scale"], None if self._mean_is_zero(mean) else mean)

    def _affine(self, raw: torch.Tensor) -> torch.Tensor:
        """``theta_mean + theta_scale * raw`` in the fewest passes over the generated numbers."""
        mean = self._mean()
        scale = self._buffers["theta_scale"]
        if torch.compiler.is_compiling():
            # One op, whatever theta_mean holds: no data-dependent branch (a graph break) in
            # the traced graph, and nothing stale if theta_mean is written between calls. The
            # compiler fuses it into one pass, so the zero-mean shortcut would save nothing.
            return torch.addcmul(mean, scale, raw)
        if self._mean_is_zero(mean):
            # the usual case (no norm layers, no residual): one pass forward, one backward
            return raw * scale
        if raw.numel() >= _AFFINE_FUNCTION_MIN_NUMEL:
            return _Affine.apply(mean, scale, raw)
        # small: a Python autograd.Function costs more than the pass it saves
        return torch.addcmul(mean, scale, raw)

    def _mean_is_zero(self, m: torch.Tensor) -> bool:
        """Whether ``theta_mean`` is a fixed all-zero buffer. Rechecked (one pass over it) only
        when it may have changed: replaced, given new data (``.data = ...``), moved, made
        trainable (``requires_grad_``: a learned mean is never skipped), written in place
        (``load_state_dict``, ``fill_`` under ``no_grad``: its version counter), or read
        from outside as ``hnet.theta_mean`` (a write through ``.data`` leaves the version
        counter as it was). Eager mode only: a traced forward never calls it (see
        :meth:`_affine`). ``m`` is :meth:`_mean`'s tensor."""
        key = _state_key(m)
        if key is None:  # inside a torch.func transform: no data-dependent shortcut
            return False
        if self.__dict__.get("_zero_mean_key") != key:
            # a tangent of forward-mode AD (torch.autograd.forward_ad) must reach the output
            try:
                self._zero_mean = _constant(m) and not bool(m.any())
            except RuntimeError:  # a transform's tensor: no data-dependent shortcut
                return False
            self._zero_mean_key = key
        return self._zero_mean

    def forward(self, context: Any = None) -> dict[str, torch.Tensor]:
        """Generate weights for ``context``: name -> ``(*batch, *shape)``."""
        return self.unflatten(*self.generate_flat(context))

    def unflatten(self, flat: torch.Tensor, batched: bool) -> dict[str, torch.Tensor]:
        """Name -> tensor views of flat weights from :meth:`generate_flat`: ``(B, *shape)``
        when ``batched``, else ``(*shape)`` (``flat`` is then ``(1, numel)``). With
        ``check_finite`` raises ``FloatingPointError`` naming the tensors that are not finite."""
        return self._unflatten(flat, batched, self.spec.unflatten)

    def _unflatten(
        self, flat: torch.Tensor, batched: bool, split: Callable[[torch.Tensor], dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """:meth:`unflatten` with ``split`` (the spec's ``unflatten``, or its
        ``unflatten_prefix`` for :meth:`_generate`'s padded output)."""
        if not batched:
            flat = flat.squeeze(0)
        weights = split(flat)
        if self.check_finite:
            bad = [n for n, w in weights.items() if not bool(torch.isfinite(w).all())]
            if bad:
                raise FloatingPointError(f"HyperNetwork: generated weights are not finite for {bad}")
        return weights


class HyperModel(nn.Module):
    """A hypernetwork and its target as one module: ``model(x, context)``.

    Args:
        hypernet: the :class:`HyperNetwork`.
        target: the :class:`Target` it generates for (their specs must agree).
        norm_stats: which running statistics the target's BatchNorm layers use (see
            :mod:`hyperdnn.norm_stats`): ``"per_context"`` (a copy per task id: the statistics
            follow the generated weights), ``"batch"`` (each batch's own statistics, in eval
            too), ``"shared"`` (the module's own buffers for every context: PyTorch's
            behaviour), or ``"auto"`` (default): the conditioner's ``norm_stats_policy``
            (``"per_context"`` for a :class:`TaskEmbedding`, ``"batch"`` for a
            :class:`DataEncoder`, :class:`Noise` or :class:`Continuous` conditioner,
            ``"shared"`` for a :class:`LearnedLatent`), ``"shared"`` for a target without
            BatchNorm running statistics. ``model.norm_stats`` is the
            :class:`~hyperdnn.norm_stats.NormStats` (``model.norm_stats.mode`` the resolved mode).

    ``mode`` in :meth:`forward`: ``"auto"`` asks the conditioner
    (:meth:`~hyperdnn.conditioners.Conditioner.execution`): an unbatched context runs shared
    weights; a batched one per sample (task ids, data) or as an ensemble ``(K, N, ...)`` on the
    whole batch (noise samples, ``Continuous(..., execution="ensemble")`` preference rays).
    ``"shared"``, ``"per_sample"`` and ``"ensemble"`` force one. A conditioner that reads its
    context from the input (``reads_input``, a :class:`DataEncoder`) gets ``x`` when no
    context is given. The model calls the target through its trusted path
    (``Target.run(..., validate=False)``): the hypernetwork generates for the target's own spec.

    With per-context statistics a batch of task ids that are all equal uses that task's
    statistics; a batch of mixed ids is run as one group per task (its samples, or its
    ensemble members), each with its own statistics (in train mode each group is normalised
    over its own samples), and the outputs are put back in the batch's order. Per-context
    statistics are registered buffers: ``state_dict`` saves them, ``load_state_dict`` into a
    fresh model restores them, ``.to()`` moves them. With ``"shared"`` statistics and a
    :class:`TaskEmbedding`, the first call that brings a second task warns once
    (``UserWarning``).

    :meth:`materialize` exports one context's network as a plain ``nn.Module``.

    Example::

        >>> import torch, torch.nn as nn
        >>> from hyperdnn import HyperModel, HyperNetwork, MLP, Target, TaskEmbedding
        >>> target = Target(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)))
        >>> model = HyperModel(HyperNetwork(target, TaskEmbedding(2, 4), MLP((16,))), target)
        >>> model.norm_stats.mode
        'per_context'
        >>> model(torch.randn(6, 4), 1).shape            # trains task 1's statistics
        torch.Size([6, 3])
        >>> model(torch.randn(6, 4), [0, 1, 0, 1, 1, 0]).shape   # one group per task
        torch.Size([6, 3])
        >>> model.norm_stats.keys()
        [0, 1]
    """

    def __init__(self, hypernet: HyperNetwork, target: Target, norm_stats: str = "auto"):
        super().__init__()
        if not isinstance(hypernet, HyperNetwork):
            raise TypeError(f"HyperModel: hypernet must be a HyperNetwork, got {type(hypernet).__name__}")
        if not isinstance(target, Target):
            raise TypeError(f"HyperModel: target must be a Target, got {type(target).__name__}")
        if hypernet.spec != target.spec:
            raise ValueError(
                "HyperModel: the hypernetwork's spec (first) differs from the target's spec (second): "
                + hypernet.spec.difference(target.spec)
            )
        made = hypernet.theta_scale.dtype
        held = sorted(
            {str(t.dtype) for t in (*target.module.parameters(), *target.module.buffers()) if t.is_floating_point()}
            - {str(made)}
        )
        if held:
            raise TypeError(
                f"HyperModel: the hypernetwork generates {made} weights but the target's module holds {held} "
                f"tensors; give both one dtype (build both under torch.set_default_dtype, or convert the "
                f"target's module before wrapping it)"
            )
        resolved = resolve_norm_stats(norm_stats, hypernet.conditioner, target.module)
        self.hypernet = hypernet
        self.target = target
        self.norm_stats = NormStats(target.module, resolved)

    def forward(self, x: Any, context: Any = None, mode: str = "auto", **kwargs: Any) -> Any:
        """Run the target on ``x`` with weights generated for ``context``.

        Args:
            x: the target's input (batch at ``target.batch_dim``).
            context: the conditioner's context (a task id or ids, noise, continuous values;
                ``None`` for a :class:`LearnedLatent`, or ``x`` for a :class:`DataEncoder`).
            mode: ``"auto"``, ``"shared"``, ``"per_sample"`` or ``"ensemble"`` (see the class).
            **kwargs: further keyword arguments of the target's module.

        Returns:
            The module's output: per sample for a batched context, ``(K, N, ...)`` in ensemble mode.
        """
        if mode != "auto":
            check_choice("HyperModel", "mode", mode, ("auto", "shared", "per_sample", "ensemble"))
        modules = self._modules  # hot path: no nn.Module.__getattr__
        hypernet = modules["hypernet"]
        target = modules["target"]
        cond = hypernet._modules["conditioner"]
        if context is None and cond.reads_input:
            context = x
        args = (x,)
        # No keyword arguments, no BatchNorm statistics, eager: a target that is a chain (an
        # nn.Sequential of Linear layers and parameter-free leaves) runs it directly
        lean = not kwargs and not self.norm_stats._layers and not torch.compiler.is_compiling()
        if type(hypernet).generate_flat is HyperNetwork.generate_flat:
            # the chain check runs only for a batched context
            defer = (lambda: self._defer(mode, args, target, cond)) if lean else None
            flat, batched, deferred = hypernet._generate(context, defer, padded=lean)
        else:  # a subclass's own generation
            (flat, batched), deferred = hypernet.generate_flat(context), None
        scales = None
        if deferred is not None:
            scales, (chain, ensemble) = deferred
            B = flat.shape[0]
            if B and x.dim() and chain.usable():  # (generation ran since the check)
                if ensemble and x.shape[0]:
                    out = chain.run_ensemble(hypernet.spec.unflatten_prefix(flat), x, B, scales)
                    return chain.ensemble_output(out, B)
                if not ensemble and x.shape[0] == B:
                    return chain.run_per_sample(hypernet.spec.unflatten_prefix(flat), x, B, scales=scales)
        elif lean and not batched and not target.channels_last and mode != "per_sample" and mode != "ensemble":
            if mode == "shared" or cond.execution(False) is Execution.SHARED:
                chain = target._current().chain  # (lean: eager, one positional input)
                if chain is not None and chain.usable():
                    return chain.run(hypernet._unflatten(flat, False, hypernet.spec.unflatten_prefix), x)
        weights = hypernet._unflatten(flat, batched, hypernet.spec.unflatten_prefix)
        execution = self._execution(mode, batched, flat.shape[0], args, kwargs)
        norm = self.norm_stats
        if not norm.active:  # shared statistics, or no BatchNorm statistics at all
            if norm.watching and cond.norm_stats_policy == "per_context":
                norm.observe(norm.context_keys(cond, context))
            return target._run_trusted(weights, args, kwargs, execution, scales)
        if norm.mode == "batch":
            with norm.use():
                try:
                    return self._run(execution, weights, args, kwargs)
                except ValueError as e:
                    if not self.training and str(e).startswith("Expected more than 1 value per channel"):
                        raise ValueError(
                            f"HyperModel: norm_stats='batch' normalises every batch with its own statistics, in "
                            f"eval mode too, so each BatchNorm needs more than one value per channel; {e}. "
                            f"Evaluate on larger batches, or build the model with norm_stats='shared' (running "
                            f"statistics) or 'per_context'"
                        ) from e
                    raise
        ids = cond.context_keys(context)
        keys = ids.tolist() if ids.numel() == 1 else torch.unique(ids).tolist()
        if len(keys) > 1 and execution != "shared":
            return self._run_per_task(ids, keys, weights, execution, args, kwargs)
        with norm.use(keys[0]):
            return self._run(execution, weights, args, kwargs)

    def _execution(self, mode: str, batched: bool, B: int, args: tuple, kwargs: dict) -> str:
        """The target's mode for weights of ``B`` contexts: ``mode`` when forced, else the
        conditioner's :meth:`~hyperdnn.conditioners.Conditioner.execution`."""
        if mode != "auto":
            if (mode == "shared") == batched:
                got = f"a batch of {B} contexts" if batched else "one unbatched context"
                want = "one unbatched context" if mode == "shared" else "a batch of contexts (one weight set each)"
                raise ValueError(f"HyperModel: mode={mode!r} runs {want}, got {got}")
            return mode
        cond = self.hypernet.conditioner
        execution = cond.execution(batched)
        if not isinstance(execution, Execution):
            raise TypeError(
                f"HyperModel: {type(cond).__name__}.execution(batched={batched}) must return an Execution "
                f"(SHARED, PER_SAMPLE or ENSEMBLE), got {execution!r} ({type(execution).__name__})"
            )
        if execution is Execution.PER_SAMPLE:
            n = self.target.input_batch(*args, **kwargs)
            if n is not None and n != B:
                raise ValueError(
                    f"HyperModel: {type(cond).__name__} runs one weight set per input sample (its execution for "
                    f"a batched context is PER_SAMPLE), but the context has {B} items and x has {n} samples at "
                    f"dim {self.target.batch_dim}; they must match. To run {B} contexts on one shared batch, use a "
                    "conditioner whose execution is ENSEMBLE (Noise, Continuous(..., execution='ensemble')) or "
                    "pass mode='ensemble'"
                )
        return execution._value_  # the plain string (the enum's value property costs a descriptor call)

    @staticmethod
    def _defer(mode: str, args: tuple, target: Target, cond: Conditioner) -> tuple[Chain, bool] | None:
        """For a batched context: the target's :class:`Chain` (an ``nn.Sequential`` of
        ``Linear`` layers and parameter-free leaves) and whether the call is an ensemble, when
        the call runs per sample or as an ensemble through it; the hypernetwork then leaves its
        per-tensor hyperfan scales to the chain, which applies each to the smaller of the
        layer's input and its generated weight (the same product, without a pass over every
        generated number). ``None`` elsewhere. For eager calls without keyword arguments or
        BatchNorm statistics."""
        if mode == "shared":
            return None
        if mode == "auto":
            execution = cond.execution(True)
            if execution is Execution.SHARED or not isinstance(execution, Execution):
                return None
            ensemble = execution is Execution.ENSEMBLE
        else:
            ensemble = mode == "ensemble"
        chain = target._chain_for(target._current(), args, {}, ensemble)
        return None if chain is None else (chain, ensemble)

    def _run(self, execution: str, weights: dict[str, torch.Tensor], args: tuple, kwargs: dict) -> Any:
        # The weights come from a hypernet of the target's own spec (checked at construction):
        # the trusted path skips re-validating them on every call (the batch dims are still
        # checked against the mode).
        return self.target._run_trusted(weights, args, kwargs, execution)

    def _run_per_task(
        self, ids: torch.Tensor, keys: list[int], weights: dict[str, torch.Tensor], execution: str, args: tuple, kwargs
    ) -> Any:
        """Mixed context keys with per-context statistics: one call per key on its samples (or
        its ensemble members), outputs put back in the batch's order."""
        ensemble = execution == "ensemble"
        d = 0 if ensemble else self.target.batch_dim
        B = ids.shape[0]
        parts, order = [], []
        for key in keys:
            idx = (ids == key).nonzero().squeeze(1)
            part = {name: w.index_select(0, idx.to(w.device)) for name, w in weights.items()}
            if ensemble:
                args_k, kwargs_k = args, kwargs
            else:

                def take(t: Any, idx=idx) -> Any:
                    if isinstance(t, torch.Tensor) and t.dim() > d and t.shape[d] == B:
                        return t.index_select(d, idx.to(t.device))
                    return t

                args_k, kwargs_k = tuple(take(a) for a in args), {k: take(v) for k, v in kwargs.items()}
            with self.norm_stats.use(key):
                parts.append(self._run(execution, part, args_k, kwargs_k))
            order.append(idx)
        inverse = torch.argsort(torch.cat(order))

        def merge(*leaves: Any) -> Any:
            first = leaves[0]
            if not isinstance(first, torch.Tensor):
                return first
            if first.dim() <= d or sum(t.shape[d] for t in leaves) != B:
                raise ValueError(
                    f"HyperModel: a batch of mixed task ids runs one group per task (per-context "
                    f"BatchNorm statistics), which needs every output tensor to carry the batch of "
                    f"{B} at dim {d}; got an output of shape {tuple(first.shape)} for a group of "
                    f"{len(order[0])}. Call once per task, or use norm_stats='shared' or 'batch'"
                )
            return torch.cat(leaves, dim=d).index_select(d, inverse.to(first.device))

        return pytree.tree_map(merge, *parts)

    def compile(self, **kwargs: Any) -> HyperModel:
        """Compile the training forward (generation and the target's run) with ``torch.compile``.

        In place, as ``nn.Module.compile``: later calls ``model(x, context)`` run the compiled
        forward (parameters, ``state_dict`` and the optimizer stay this model's own). Every
        execution mode (shared, per sample, ensemble) and every head traces to one graph, so
        ``fullgraph=True`` is the default: a construct that would split the graph raises
        instead of silently running part of the step eagerly (a tensor of several task ids
        does, in :class:`TaskEmbedding`; call with one task id per step, or pass
        ``fullgraph=False``). Each call runs under :func:`compile_settings`, so the compiler
        partitions the step as hyperdnn's layers need.

        Args:
            **kwargs: ``torch.compile`` arguments (``backend``, ``mode``, ``dynamic``,
                ``fullgraph``...). On CUDA, ``mode="reduce-overhead"`` captures the step in
                CUDA graphs, which removes the per-kernel launch cost that dominates small
                hypernetwork steps on a GPU.

        Returns:
            This model (its calls now compiled).

        Example::

            >>> import torch, torch.nn as nn
            >>> from hyperdnn import HyperModel, HyperNetwork, MLP, Target, TaskEmbedding
            >>> target = Target(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)))
            >>> model = HyperModel(HyperNetwork(target, TaskEmbedding(2, 4), MLP((16,))), target)
            >>> model.compile(backend="aot_eager")(torch.randn(5, 4), 1).shape
            torch.Size([5, 3])
        """
        kwargs.setdefault("fullgraph", True)
        super().compile(**kwargs)
        compiled, target, fullgraph = self._compiled_call_impl, self.target, bool(kwargs["fullgraph"])
        tasks = isinstance(self.hypernet.conditioner, TaskEmbedding)

        @functools.wraps(compiled)
        def call(*args: Any, **kw: Any) -> Any:
            # outside the trace: the target's structure (dropped by a copy or unpickling) is
            # built eagerly, and one task id in any form reaches the graph as an int
            if target._built is None:
                target._current()
            if tasks:
                args, kw = _one_task_id(args, kw, fullgraph)
            # the compiler runs inside the first calls (and any recompiling one): each call runs
            # under hyperdnn's compiler settings (see compile_settings)
            with compile_settings():
                return compiled(*args, **kw)

        self._compiled_call_impl = call
        return self

    def materialize(self, context: Any = None) -> nn.Module:
        """The target network for one context as a plain module (no hyperdnn needed to run,
        save or load it).

        Generates weights for ``context`` (without gradients, in the hypernet's current
        train/eval mode) and returns ``self.target.materialize(weights)``: a deep copy of the
        target's module with the generated tensors as its own parameters. Its BatchNorm layers
        carry the running statistics this model uses for ``context``: the task's own with
        ``"per_context"`` statistics, the module's with ``"shared"``; with ``"batch"``
        statistics they have none (``running_mean``/``running_var`` are ``None``), so they
        normalise with each batch's statistics as the model does, and their ``state_dict``
        lacks those entries.

        Args:
            context: one unbatched context (a task id, a noise vector ``(dim,)``, values
                ``(in_features,)``, ``None`` for a :class:`LearnedLatent`).

        Returns:
            An ``nn.Module`` of the target module's class; ``module(x)`` equals
            ``model(x, context)`` in eval mode.

        Raises:
            ValueError: a batched context, or a conditioner that reads its context from the
                input (a :class:`DataEncoder`: weights per input).

        Example::

            >>> import torch, torch.nn as nn
            >>> from hyperdnn import HyperModel, HyperNetwork, MLP, Target, TaskEmbedding
            >>> target = Target(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)))
            >>> model = HyperModel(HyperNetwork(target, TaskEmbedding(2, 4), MLP((16,))), target).eval()
            >>> net = model.materialize(1)
            >>> x = torch.randn(5, 4)
            >>> torch.allclose(net(x), model(x, 1), atol=1e-6)
            True
        """
        cond = self.hypernet.conditioner
        if cond.reads_input:
            raise ValueError(
                f"HyperModel.materialize: a {type(cond).__name__} generates weights from each input (its "
                "context is the input), so there is no single network to export"
            )
        with torch.no_grad():
            flat, batched = self.hypernet.generate_flat(context)
            if batched:
                raise ValueError(
                    f"HyperModel.materialize: expected one unbatched context (a task id, a noise vector "
                    f"(dim,), ...), got a batched context of {flat.shape[0]}"
                )
            weights = self.hypernet.unflatten(flat, False)
        module = self.target.materialize(weights)
        norm = self.norm_stats
        if norm.active:
            key = norm.context_keys(cond, context)[0] if norm.mode == "per_context" else None
            stats = norm.statistics(key) if key is not None else None
            for path in norm.layer_names:
                layer = module.get_submodule(path)
                for name in layer._buffers.keys() & {"running_mean", "running_var", "num_batches_tracked"}:
                    value = None if stats is None else stats[path][name]
                    layer._buffers[name] = None if value is None else value.detach().clone()
        return module

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters an optimizer should train: the hypernet's and the target's own
        non-generated ones (the target's copies of generated tensors are excluded)."""
        generated = {id(p) for n, p in self.target.module.named_parameters() if n in self.target.spec}
        out, seen = [], set()
        for p in self.parameters():
            if p.requires_grad and id(p) not in generated and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    def adam(self, lr: float = 1e-3, **kwargs: Any) -> torch.optim.Adam:
        """``torch.optim.Adam`` over :meth:`trainable_parameters`, fused where torch can
        (:func:`hyperdnn.optim.adam`).

        Args:
            lr: learning rate.
            **kwargs: any other ``torch.optim.Adam`` argument (``betas``, ``weight_decay``,
                ``decoupled_weight_decay``...). Passing ``fused`` or ``foreach`` chooses the
                implementation yourself.

        Returns:
            The optimizer. Without ``fused``/``foreach`` it is ``Adam(..., fused=True)`` (one
            kernel for every tensor; on CPU about twice as fast as the default for a
            generate-once head of millions of numbers) when torch has a fused kernel for the
            parameters' device and dtype, and torch's default implementation otherwise.

        Example::

            >>> import torch, torch.nn as nn
            >>> from hyperdnn import HyperModel, HyperNetwork, Target, TaskEmbedding
            >>> target = Target(nn.Linear(4, 2))
            >>> model = HyperModel(HyperNetwork(target, TaskEmbedding(2, 3)), target)
            >>> opt = model.adam(lr=1e-3)
            >>> opt.defaults["fused"]
            True
        """
        return adam(self.trainable_parameters(), lr=lr, **kwargs)

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameter counts: hypernet, target's own (not generated), generated, total."""
        generated = {id(p) for n, p in self.target.module.named_parameters() if n in self.target.spec}
        hyper = sum(p.numel() for p in self.hypernet.parameters() if p.requires_grad)
        own = sum(p.numel() for p in self.target.module.parameters() if p.requires_grad and id(p) not in generated)
        return {
            "hypernet": hyper,
            "target_own": own,
            "generated": self.target.spec.numel,
            "trainable": hyper + own,
        }

    def summary(self) -> str:
        """A side-by-side table of trainable parameters (compression at a glance)."""
        c = self.parameter_counts()
        h = self.hypernet
        ratio = c["generated"] / max(c["hypernet"], 1)
        rows = [
            (
                "hypernet",
                " -> ".join(type(part).__name__ for part in (h.conditioner, h.trunk_config, h.head_config)),
                c["hypernet"],
            ),
            ("target (own, trained directly)", type(self.target.module).__name__, c["target_own"]),
            ("target (generated)", f"{len(h.spec)} tensors", c["generated"]),
            ("trainable total", "", c["trainable"]),
        ]
        w = max(len(r[0]) for r in rows)
        v = max(len(r[1]) for r in rows)
        lines = [f"{'part':<{w}}  {'what':<{v}}  {'parameters':>12}", "-" * (w + v + 16)]
        lines += [f"{a:<{w}}  {b:<{v}}  {n:>12,}" for a, b, n in rows]
        lines.append(f"generated / hypernet parameters: {ratio:.2f}x" + (" (compression)" if ratio > 1 else ""))
        return "\n".join(lines)
