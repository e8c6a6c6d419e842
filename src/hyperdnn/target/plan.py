"""Planning a grouped call: which layers' forwards it replaces, and with what.

:func:`build_plan` walks the module once per structure (the plan is cached with it) and
returns one :class:`PlanEntry` per layer that reads generated tensors, and one per
``BatchNorm`` outside them (ensemble members normalise over their own batch):

* every generated tensor is assigned to the layer that reads it: its owner, or the outermost
  layer above it whose kernel reads its submodules itself (attention reads ``out_proj``), or
  the parametrised layer above a ``parametrizations`` container;
* the layer's kernel comes from the table in :mod:`hyperdnn.target.kernels`; a layer without
  one (or that its kernel cannot serve) runs its whole subtree under vmap, so the tensors of
  its subtree are named relative to it and no entry is made below it;
* tensors that reach the layer through a reparametrisation are read through a
  :class:`~hyperdnn.target.reparam.Derived` computed per group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from torch import nn
from torch.nn.utils import parametrize

from hyperdnn.target.kernels import GroupedKernel, kernel_for, reads_submodules
from hyperdnn.target.reparam import Derived, derivation
from hyperdnn.target.vmap import Dims

__all__ = ["PlanEntry", "build_plan"]

SWAP_MARK = "_target_swap"
"""Attribute set on the forwards a running grouped call puts on layers (not the user's)."""


@dataclass(frozen=True, eq=False)
class PlanEntry:
    """One layer whose ``forward`` a grouped call replaces.

    Attributes:
        path: the layer's path in the module (``""`` for the module itself).
        module: the layer.
        kernel: its grouped kernel, or ``None``: its subtree runs under vmap.
        names: the generated tensors it reads: local name (relative to the layer) -> spec name.
        derived: tensors it reads that are computed per group from generated sources.
        forward: the user's instance-level ``forward`` of the layer (runs under vmap), or ``None``.
        vmap_dims: under vmap, the batch dims of the layer's inputs and outputs given by its
            layer type's kernel (attention: per ``batch_first``); ``None``: the target's ``batch_dim``.
        sources: local names of the generated tensors that only feed ``derived`` ones.
    """

    path: str
    module: nn.Module
    kernel: GroupedKernel | None
    names: Mapping[str, str]
    derived: tuple[Derived, ...] = ()
    forward: Callable | None = None
    vmap_dims: Dims | None = None
    sources: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", frozenset(s for d in self.derived for s in d.sources))


def _instance_forward(module: nn.Module) -> Callable | None:
    """The user's instance-level ``forward`` of ``module``, not one a running call put there."""
    forward = module.__dict__.get("forward")
    return None if forward is None or getattr(forward, SWAP_MARK, False) else forward


def _owner_path(path: str, modules: Mapping[str, nn.Module]) -> str:
    """The layer that reads a parameter registered at ``path``: the outermost layer above it
    whose kernel reads its submodules (attention), else the parametrised module above a
    ``parametrizations`` container, else ``path`` itself."""
    parts = path.split(".") if path else []
    for i in range(len(parts)):
        anc = ".".join(parts[:i])
        if reads_submodules(modules[anc]):
            return anc
    for i, part in enumerate(parts):
        if part == "parametrizations":
            anc = ".".join(parts[:i])
            if parametrize.is_parametrized(modules[anc]):
                return anc
    return path


def build_plan(module: nn.Module, spec_names: tuple[str, ...], vmap_all: bool) -> list[PlanEntry]:
    """The grouped plan of ``module`` for the generated tensors ``spec_names``.

    Args:
        module: the target's module.
        spec_names: the generated tensors (canonical ``named_parameters()`` names).
        vmap_all: one entry for the whole module under vmap (``per_sample="vmap"``).

    Raises:
        ValueError: a generated tensor feeds a legacy ``spectral_norm`` hook.
    """
    if vmap_all:
        return [PlanEntry("", module, None, {n: n for n in spec_names})]
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
    plan: list[PlanEntry] = []
    subtrees: list[str] = []
    for path in sorted(owners, key=lambda p: (p.count(".") + (p != ""), p)):
        if any(s == "" or path == s or path.startswith(s + ".") for s in subtrees):
            continue
        owner = modules[path]
        names = owners[path]
        derived: dict[str, Derived] = {}
        effective = set()
        for local in names:
            how = derivation(owner, path, local)
            if how is None:
                effective.add(local)
                continue
            dname, dkind, dmodule, hook, role = how
            d = derived.setdefault(dname, Derived(dname, dkind, dmodule, hook))
            d.sources[local] = role
            effective.add(dname)
        forward = _instance_forward(owner)
        typed = None if forward is not None else kernel_for(owner)
        kernel = typed if typed is not None and typed.handles(owner, effective) else None
        dims = typed.vmap_dims(owner) if kernel is None and typed is not None and typed.vmap_dims else None
        if kernel is None or kernel.subtree:
            # the layer runs its whole subtree: every generated tensor below it, named
            # relative to it (under vmap, functional_call resolves reparametrisations)
            subtrees.append(path)
            prefix = path + "." if path else ""
            sub = {}
            for p2, attrs in owners.items():
                if path == "" or p2 == path or p2.startswith(prefix):
                    rel = p2[len(prefix) :]
                    for attr, canon in attrs.items():
                        sub[f"{rel}.{attr}" if rel else attr] = canon
            # a kernel reads derived tensors like any other layer's
            plan.append(PlanEntry(path, owner, kernel, sub, tuple(derived.values()) if kernel else (), forward, dims))
        else:
            plan.append(PlanEntry(path, owner, kernel, dict(names), tuple(derived.values()), forward))
    # A BatchNorm without generated tensors still mixes samples: as an ensemble, each member
    # must normalise over its own copy of the batch, so its kernel runs too (with no weights;
    # per sample it keeps its own forward, see _ForwardSwap).
    planned = {id(e.module) for e in plan}
    for path, m in module.named_modules():
        if id(m) in planned or any(s == "" or path == s or path.startswith(s + ".") for s in subtrees):
            continue
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and _instance_forward(m) is None:
            kernel = kernel_for(m)
            if kernel is not None and kernel.handles(m, ()):
                plan.append(PlanEntry(path, m, kernel, {}))
                planned.add(id(m))
    return plan
