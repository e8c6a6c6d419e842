"""WeightTable: one weight set per task, trained directly (no hypernetwork).

The baseline a task-conditioned hypernetwork is measured against when both generate for the
same :class:`~hyperdnn.target.Target`: one ordinary adapter per language (the target's
adapters, :mod:`hyperdnn.adapters`), one model per domain (all its weights). ``table(ids)``
returns weights in the layout a hypernetwork returns, so the same
``target(weights, x)`` runs either; every entry is its own parameter and a call stacks only
the entries it uses, so an entry that is not in a batch gets no gradient at all.

Example::

    >>> import torch, torch.nn as nn
    >>> from hyperdnn import Target
    >>> from hyperdnn.baselines.weight_table import WeightTable
    >>> target = Target(nn.Linear(4, 2))
    >>> table = WeightTable(target.spec, 3, target.default_weights())   # 3 copies of the init
    >>> w = table(torch.tensor([2, 0, 2]))
    >>> w["weight"].shape, target(w, torch.randn(3, 4)).shape           # one set per sample
    (torch.Size([3, 2, 4]), torch.Size([3, 2]))
    >>> table.add_entries(1)                                            # a new task: the mean
    [3]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from hyperdnn._checks import check_int
from hyperdnn.spec import WeightSpec

__all__ = ["WeightTable"]


class WeightTable(nn.Module):
    """``num_entries`` independent weight sets for ``spec``, trained directly.

    Args:
        spec: the tensors of one weight set.
        num_entries: how many sets (tasks, languages, domains).
        init: name -> tensor, every set's starting values (default: zeros).

    ``forward(ids)``: an int id gives one unbatched set (name -> ``shape``), ids ``(B,)`` give
    ``(B, *shape)`` per name.
    """

    def __init__(self, spec: WeightSpec, num_entries: int, init: Mapping[str, torch.Tensor] | None = None):
        super().__init__()
        if not isinstance(spec, WeightSpec):
            raise TypeError(f"WeightTable: spec must be a WeightSpec, got {type(spec).__name__}")
        check_int("WeightTable", "num_entries", num_entries)
        if init is not None:
            spec.check(init, where="WeightTable init")
        self.spec = spec
        start = torch.zeros(spec.numel) if init is None else spec.flatten({n: init[n].detach() for n in spec.names})
        self.entries = nn.ParameterList([nn.Parameter(start.clone().float()) for _ in range(num_entries)])

    @property
    def num_entries(self) -> int:
        """Current number of weight sets."""
        return len(self.entries)

    def add_entries(self, n: int = 1, init: Sequence[int] | None = None) -> list[int]:
        """Append ``n`` sets, each the mean of the entries ``init`` (default: of all of them);
        returns their ids."""
        check_int("WeightTable.add_entries", "n", n)
        src = list(range(self.num_entries)) if init is None else list(init)
        bad = [i for i in src if not 0 <= i < self.num_entries]
        if not src or bad:
            raise ValueError(f"WeightTable.add_entries: init must name entries in [0, {self.num_entries - 1}], got {src}")  # fmt: skip
        with torch.no_grad():
            mean = torch.stack([self.entries[i] for i in src]).mean(0)
        start = self.num_entries
        self.entries.extend(nn.Parameter(mean.clone()) for _ in range(n))
        return list(range(start, start + n))

    def forward(self, ids: int | torch.Tensor) -> dict[str, torch.Tensor]:
        if isinstance(ids, int) and not isinstance(ids, bool):
            if not 0 <= ids < self.num_entries:
                raise ValueError(f"WeightTable: ids must be in [0, {self.num_entries - 1}], got {ids}")
            return self.spec.unflatten(self.entries[ids])
        if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.dtype.is_floating_point:
            raise TypeError(f"WeightTable: expected an int or int64 ids (B,), got {ids!r}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_entries):
            raise ValueError(f"WeightTable: ids must be in [0, {self.num_entries - 1}], got {ids.tolist()}")
        used = torch.unique(ids)
        table = torch.stack([self.entries[i] for i in used.tolist()])
        return self.spec.unflatten(table[torch.searchsorted(used, ids)])
