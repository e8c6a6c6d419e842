"""Running statistics of a target's BatchNorm layers across contexts.

A BatchNorm layer keeps running statistics (``running_mean``, ``running_var``,
``num_batches_tracked``) that eval mode normalises with. Under a hypernetwork the layer's
inputs depend on the context: with task-conditioned weights every task has its own
activations, and one shared set of running statistics is a mixture that fits no task (train
mode, which uses the batch's own statistics, is unaffected, so the damage shows only in eval).
:class:`NormStats` decides which statistics a call uses:

* ``"per_context"``: a separate copy of every BatchNorm's running statistics per context key
  (:meth:`Conditioner.context_keys <hyperdnn.conditioners.Conditioner.context_keys>`: the
  task id of a :class:`~hyperdnn.conditioners.TaskEmbedding`). For the duration of a call
  the key's tensors are put into the layers' ``_buffers`` and the module's own are restored in
  ``finally``, so training updates that key's copy in place and nothing else. The copies are
  registered buffers (saved in ``state_dict``, moved by ``.to()``); a key first seen in train
  mode starts from the module's own statistics, which this mode never updates, so they keep
  their initial (or pretrained) values. A key never trained, met in eval mode, is normalised
  with the module's own statistics and adds no copy (evaluation leaves the state as it was).
* ``"batch"``: no running statistics: the layers normalise with the statistics of the batch
  in train and eval mode alike (for data-, noise- and continuous-conditioned weights, where
  contexts are not a small set of keys). The module's own statistics are neither used nor
  updated.
* ``"shared"``: the module's own buffers, one set for every context (PyTorch's behaviour).

:func:`resolve_norm_stats` turns ``"auto"`` into the conditioner's
:attr:`~hyperdnn.conditioners.Conditioner.norm_stats_policy` (``"per_context"`` for task ids,
``"batch"`` for data, noise and continuous contexts, ``"shared"`` for one learned code).
:class:`~hyperdnn.hypernet.HyperModel` owns a :class:`NormStats` and uses it on every call.

Every ``torch.nn`` BatchNorm (``BatchNorm1d/2d/3d``, ``SyncBatchNorm``) that tracks running
statistics is covered, generated or not; layer ``i`` is the ``i``-th such module in
``named_modules()`` order (:attr:`NormStats.layer_names`).

Example::

    >>> import torch, torch.nn as nn
    >>> from hyperdnn.norm_stats import NormStats
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    >>> stats = NormStats(net, "per_context")
    >>> with stats.use(1):
    ...     _ = net(torch.randn(8, 3) + 5)   # train mode: updates task 1's statistics only
    >>> stats.keys(), bool(net[1].running_mean.abs().sum() == 0)
    ([1], True)
    >>> sorted(k for k in stats.state_dict() if k.startswith("contexts.1.0."))
    ['contexts.1.0.num_batches_tracked', 'contexts.1.0.running_mean', 'contexts.1.0.running_var']
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from hyperdnn._checks import check_choice
from hyperdnn.conditioners import NORM_STATS_POLICIES, Conditioner

__all__ = ["NORM_STATS_MODES", "NormStats", "batchnorm_layers", "resolve_norm_stats"]

NORM_STATS_MODES = ("auto", "per_context", "batch", "shared")
"""Values of ``HyperModel(..., norm_stats=...)``."""

_STATS = ("running_mean", "running_var", "num_batches_tracked")


def batchnorm_layers(module: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """``(path, layer)`` of every BatchNorm in ``module`` that tracks running statistics,
    in ``named_modules()`` order."""
    return [
        (path, m)
        for path, m in module.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None
    ]


def resolve_norm_stats(mode: str, conditioner: Conditioner, module: nn.Module, where: str = "HyperModel") -> str:
    """The statistics mode for ``conditioner`` over ``module``: ``mode`` itself unless it is
    ``"auto"``, which gives ``"shared"`` for a module without BatchNorm running statistics and
    the conditioner's :attr:`~hyperdnn.conditioners.Conditioner.norm_stats_policy` otherwise.

    Raises:
        TypeError, ValueError: ``mode`` is not one of :data:`NORM_STATS_MODES`, the
            conditioner's policy is not one of ``"per_context"``, ``"batch"``, ``"shared"``, or
            ``"per_context"`` is asked of a conditioner whose contexts have no keys (its
            policy is not ``"per_context"``).
    """
    check_choice(where, "norm_stats", mode, NORM_STATS_MODES)
    policy = conditioner.norm_stats_policy
    check_choice(where, f"{type(conditioner).__name__}.norm_stats_policy", policy, NORM_STATS_POLICIES)
    if mode == "per_context" and policy != "per_context":
        raise ValueError(
            f"{where}: norm_stats='per_context' keeps statistics per context key and needs a conditioner "
            f"whose contexts are keys (norm_stats_policy 'per_context', e.g. a TaskEmbedding), got "
            f"{type(conditioner).__name__} (policy {policy!r}); use 'batch' (each batch's own statistics) "
            "or 'shared' (one set for every context)"
        )
    if mode != "auto":
        return mode
    if not batchnorm_layers(module):
        return "shared"
    return policy


class _LayerStats(nn.Module):
    """One BatchNorm layer's running statistics for one context (three buffers)."""

    def __init__(self, layer: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        for name in _STATS:
            value = layer._buffers[name]
            self.register_buffer(name, None if value is None else value.detach().clone())


class NormStats(nn.Module):
    """Which running statistics a target's BatchNorm layers use, per call (see the module
    docstring for the three modes).

    Args:
        module: the target's module (its BatchNorm layers are found once, here).
        mode: ``"per_context"``, ``"batch"`` or ``"shared"`` (resolve ``"auto"`` with
            :func:`resolve_norm_stats` first).

    Per-context statistics live in :attr:`contexts` (``state_dict`` keys
    ``contexts.<key>.<layer>.<statistic>``) and grow with each new key; ``load_state_dict``
    creates the keys it finds, so a fresh instance loads a trained one's state.

    With ``"shared"`` statistics, :meth:`observe` warns (one ``UserWarning``, once per instance)
    when the layers meet a second task.
    """

    def __init__(self, module: nn.Module, mode: str):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"NormStats: module must be an nn.Module, got {type(module).__name__}")
        self.mode = check_choice("NormStats", "mode", mode, NORM_STATS_MODES[1:])
        # a plain list: the layers belong to the target's module, not to this one
        self._layers = batchnorm_layers(module)
        self.contexts = nn.ModuleDict()
        self._seen: set[int] = set()
        self._warned = False

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Paths of the covered BatchNorm layers in the module; layer ``i`` is ``layer_names[i]``."""
        return tuple(path for path, _ in self._layers)

    @property
    def active(self) -> bool:
        """Whether calls swap statistics: ``"per_context"`` or ``"batch"`` over a module with
        BatchNorm running statistics."""
        return self.mode != "shared" and bool(self._layers)

    def keys(self) -> list[int]:
        """Context keys that have their own statistics, sorted."""
        return sorted(int(k) for k in self.contexts)

    def statistics(self, key: int) -> dict[str, dict[str, torch.Tensor | None]]:
        """Context ``key``'s statistics: layer path -> ``{"running_mean", "running_var",
        "num_batches_tracked"}`` (the stored tensors themselves; the module's initial
        statistics for a key not seen yet, without storing them)."""
        stats = self.contexts[str(key)] if str(key) in self.contexts else None
        return {
            path: {name: (layer if stats is None else stats[i])._buffers[name] for name in _STATS}
            for i, (path, layer) in enumerate(self._layers)
        }

    def _stats_for(self, key: int) -> nn.ModuleList:
        name = str(key)
        if name not in self.contexts:
            self.contexts[name] = nn.ModuleList(_LayerStats(layer) for _, layer in self._layers)
        return self.contexts[name]

    @contextmanager
    def use(self, key: int | None = None) -> Iterator[None]:
        """Run the block with the statistics of this mode: context ``key``'s (``"per_context"``,
        created from the module's own on first use in train mode; a key never trained, used
        while every layer is in eval mode, reads the module's own without being stored, so
        evaluation adds no state), none (``"batch"``) or the module's own
        (``"shared"``; ``key`` is ignored). The module's buffers are restored in ``finally``,
        also when the block raises."""
        if self.mode == "shared" or not self._layers:
            yield
            return
        if self.mode == "per_context":
            if key is None or isinstance(key, bool) or not isinstance(key, int):
                raise TypeError(f"NormStats.use: per-context statistics need an int key, got {key!r}")
            if str(key) in self.contexts or any(layer.training for _, layer in self._layers):
                stats = self._stats_for(key)
                values = [[s._buffers[name] for name in _STATS] for s in stats]
            else:
                # an unseen key in eval mode: nothing updates statistics, so it reads the
                # module's own (what its copy would start from) without adding state entries
                values = [[layer._buffers[name] for name in _STATS] for _, layer in self._layers]
        else:
            values = [[None] * len(_STATS) for _ in self._layers]
        saved = []
        try:
            for (_, layer), new in zip(self._layers, values):
                buffers = layer._buffers
                for name, value in zip(_STATS, new):
                    saved.append((buffers, name, buffers[name]))
                    buffers[name] = value
            yield
        finally:
            for buffers, name, value in reversed(saved):
                buffers[name] = value

    @staticmethod
    def context_keys(conditioner: Conditioner, context: Any) -> list[int]:
        """The distinct keys of ``context``, sorted: the unique values of
        :meth:`conditioner.context_keys(context) <hyperdnn.conditioners.Conditioner.context_keys>`
        (task ids for a :class:`~hyperdnn.conditioners.TaskEmbedding`)."""
        keys = conditioner.context_keys(context)
        return keys.tolist() if keys.numel() == 1 else torch.unique(keys).tolist()

    @property
    def watching(self) -> bool:
        """Whether :meth:`observe` still records tasks (``"shared"`` statistics, BatchNorm
        layers present, no warning given yet)."""
        return self.mode == "shared" and bool(self._layers) and not self._warned

    def observe(self, keys: Iterable[int]) -> None:
        """Record the task ids a ``"shared"`` module met; warn once when there are two or more.

        Other modes, and modules without BatchNorm statistics, ignore it."""
        if not self.watching:
            return
        self._seen.update(int(k) for k in keys)
        if len(self._seen) > 1:
            self._warned = True
            tasks = sorted(self._seen)
            warnings.warn(
                f"the target's BatchNorm layers {list(self.layer_names)} share one set of running "
                f"statistics between tasks (seen: {tasks[:5]}{' ...' if len(tasks) > 5 else ''}); in eval "
                "mode every task is normalised with statistics mixed over all of them. Use "
                "HyperModel(..., norm_stats='per_context') to keep statistics per task.",
                UserWarning,
                stacklevel=5,
            )

    def _load_from_state_dict(
        self,
        state_dict,
        prefix: str,
        local_metadata,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # create the contexts the state holds, so that the recursion into ``contexts`` loads them
        head = prefix + "contexts."
        for k in state_dict:
            if k.startswith(head) and self.mode == "per_context" and self._layers:
                key = k[len(head) :].split(".", 1)[0]
                if key.isdigit() and key not in self.contexts:
                    self._stats_for(int(key))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, layers={list(self.layer_names)}, keys={self.keys()}"
