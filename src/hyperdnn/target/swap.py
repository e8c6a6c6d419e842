"""Running a call: the swaps a call enters and always leaves.

A call enters a :class:`Frame`: the weight swap (shared: the generated tensors go into their
owners' parameter slots) or the forward swaps (grouped: each planned layer's ``forward`` is
replaced by its kernel, an instance attribute). :class:`Active` enters frames and restores
everything on exit, also after an error: parameters, forwards, and what layers cache from
their parameters (RNN flat weights, the attribute a legacy hook writes).

Frames of the running calls are kept per thread, so that ``torch.utils.checkpoint`` called
inside the module can hand its recomputation a function that re-enters them: while at least
one call runs, checkpoint's two entry points (``CheckpointFunction`` and
``_checkpoint_without_reentrant_generator``) are replaced by stand-ins (counted across
threads, restored when the last call ends; outside calls they delegate unchanged). Grouped
calls also turn off the fused inference path of attention and transformer layers, which reads
the layers' own parameters instead of calling their (replaced) forwards.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.utils.checkpoint as _checkpoint
from torch import nn
from torch.utils import _pytree as pytree

from hyperdnn.target.kernels import GroupedCall, needs_copy_to_renorm, renormed_table
from hyperdnn.target.plan import SWAP_MARK, PlanEntry
from hyperdnn.target.structure import Structure, global_hooks
from hyperdnn.target.vmap import Dims, bypassing, run_vmapped

__all__ = ["Frame", "Active", "hooked"]

_MISSING = object()


class _Local(threading.local):
    """Per thread: ``frames``, the running calls of this thread, innermost last. Set when a
    thread first reads it (never absent): a compiled call guards on what it read, and an
    attribute that appeared after the first call would make the second call compile again."""

    def __init__(self) -> None:
        self.frames: list = []


_LOCAL = _Local()


def _running_frames() -> list:
    return _LOCAL.frames


class _Switch:
    """A process-wide setting changed while at least one call needs it (counted, locked)."""

    def __init__(self, turn_on: Callable[[], Any], turn_off: Callable[[Any], None]):
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
            with Active(tuple(f.rebound(it) for f in frames)):
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
        with Active(frames):
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
_FASTPATH_SWITCH = _Switch(_fastpath_off, torch.backends.mha.set_fastpath_enabled)


class Frame:
    """One running call: its structure, weights and how it runs.

    Args:
        structure: the module's :class:`~hyperdnn.target.structure.Structure`.
        weights: spec name -> tensor.
        groups: ``None`` for a shared call (one weight set, unbatched), else ``G``.
        per_group_norm, channels_last, batch_dim: see :class:`~hyperdnn.target.kernels.GroupedCall`.
    """

    __slots__ = ("structure", "weights", "groups", "per_group_norm", "channels_last", "batch_dim")

    def __init__(
        self,
        structure: Structure,
        weights: Mapping[str, torch.Tensor],
        groups: int | None = None,
        per_group_norm: bool = False,
        channels_last: bool = False,
        batch_dim: int = 0,
    ):
        self.structure, self.weights, self.groups = structure, weights, groups
        self.per_group_norm, self.channels_last, self.batch_dim = per_group_norm, channels_last, batch_dim

    def swap(self) -> _ParameterSwap | _ForwardSwap:
        return _ParameterSwap(self) if self.groups is None else _ForwardSwap(self)

    def tensors(self) -> list[torch.Tensor]:
        """The weights in spec order."""
        return [self.weights[n] for n in self.structure.own]

    def rebound(self, it: Iterator[torch.Tensor]) -> Frame:
        """This frame with the next tensors of ``it`` as its weights (in spec order)."""
        weights = {n: next(it) for n in self.structure.own}
        return Frame(self.structure, weights, self.groups, self.per_group_norm, self.channels_last, self.batch_dim)


class Active:
    """Enter ``frames``' swaps; restore everything on exit, also after an error."""

    __slots__ = ("frames", "_exits", "_depth", "_fast", "_checkpoint")

    def __init__(self, frames: tuple[Frame, ...]):
        self.frames = frames

    def __enter__(self) -> None:
        self._fast = any(f.groups is not None and f.structure.no_fastpath for f in self.frames)
        # Traced by torch.compile, checkpoint is the compiler's own operator (it replays the
        # traced graph, generated tensors included) and the stand-ins are not needed; the
        # switch's lock would break the graph.
        self._checkpoint = not torch.compiler.is_compiling()
        if self._checkpoint:
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
            if self._checkpoint:
                _CHECKPOINT_SWITCH.release()


