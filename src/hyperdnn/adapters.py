"""Adapters: small layers inserted into a frozen target, for a hypernetwork to generate.

:func:`insert_adapters` attaches an :class:`Adapter` to every ``nn.Linear`` whose dotted name
matches a glob, and freezes every other parameter of the module::

    y = layer(x)                               the frozen layer, its weights untouched
    y = y + up(act(down(y)))                   a bottleneck adapter (Houlsby et al., 2019)
          + lora_b(lora_a(x))                  and/or LoRA factors (Hu et al., 2022)

The adapter is the layer's child ``adapter`` (its parameters are ``<layer>.adapter.down.weight``,
``<layer>.adapter.up.bias``, ``<layer>.adapter.lora_a.weight`` ...), applied by a forward hook:
the layer's own parameter names, and so the module's state-dict keys, stay as they were, and a
pretrained checkpoint still loads. ``up`` and ``lora_b`` start at zero, so a new adapter leaves
the module's output unchanged. The function returns the adapters' parameter names:
``Target(module, select=names)`` generates exactly those, and a hypernetwork over that target
(HyperFormer, Karimi Mahabadi et al., 2021; hyper-adapters, Baziotis et al., 2022) makes
one adapter set per context while the target's own weights stay fixed. The
:class:`~hyperdnn.heads.LowRank` head generates adapters with one generator shared by the
layers of the same shapes. :func:`remove_adapters` takes them out again.

Every piece of an adapter is an ``nn.Linear``, so a :class:`~hyperdnn.target.Target` runs
generated adapters with its grouped ``Linear`` kernel, per sample or as an ensemble.

Example::

    >>> import torch, torch.nn as nn
    >>> from hyperdnn import HyperNetwork, LowRank, Target, TaskEmbedding, insert_adapters
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> x = torch.randn(3, 8)
    >>> before = net(x)
    >>> names = insert_adapters(net, "*", bottleneck=2)
    >>> names[:2]
    ('0.adapter.down.weight', '0.adapter.down.bias')
    >>> torch.equal(net(x), before)              # zero-initialised: the output is unchanged
    True
    >>> target = Target(net, select=names)        # generate the adapters, nothing else
    >>> hnet = HyperNetwork(target, TaskEmbedding(3, 4), head=LowRank(rank=1))
    >>> target(hnet([0, 1, 2]), x).shape          # one adapter set per sample
    torch.Size([3, 4])
    >>> [n for n, p in net.named_parameters() if p.requires_grad and "adapter" not in n]
    []
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from hyperdnn._checks import check_bool, check_choice, check_int, check_optional_int
from hyperdnn.trunks import ACTIVATIONS, make_activation

__all__ = ["Adapter", "insert_adapters", "remove_adapters", "adapter_layers"]

#: the attribute an adapted layer holds its adapter under
ADAPTER_ATTRIBUTE = "adapter"


class Adapter(nn.Module):
    """A bottleneck adapter and/or LoRA factors for one ``Linear`` layer ``in -> out``.

    ``forward(x, y)`` takes the layer's input ``x (..., in)`` and output ``y (..., out)`` and
    returns ``y + up(act(down(y))) + lora_b(lora_a(x))`` of shape ``(..., out)`` (each term
    only when configured). ``down`` and ``lora_a`` start as ``nn.Linear`` does; ``up`` and
    ``lora_b`` start at zero, so a new adapter returns ``y`` unchanged.

    Args:
        in_features: the layer's input width.
        out_features: the layer's output width.
        bottleneck: width of the bottleneck adapter, in ``[1, out_features]`` (``None``: none).
        lora_rank: rank of the LoRA factors, in ``[1, min(in_features, out_features)]``
            (``None``: none).
        activation: the bottleneck's activation (``"relu"``, ``"gelu"``, ...).

    Raises:
        ValueError: neither a bottleneck nor a LoRA rank, or one of zero or larger than the
            layer.

    Example::

        >>> import torch
        >>> from hyperdnn.adapters import Adapter
        >>> a = Adapter(8, 16, bottleneck=4, lora_rank=2)
        >>> y = torch.randn(5, 16)
        >>> torch.equal(a(torch.randn(5, 8), y), y)
        True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bottleneck: int | None = None,
        lora_rank: int | None = None,
        activation: str = "relu",
    ):
        super().__init__()
        check_int("Adapter", "in_features", in_features)
        check_int("Adapter", "out_features", out_features)
        _check_sizes("Adapter", bottleneck, lora_rank)
        problems = _size_problems(f"Linear {in_features} -> {out_features}", in_features, out_features, bottleneck, lora_rank)  # fmt: skip
        if problems:
            raise ValueError(f"Adapter: {'; '.join(problems)}")
        check_choice("Adapter", "activation", activation, sorted(ACTIVATIONS))
        self.in_features, self.out_features = in_features, out_features
        self.bottleneck, self.lora_rank = bottleneck, lora_rank
        self.down: nn.Linear | None = None
        self.up: nn.Linear | None = None
        self.lora_a: nn.Linear | None = None
        self.lora_b: nn.Linear | None = None
        if bottleneck is not None:
            self.down = nn.Linear(out_features, bottleneck)
            self.act = make_activation(activation)
            self.up = nn.Linear(bottleneck, out_features)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)
        if lora_rank is not None:
            self.lora_a = nn.Linear(in_features, lora_rank, bias=False)
            self.lora_b = nn.Linear(lora_rank, out_features, bias=False)
            nn.init.zeros_(self.lora_b.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The adapted output ``(..., out_features)`` from the layer's input and output."""
        out = y
        if self.down is not None:
            out = out + self.up(self.act(self.down(y)))
        if self.lora_a is not None:
            out = out + self.lora_b(self.lora_a(x))
        return out

    def extra_repr(self) -> str:
        return f"bottleneck={self.bottleneck}, lora_rank={self.lora_rank}"


def _check_sizes(where: str, bottleneck: int | None, lora_rank: int | None) -> None:
    """The types of ``bottleneck`` and ``lora_rank``, and that at least one is given."""
    check_optional_int(where, "bottleneck", bottleneck, low=0)
    check_optional_int(where, "lora_rank", lora_rank, low=0)
    if bottleneck is None and lora_rank is None:
        raise ValueError(f"{where}: expected a bottleneck, a lora_rank or both, got neither")


def _size_problems(layer: str, fan_in: int, fan_out: int, bottleneck: int | None, lora_rank: int | None) -> list[str]:
    """What is zero or larger than ``layer`` (a ``Linear fan_in -> fan_out``)."""
    problems = []
    if bottleneck is not None and not 1 <= bottleneck <= fan_out:
        problems.append(
            f"bottleneck must be in [1, {fan_out}] for {layer} (at most its output width), got {bottleneck}"
        )
    if lora_rank is not None and not 1 <= lora_rank <= min(fan_in, fan_out):
        problems.append(
            f"lora_rank must be in [1, {min(fan_in, fan_out)}] for {layer} (at most min(in, out)), got {lora_rank}"
        )
    return problems


def _apply_adapter(layer: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
    """The forward hook of an adapted layer: its output through its adapter. A module-level
    function that finds the adapter on the layer it is called for, so a deep copy of the
    module (``Target.materialize``) uses the copy's own adapter."""
    return getattr(layer, ADAPTER_ATTRIBUTE)(args[0], output)


def adapter_layers(module: nn.Module) -> list[str]:
    """The dotted names of the layers of ``module`` that hold an :class:`Adapter`, in module order."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"adapter_layers: module must be an nn.Module, got {type(module).__name__}")
    return [n for n, m in module.named_modules() if isinstance(getattr(m, ADAPTER_ATTRIBUTE, None), Adapter)]


def insert_adapters(
    module: nn.Module,
    layers: str | Sequence[str],
    bottleneck: int | None = 16,
    lora_rank: int | None = None,
    *,
    activation: str = "relu",
    freeze: bool = True,
) -> tuple[str, ...]:
    """Attach an :class:`Adapter` to every ``nn.Linear`` of ``module`` whose name matches ``layers``.

    Changes ``module`` in place: each chosen layer gets the child ``adapter`` and a forward
    hook that passes its output through it; with ``freeze`` every parameter the module had
    before gets ``requires_grad=False``. The layers' own parameters keep their names and
    values. Everything is checked before anything changes: on an error the module is as it was.

    Args:
        module: the target, e.g. a pretrained model (also one from Hugging Face Transformers).
        layers: a glob or a list of globs on the dotted module names (``"blocks.*.ffn.out"``,
            ``"encoder.layer.*.output.dense"``); each must match at least one ``nn.Linear``.
        bottleneck: width of each bottleneck adapter, in ``[1, out_features]`` of its layer
            (``None``: no bottleneck adapter).
        lora_rank: rank of each layer's LoRA factors, in ``[1, min(in, out)]`` of its layer
            (``None``: no LoRA factors).
        activation: the bottleneck's activation.
        freeze: freeze the module's own parameters.

    Returns:
        The adapters' parameter names, in ``named_parameters()`` order (``(n_params,)`` strings):
        pass them as ``Target(module, select=names)`` to generate exactly the adapters.

    Raises:
        TypeError: ``module`` is not an ``nn.Module`` or ``layers`` not a glob or globs.
        ValueError: a glob that matches no ``Linear`` layer (the message lists the module's
            ``Linear`` layers), a layer that already has an adapter or an attribute
            ``adapter``, a ``Linear`` inside a ``MultiheadAttention`` (which reads
            ``out_proj.weight`` without calling the layer, so no hook would run), or a
            bottleneck or LoRA rank of zero or larger than a chosen layer.

    Example::

        >>> import torch.nn as nn
        >>> from hyperdnn.adapters import insert_adapters
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> insert_adapters(net, "2", bottleneck=None, lora_rank=2)
        ('2.adapter.lora_a.weight', '2.adapter.lora_b.weight')
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"insert_adapters: module must be an nn.Module, got {type(module).__name__}")
    globs = [layers] if isinstance(layers, str) else layers
    if not isinstance(globs, Sequence) or not globs or not all(isinstance(g, str) for g in globs):
        raise TypeError(f"insert_adapters: layers must be a glob or a non-empty list of globs, got {layers!r}")
    check_choice("insert_adapters", "activation", activation, sorted(ACTIVATIONS))
    check_bool("insert_adapters", "freeze", freeze)
    _check_sizes("insert_adapters", bottleneck, lora_rank)
    linear = {n: m for n, m in module.named_modules() if isinstance(m, nn.Linear) and n}
    inside_attention = {
        f"{n}.{sub}" if n else sub
        for n, m in module.named_modules()
        if isinstance(m, nn.MultiheadAttention)
        for sub, _ in m.named_modules()
        if sub
    }
    chosen = [n for n in linear if any(fnmatch.fnmatchcase(n, g) for g in globs)]
    unmatched = [g for g in globs if not any(fnmatch.fnmatchcase(n, g) for n in linear)]
    if unmatched:
        shown = list(linear)[:12] + (["..."] if len(linear) > 12 else [])
        raise ValueError(
            f"insert_adapters: no Linear layer matches {unmatched}; the module's Linear layers are {shown or 'none'}"
        )
    problems = []
    for n in chosen:
        layer = linear[n]
        if n in inside_attention:
            problems.append(f"{n!r} is inside a MultiheadAttention, which never calls it")
        elif hasattr(layer, ADAPTER_ATTRIBUTE):
            problems.append(f"{n!r} already has an attribute {ADAPTER_ATTRIBUTE!r}")
    if problems:
        raise ValueError(f"insert_adapters: cannot adapt {'; '.join(problems)}")
    for n in chosen:
        layer = linear[n]
        where = f"{n!r} (Linear {layer.in_features} -> {layer.out_features})"
        problems += _size_problems(where, layer.in_features, layer.out_features, bottleneck, lora_rank)
    if problems:
        raise ValueError(f"insert_adapters: {'; '.join(problems)}")
    ref = next(module.parameters(), None)
    if freeze:
        for p in module.parameters():
            p.requires_grad_(False)
    for n in chosen:
        layer = linear[n]
        adapter = Adapter(layer.in_features, layer.out_features, bottleneck, lora_rank, activation)
        if ref is not None:
            adapter.to(device=ref.device, dtype=ref.dtype)
        setattr(layer, ADAPTER_ATTRIBUTE, adapter)
        layer.register_forward_hook(_apply_adapter)
    prefixes = tuple(f"{n}.{ADAPTER_ATTRIBUTE}." for n in chosen)
    return tuple(n for n, _ in module.named_parameters() if n.startswith(prefixes))


def remove_adapters(module: nn.Module) -> list[str]:
    """Take every :class:`Adapter` out of ``module`` (its hook and its child); returns the
    names of the layers it was removed from. The layers' own parameters are untouched (unfreeze
    them yourself if you want them trained)."""
    names = adapter_layers(module)
    for n in names:
        layer = module.get_submodule(n)
        for key in [k for k, hook in layer._forward_hooks.items() if hook is _apply_adapter]:
            del layer._forward_hooks[key]
        delattr(layer, ADAPTER_ATTRIBUTE)
    return names
