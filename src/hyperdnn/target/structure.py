"""What a call needs from the module's structure, cached and checked on every call.

Everything derived from the module's structure (where each generated tensor is referenced,
which layers cache their parameters, the grouped plan) is cached in a :class:`Structure` and
rebuilt when that structure changes: each call first compares, for every module of the tree,
its class and the identities of its submodules and parameters with those the cache was built
from (:class:`Fingerprint`: three flat list comparisons; measured in CPU time on one thread,
1.5 us for a 3-layer MLP, 16 us for a 6-layer ``TransformerEncoder``).
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _m
from torch.nn.utils.parametrizations import _SpectralNorm as _SpectralNormParametrization

from hyperdnn.spec import WeightSpec
from hyperdnn.target.kernels import grouped_linear, scale_smaller
from hyperdnn.target.plan import PlanEntry, build_plan
from hyperdnn.target.reparam import legacy_attribute, legacy_hooks

__all__ = ["Fingerprint", "Structure"]

_SUBMODULES = operator.attrgetter("_modules")
_PARAMETERS = operator.attrgetter("_parameters")


class Fingerprint:
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
        """Whether the tree still has the classes, submodules and parameters it had."""
        # modules compare by identity (nn.Module has no __eq__); parameters by id
        if torch.compiler.is_compiling():
            # the same comparison without operator.attrgetter, which the compiler cannot trace
            # (a graph break); traced, it is evaluated once and kept as the graph's guards
            return (
                [m.__class__ for m in self.modules] == self._classes
                and [c for m in self.modules for c in m._modules.values()] == self._children
                and [id(p) for m in self.modules for p in m._parameters.values()] == self._param_ids
            )
        return (
            [m.__class__ for m in self.modules] == self._classes
            and [c for d in map(_SUBMODULES, self.modules) for c in d.values()] == self._children
            and [id(p) for d in map(_PARAMETERS, self.modules) for p in d.values()] == self._param_ids
        )


class LayoutFingerprint(Fingerprint):
    """A :class:`Fingerprint` that compares the parameters' names instead of their identities
    (and holds none): for code that reads each layer's parameters when it runs, where a tensor
    put in a parameter's place (as ``torch.func.functional_call`` does) changes nothing. Eager
    only."""

    __slots__ = ()

    def __init__(self, module: nn.Module):
        super().__init__(module)
        self._params = None
        self._param_ids = [k for d in map(_PARAMETERS, self.modules) for k in d]

    def unchanged(self) -> bool:
        return (
            [m.__class__ for m in self.modules] == self._classes
            and [c for d in map(_SUBMODULES, self.modules) for c in d.values()] == self._children
            and [k for d in map(_PARAMETERS, self.modules) for k in d] == self._param_ids
        )


class Structure:
    """What a call needs from ``module``'s structure for the generated tensors of ``spec``.

    Attributes:
        fingerprint: the structure it was built from.
        own: spec name -> the module's own parameter (dtype and device of each generated tensor).
        slots: ``(owner, attribute, spec name)`` of every reference to a generated tensor
            (tied aliases included): what a shared call swaps.
        rnn: RNN layers that cache their weights in ``_flat_weights`` (a call restores it).
        legacy: ``(module, attribute)`` that legacy hooks write before every forward.
        no_fastpath: the module has layers with a fused inference path that reads their
            parameters directly (attention, transformer layers).
        spectral: ``(tensor, parametrisation)`` of generated tensors under
            ``parametrizations.spectral_norm`` (grouped calls need eval mode).

    Raises:
        ValueError: a legacy hook on a ``MultiheadAttention``'s ``out_proj`` whose tensors are
            generated (attention never calls ``out_proj``, so the hook would never apply them).
    """

    __slots__ = (
        "fingerprint",
        "own",
        "slots",
        "rnn",
        "legacy",
        "no_fastpath",
        "spectral",
        "guards",
        "_vmap_all",
        "_plan",
        "_chain",
    )

    def __init__(self, module: nn.Module, spec: WeightSpec, vmap_all: bool = False):
        self.fingerprint = Fingerprint(module)
        params = dict(module.named_parameters())
        self.own = {t.name: params[t.name] for t in spec}
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
        self.slots = tuple(slots)
        self.rnn = tuple(rnn)
        legacy = (
            (m, legacy_attribute(kind, hook)) for m in module.modules() for kind, hook in legacy_hooks(m).values()
        )
        self.legacy = tuple(dict.fromkeys(legacy))
        # MultiheadAttention reads out_proj.weight without calling out_proj, so a legacy hook
        # there never sees generated tensors: its attribute is whatever it last computed
        stale = []
        for path, m in module.named_modules():
            if isinstance(m, nn.MultiheadAttention):
                out_proj = f"{path}.out_proj" if path else "out_proj"
                if any(f"{out_proj}.{n}" in gen_names for n in legacy_hooks(m.out_proj)):
                    stale.append(out_proj)
        if stale:
            raise ValueError(
                f"Target: {stale} carry a legacy torch.nn.utils reparametrisation hook whose tensors are "
                "generated, but MultiheadAttention reads out_proj.weight without calling out_proj, so the hook "
                "would never apply them; use torch.nn.utils.parametrizations (e.g. weight_norm) instead"
            )
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
        self._vmap_all = vmap_all
        self._plan: list[PlanEntry] | None = None
        self._chain: Chain | None | bool = False  # False: not built yet
        self.guards: list | None = None  # the grouped calls' slot stand-ins (target/swap.py)

    @property
    def module(self) -> nn.Module:
        """The module this structure describes."""
        return self.fingerprint.modules[0]

    @property
    def chain(self) -> Chain | None:
        """The functional form of a shared call (:class:`Chain`), or ``None`` when the module
        is not a chain of plain layers. Built on first use."""
        chain = self._chain
        if chain is False:
            chain = self._chain = Chain.build(self.module, self.slots)
        return chain

    @property
    def plan(self) -> list[PlanEntry]:
        """The grouped plan (built on first use: shared calls never need it)."""
        if self._plan is None:
            plan = build_plan(self.module, tuple(self.own), self._vmap_all)
            if torch.compiler.is_compiling():
                # traced: not cached, so the next call finds the state this one found (a cache
                # filled while tracing fails the graph's guard and compiles the step again)
                return plan
            self._plan = plan
        return self._plan


def global_hooks() -> bool:
    """Whether module hooks are registered for every module (``register_module_forward_hook``
    and the like): then every module call runs them."""
    return bool(
        _m._global_forward_hooks
        or _m._global_forward_pre_hooks
        or _m._global_backward_hooks
        or _m._global_backward_pre_hooks
    )


def call_sequential(seq: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``seq(x)`` for a module of the library's own (a hypernetwork's hidden layers): when
    ``seq`` is a :class:`Chain` of its own layers and :meth:`Chain.usable`, the layers'
    operations without the module calls (the same results); else the module call. The
    chain is kept on ``seq`` and rebuilt when its structure changes."""
    if torch.compiler.is_compiling():
        return seq(x)
    kept = seq.__dict__.get("_hyperdnn_chain")
    if kept is None or kept.fingerprint is None or not kept.fingerprint.unchanged():
        # the chain reads each layer's parameters when it runs: only the layout must match
        kept = seq.__dict__["_hyperdnn_chain"] = _KeptChain(LayoutFingerprint(seq), Chain.build(seq, ()))
    chain = kept.chain
    if chain is None or not chain.usable():
        return seq(x)
    return chain.run(_NO_WEIGHTS, x)