def _save_caches(structure: Structure) -> list | None:
    """What the module caches from its parameters: RNN flat weights and the attributes legacy
    hooks write. A forward re-derives both, so after a call they would hold generated tensors
    until the module's next forward; a call restores them."""
    if not structure.rnn and not structure.legacy:
        return None
    saved: list = [(o, "_flat_weights", o.__dict__.get("_flat_weights", _MISSING)) for o in structure.rnn]
    saved += [(o, "_flat_weight_refs", o.__dict__.get("_flat_weight_refs", _MISSING)) for o in structure.rnn]
    saved += [(m, name, m.__dict__.get(name, _MISSING)) for m, name in structure.legacy]
    return saved


def _restore_caches(saved: list | None) -> None:
    for m, name, value in saved or ():
        if value is _MISSING:
            m.__dict__.pop(name, None)
        else:
            m.__dict__[name] = value


class _ParameterSwap:
    """Put the frame's weights into the owners' parameter slots until exit; always restored
    (``torch.func.functional_call``'s swap, with the owners resolved once per structure)."""

    __slots__ = ("frame", "_saved", "_caches")

    def __init__(self, frame: Frame):
        self.frame = frame

    def __enter__(self) -> None:
        structure = self.frame.structure
        self._caches = _save_caches(structure)
        saved = self._saved = []
        weights = self.frame.weights
        try:
            for owner, attr, canon in structure.slots:
                params = owner._parameters
                saved.append((params, attr, params[attr]))
                w = weights[canon]
                if type(owner) is nn.Embedding and owner.max_norm is not None and needs_copy_to_renorm(w):
                    # F.embedding renormalises its table in place, which a generated table
                    # (a view autograd needs) does not allow: give it the renormalised copy
                    w = renormed_table(w, owner.max_norm, owner.norm_type)
                params[attr] = w
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc) -> None:
        for params, attr, orig in reversed(self._saved):
            params[attr] = orig
        _restore_caches(self._caches)


def _grouped_forward(entry: PlanEntry, frame: Frame) -> Callable[..., Any]:
    """The forward a grouped call puts on ``entry``'s layer: its kernel (or vmap) over the
    frame's weights, or the layer's own forward inside a vmapped subtree."""
    module, G = entry.module, frame.groups
    weights = {local: frame.weights[canon] for local, canon in entry.names.items()}
    own = entry.forward or type(module).forward.__get__(module)
    if entry.kernel is None:
        dims = entry.vmap_dims or Dims(frame.batch_dim, frame.batch_dim)

        def run(call: GroupedCall, *args, **kwargs):
            return run_vmapped(module, call.weights, G, dims, args, kwargs)
    else:
        run = entry.kernel.run
    call = GroupedCall(module, weights, G, frame.batch_dim, frame.per_group_norm, frame.channels_last)
    derived, sources = entry.derived, entry.sources

    def forward(*args, **kwargs):
        if bypassing():
            return own(*args, **kwargs)
        if not derived:
            return run(call, *args, **kwargs)
        g = {k: v for k, v in weights.items() if k not in sources}
        for d in derived:
            g[d.name] = d.compute(weights, G)
        return run(dataclasses.replace(call, weights=g), *args, **kwargs)

    setattr(forward, SWAP_MARK, True)
    return forward


