"""Reparametrisations: tensors a layer reads, derived per group from generated sources.

A generated tensor may be the *source* of the tensor a layer reads: an original of a
``torch.nn.utils.parametrize`` parametrisation (``"parametrizations.weight.original0"``), or a
parameter of a legacy reparametrisation hook (``weight_norm``'s ``weight_g``/``weight_v``,
pruning's ``weight_orig``). A grouped kernel reads the derived tensor (``"weight"``),
computed per group from the generated sources on every call of the layer, as the layer
recomputes it itself. The legacy ``spectral_norm`` hook updates state in place and cannot run
grouped (a clear error).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn.utils.prune import BasePruningMethod as _PruningHook
from torch.nn.utils.spectral_norm import SpectralNorm as _SpectralNormHook
from torch.nn.utils.weight_norm import WeightNorm as _WeightNormHook

__all__ = ["Derived", "derivation", "legacy_hooks", "legacy_attribute"]


def legacy_hooks(module: nn.Module) -> dict[str, tuple[str, Any]]:
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


def legacy_attribute(kind: str, hook: Any) -> str:
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


class Derived:
    """A tensor a layer reads, computed per group from generated source tensors.

    ``name`` is local to the plan entry's layer (``"weight"``, ``"out_proj.weight"``);
    ``sources`` maps the entry's local generated names to their role: the name inside the
    ``ParametrizationList`` (``"original0"``), or ``"g"``/``"v"``/``"orig"`` for legacy hooks.
    """

    __slots__ = ("name", "kind", "module", "sources", "hook")

    def __init__(self, name: str, kind: str, module: nn.Module, hook: Any = None):
        self.name, self.kind, self.module, self.hook = name, kind, module, hook
        self.sources: dict[str, str] = {}

    def compute(self, gen: Mapping[str, torch.Tensor], G: int) -> torch.Tensor:
        """The derived tensor ``(G, ...)`` from the generated sources in ``gen``."""
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


def derivation(owner: nn.Module, path: str, local: str) -> tuple[str, str, nn.Module, Any, str] | None:
    """How generated ``local`` (relative to ``owner``, at ``path``) reaches its layer:
    ``(derived name, kind, module, hook, role)``, or ``None`` when the layer reads it directly.

    Raises:
        ValueError: ``local`` feeds a legacy ``spectral_norm`` hook (it cannot run grouped).
    """
    head, sep, tail = local.partition("parametrizations.")
    if sep and (not head or head.endswith(".")):
        tensor, _, inner = tail.partition(".")
        plist = owner.get_submodule(head + "parametrizations." + tensor)
        return head + tensor, "parametrize", plist, None, inner
    sub_path, _, attr = local.rpartition(".")
    sub = owner.get_submodule(sub_path) if sub_path else owner
    hook = legacy_hooks(sub).get(attr)
    if hook is None:
        return None
    kind, h = hook
    prefix = sub_path + "." if sub_path else ""
    name = prefix + legacy_attribute(kind, h)
    if kind == "spectral_norm":
        full = f"{path}.{name}" if path else name
        raise ValueError(
            f"Target: {full!r} uses the legacy torch.nn.utils.spectral_norm hook (its power iteration "
            f"updates one pair of vectors in place), which cannot run with batched weights; use "
            f"torch.nn.utils.parametrizations.spectral_norm in eval mode, or shared weights"
        )
    role = {"weight_norm": "g" if attr.endswith("_g") else "v", "prune": "orig"}[kind]
    return name, kind, sub, h, role