_NO_WEIGHTS: dict = {}


class _KeptChain:
    """:func:`call_sequential`'s cache on a module: a copy or an unpickled module gets an
    empty one (rebuilt on first use)."""

    __slots__ = ("fingerprint", "chain")

    def __init__(self, fingerprint: LayoutFingerprint | None = None, chain: Chain | None = None):
        self.fingerprint, self.chain = fingerprint, chain

    def __deepcopy__(self, memo: dict) -> _KeptChain:
        return _KeptChain()

    def __reduce__(self):
        return (_KeptChain, ())


# what a chain replicates, as torch defines it (a patch of any of them sends calls to the modules)
_LINEAR_FORWARD = nn.Linear.forward
_RELU_FORWARD = nn.ReLU.forward
_SEQUENTIAL_FORWARD = nn.Sequential.forward
_CALL_IMPL = nn.Module._call_impl


class Chain:
    """A shared call of an ``nn.Sequential`` of plain layers, run without entering modules.

    The module qualifies when it is an ``nn.Sequential`` (exactly that class; nested ones
    count) whose leaves are ``nn.Linear`` layers (exactly that class) or modules without
    submodules, parameters, buffers or tensor attributes whose call is nn.Module's own
    (activations, ``Flatten``, ``Dropout``...). Its shared
    call is then ``F.linear`` per ``Linear``, on the generated tensors (or the layer's own
    parameter where a tensor is not generated), and each other leaf's ``forward``: the calls
    ``Sequential.forward`` would make, minus the module-call machinery around each of them
    (about 3 us per layer on a CPU). :meth:`usable` refuses a call the machinery would
    change: hooks (the layers' own or global ones), a ``forward`` set on an instance, a
    module compiled in place, JIT tracing.

    Args:
        modules: every module of the chain, containers included (for :meth:`usable`).
        steps: per leaf, ``(layer, weight name, bias name)`` for a ``Linear`` (a name is the
            spec name of a generated tensor, or ``None`` for the layer's own), or
            ``(leaf, None, None)`` for any other leaf.
    """

    __slots__ = ("modules", "steps")

    def __init__(self, modules: tuple[nn.Module, ...], steps: tuple[tuple, ...]):
        self.modules = modules
        self.steps = steps

    @staticmethod
    def build(module: nn.Module, slots: tuple) -> Chain | None:
        """The chain of ``module``, or ``None`` when it does not qualify. ``slots`` are
        :attr:`Structure.slots`: where each generated tensor is referenced."""
        if type(module) is not nn.Sequential:
            return None
        generated = {(id(owner), attr): canon for owner, attr, canon in slots}
        modules: list[nn.Module] = []
        steps: list[tuple] = []

        def walk(m: nn.Module) -> bool:
            modules.append(m)
            if type(m) is nn.Sequential:
                return all(c is not None and walk(c) for c in m._modules.values())
            if type(m) is nn.Linear:
                if m._buffers or set(m._parameters) - {"weight", "bias"}:
                    return False
                steps.append((m, generated.get((id(m), "weight")), generated.get((id(m), "bias"))))
                return True
            if m._modules or m._parameters or m._buffers:
                return False
            if type(m).__call__ is not nn.Module.__call__ or type(m)._call_impl is not nn.Module._call_impl:
                return False  # a call that is not "hooks, then forward"
            if any(isinstance(v, (nn.Module, torch.Tensor)) for v in vars(m).values()):
                return False  # it may read a tensor the swap would have replaced
            steps.append((m, None, None))
            return True

        if not walk(module) or not steps:
            return None
        return Chain(tuple(modules), tuple(steps))

    def usable(self) -> bool:
        """Whether calling the modules would run exactly the chain: no hooks anywhere, no
        ``forward`` set on an instance, no module compiled in place, no JIT tracing, and
        ``Linear.forward``, ``ReLU.forward``, ``Sequential.forward`` and ``Module._call_impl``
        as torch defines them (not patched)."""
        if (
            global_hooks()
            or torch._C._get_tracing_state()
            or nn.Linear.forward is not _LINEAR_FORWARD
            or nn.ReLU.forward is not _RELU_FORWARD
            or nn.Sequential.forward is not _SEQUENTIAL_FORWARD
            or nn.Module._call_impl is not _CALL_IMPL
        ):
            return False
        for m in self.modules:
            if not _calls_forward(m):
                return False
        return True

    def run_per_sample(
        self, weights, x: torch.Tensor, G: int, start: int = 0, scales: dict | None = None
    ) -> torch.Tensor:
        """The chain from leaf ``start`` on ``x`` (batch at dim 0: ``G`` groups of samples, one
        group per weight set; spec name -> ``(G, ...)``): each ``Linear`` the grouped
        ``Linear`` kernel's ``baddbmm`` (``bmm`` without a generated bias), each other leaf its
        ``forward`` on the whole batch, as a grouped call runs them. ``scales`` (spec name ->
        float): each generated tensor is to be multiplied by its scale, which the product
        takes instead (see :func:`~hyperdnn.target.kernels.grouped_linear`)."""
        for m, w, b in self.steps[start:]:
            if type(m) is not nn.Linear:
                x = _leaf(m, x)
                continue
            weight = m.weight if w is None else weights[w]
            bias = m.bias if b is None else weights[b]
            if w is None and b is None:
                x = F.linear(x, weight, bias)
                continue
            if x.dim() < 2 or x.shape[0] % G:
                raise ValueError(
                    f"Target: Linear with batched weights expected an input with its batch of {G} weight sets x N "
                    f"samples at dim 0, got {tuple(x.shape)}"
                )
            w_scale = 1.0 if scales is None or w is None else scales[w]
            b_scale = 1.0 if scales is None or b is None else scales[b]
            x = grouped_linear(x, G, weight, bias, w is not None, b is not None, w_scale, b_scale)
        return x

    def starts_generated(self) -> bool:
        """Whether the first leaf is a ``Linear`` whose weight is generated (what
        :meth:`run_ensemble` needs) and the top container's first entry."""
        m, w, _ = self.steps[0]
        return type(m) is nn.Linear and w is not None and next(iter(self.modules[0]._modules.values())) is m

    def run_ensemble(self, weights, x: torch.Tensor, K: int, scales: dict | None = None) -> torch.Tensor:
        """The chain for ``K`` weight sets (spec name -> ``(K, ...)``) on one input ``x (n,
        ..., in)``, as ``(K * n, ...)``, member-major: the first ``Linear`` meets ``x`` once for
        all ``K`` sets (one GEMM with ``K * out`` outputs), the rest runs as
        :meth:`run_per_sample` from leaf 1 (needs :meth:`starts_generated`). ``scales`` as in
        :meth:`run_per_sample`; the first layer's weight scale multiplies ``x`` (shared by the
        ``K`` sets) or the weights, whichever has fewer numbers."""
        m, wn, bn = self.steps[0]
        w = weights[wn]
        b = m.bias if bn is None else weights[bn]
        if scales is not None:
            x, w = scale_smaller(x, w, scales[wn])
            if bn is not None and scales[bn] != 1.0:
                b = b * scales[bn]
        bias = None if b is None else (b.reshape(-1) if bn is not None else b.repeat(K))
        y = F.linear(x, w.reshape(-1, w.shape[-1]), bias)  # (n, ..., K * out)
        y = y.unflatten(-1, (K, w.shape[1])).movedim(-2, 0)  # (K, n, ..., out)
        return self.run_per_sample(weights, y.reshape(K * x.shape[0], *y.shape[2:]), K, start=1, scales=scales)

    @staticmethod
    def ensemble_output(out: torch.Tensor, K: int) -> torch.Tensor:
        """:meth:`run_ensemble`'s ``(K * n, ...)`` as an ensemble call's ``(K, n, ...)``."""
        return out.reshape(K, out.shape[0] // K, *out.shape[1:])

    def run(self, weights, x):
        """The chain on ``x`` with the generated ``weights`` (spec name -> tensor)."""
        linear = F.linear
        for m, w, b in self.steps:
            if type(m) is nn.Linear:
                x = linear(
                    x,
                    m.weight if w is None else weights[w],
                    m.bias if b is None else weights[b],
                )
            else:
                x = _leaf(m, x)
        return x


def _calls_forward(m: nn.Module) -> bool:
    """Whether ``m``'s own state leaves its call as "its class's ``forward``": no hooks of its
    own, no ``forward`` set on the instance, not compiled in place."""
    return not (
        m._forward_hooks
        or m._forward_pre_hooks
        or m._backward_hooks
        or m._backward_pre_hooks
        or m._compiled_call_impl is not None
        or "forward" in m.__dict__
    )


def plain_call(m: nn.Module) -> bool:
    """Whether calling ``m`` would run just its class's ``forward``: no hooks (its own or
    global ones), no ``forward`` set on the instance, not compiled in place, the class's call
    nn.Module's own and ``Module._call_impl`` not patched, no JIT tracing, no
    ``torch.compile`` tracing. Then the library may call that ``forward`` (or a method that
    returns the same numbers) itself."""
    return (
        not torch.compiler.is_compiling()
        and type(m).__call__ is nn.Module.__call__
        and type(m)._call_impl is _CALL_IMPL
        and nn.Module._call_impl is _CALL_IMPL
        and _calls_forward(m)
        and not global_hooks()
        and not torch._C._get_tracing_state()
    )


def plain_linear(m: nn.Module) -> bool:
    """Whether calling ``m`` would run exactly ``nn.Linear.forward`` as torch defines it: an
    ``nn.Linear`` (that class) for which :func:`plain_call` holds, with ``Linear.forward`` not
    patched. Then ``F.linear`` on its parameters is its call."""
    return type(m) is nn.Linear and nn.Linear.forward is _LINEAR_FORWARD and plain_call(m)


def _leaf(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A chain leaf's ``forward`` on ``x``; a ``ReLU`` on a plain tensor is the ``torch.relu``
    its ``forward`` calls (through ``F.relu``), without the two Python calls in between."""
    if type(m) is nn.ReLU and not m.inplace and type(x) is torch.Tensor:
        return torch.relu(x)
    return m.forward(x)