class _GroupedSlot(torch.Tensor):
    """What a generated parameter's slot holds during a grouped call (eager mode).

    In a grouped call each layer gets its groups' weights through its own (swapped) forward;
    the slot itself would still hold the module's own, never-trained tensor, so a module that
    reads a child's parameter directly (a tied readout ``h @ self.emb.weight.T``) silently
    computed with it. This stand-in keeps the tensor's shape, dtype and device (metadata reads
    work) and raises a clear error on any use of its values. ``torch.func.functional_call``
    (the vmap fallback) swaps it out and back like any tensor."""

    _META = frozenset(
        (
            torch.Tensor.shape.__get__,
            torch.Tensor.dtype.__get__,
            torch.Tensor.device.__get__,
            torch.Tensor.ndim.__get__,
            torch.Tensor.requires_grad.__get__,
            torch.Tensor.is_cuda.__get__,
            torch.Tensor.layout.__get__,
            torch.Tensor.size,
            torch.Tensor.dim,
            torch.Tensor.numel,
            torch.Tensor.is_floating_point,
        )
    )

    @staticmethod
    def __new__(cls, like: torch.Tensor, name: str):
        t = torch.Tensor._make_wrapper_subclass(cls, like.shape, dtype=like.dtype, device=like.device)
        t._hd_name = name
        return t

    def __repr__(self, *args, **kwargs) -> str:  # type: ignore[override]
        return f"<generated tensor {self._hd_name!r} {tuple(self.shape)}: its values live in the grouped call>"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in cls._META:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **(kwargs or {}))
        names = sorted({a._hd_name for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, _GroupedSlot)})
        op = getattr(func, "__name__", str(func))
        if op == "__get__":  # a property (x.T, x.data): its name is the descriptor's
            op = getattr(getattr(func, "__self__", None), "__name__", op)
        raise RuntimeError(
            f"Target: the generated tensor(s) {names} were used outside their own layer's forward "
            f"({op}) during a grouped call (per sample or ensemble), where each "
            "layer gets its groups' weights through its own forward only. A module that uses a child's "
            "parameter directly (a tied readout such as h @ self.emb.weight.T) needs "
            "Target(..., per_sample='vmap'), which runs the whole module once per weight set, or shared weights"
        )

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"Target: a generated tensor's stand-in reached {func} during a grouped call")


class _ForwardSwap:
    """Replace each planned layer's ``forward`` (an instance attribute) until exit; restore
    the forwards and the layers' parameter caches, also after an error."""

    __slots__ = ("frame", "_saved", "_caches", "_slots")

    def __init__(self, frame: Frame):
        self.frame = frame

    def __enter__(self) -> None:
        structure = self.frame.structure
        training = [name for name, m in structure.spectral if m.training]
        if training:
            raise ValueError(
                f"Target: the spectral_norm parametrisation of {training} runs its power iteration in "
                "training mode, updating one pair of vectors in place; with batched weights call .eval() "
                "on the module first, or use shared weights"
            )
        # a layer without generated tensors (a BatchNorm) needs its kernel only per group
        # (ensemble members); per sample its own forward normalises over the whole batch
        per_group = self.frame.per_group_norm
        swaps = [(e.module, _grouped_forward(e, self.frame)) for e in structure.plan if e.names or per_group]
        self._caches = _save_caches(structure)
        saved = self._saved = []
        slots = self._slots = []
        try:
            for module, forward in swaps:
                saved.append((module, module.__dict__.get("forward", _MISSING)))
                module.__dict__["forward"] = forward
            if not torch.compiler.is_compiling():
                for owner, attr, guard in _guards(structure):
                    params = owner._parameters
                    slots.append((params, attr, params[attr]))
                    params[attr] = guard
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc) -> None:
        for params, attr, orig in reversed(self._slots):
            params[attr] = orig
        for module, prev in reversed(self._saved):
            if prev is _MISSING:
                module.__dict__.pop("forward", None)
            else:
                module.__dict__["forward"] = prev
        _restore_caches(self._caches)


def _guards(structure: Structure) -> list[tuple[nn.Module, str, _GroupedSlot]]:
    """``(owner, attribute, stand-in)`` for each generated tensor's slot, made once per
    structure (a structure is rebuilt when the module's tensors change)."""
    guards = structure.guards
    if guards is None:
        # one stand-in per tensor: tied aliases stay one object (functional_call unties none)
        stand_in = {name: _GroupedSlot(p, name) for name, p in structure.own.items()}
        # a legacy reparametrisation hook (torch.nn.utils.weight_norm) reads its layer's own
        # tensors before every forward; its result goes unused in a grouped call (the kernel
        # derives the weight from the generated tensors), so those slots keep their tensors
        hooked = {id(m) for m, _ in structure.legacy}
        guards = [(o, a, stand_in[c]) for o, a, c in structure.slots if id(o) not in hooked]
        structure.guards = guards
    return guards


def hooked(module: nn.Module) -> bool:
    """Whether calling ``module`` would run hooks (its own or global ones)."""
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
        or global_hooks()
    )
