"""The output regulariser of task-conditioned hypernetworks (von Oswald et al., ICLR 2020).

While a hypernetwork ``h(e; Theta)`` learns task ``t``, the weights it generates for the
earlier task embeddings are kept where they were::

    reg = beta / |S| * sum_{k in S} || h(e_k; Theta + dTheta) - theta*_k ||^2

``theta*_k`` are the (flat) weights generated for task ``k`` just before task ``t`` began (the
*snapshot*), ``S`` all earlier tasks or a random subset of them, and ``dTheta`` an optional
look-ahead (see :func:`~hyperdnn.methods.lookahead.adam_candidate_step`), held constant. All of
``S`` runs through the hypernetwork in one batched pass (a context of shape ``(|S|,)``).

Example::

    >>> import torch, torch.nn as nn
    >>> from hyperdnn import HyperNetwork, Target, TaskEmbedding, MLP
    >>> from hyperdnn.methods import OutputRegularizer
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> hnet = HyperNetwork(Target(nn.Linear(3, 2)), TaskEmbedding(2, 4), MLP((8,)))
    >>> reg = OutputRegularizer(beta=0.01)
    >>> reg.snapshot(hnet, 2)           # theta* of tasks 0 and 1: (2, 8) flat weights
    >>> reg.targets.shape, float(reg(hnet).detach())
    (torch.Size([2, 8]), 0.0)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch.func import functional_call

from hyperdnn import HyperNetwork

__all__ = ["OutputRegularizer"]


class OutputRegularizer:
    """Keeps a hypernetwork's outputs for earlier tasks at their snapshot.

    Args:
        beta: the regulariser's weight, ``>= 0`` (0: the regulariser is always 0).
        num_sampled: regularise a random subset of this many earlier tasks per call (0: all).

    Call :meth:`snapshot` before a new task to store ``theta*`` for the tasks so far, then add
    the regulariser (a call) to the task loss at every step. ``targets``: the snapshot,
    ``(num_tasks, numel)`` in the spec's flat layout, or ``None`` before the first snapshot.

    Raises:
        ValueError: ``beta`` is negative or not finite, ``num_sampled`` is not an int ``>= 0``.
    """

    def __init__(self, beta: float, num_sampled: int = 0):
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < float("inf"):
            raise ValueError(f"OutputRegularizer: beta must be a finite float >= 0, got {beta!r}")
        if isinstance(num_sampled, bool) or not isinstance(num_sampled, int) or num_sampled < 0:
            raise ValueError(f"OutputRegularizer: num_sampled must be an int >= 0, got {num_sampled!r}")
        self.beta = beta
        self.num_sampled = num_sampled
        self.targets: torch.Tensor | None = None

    @property
    def num_tasks(self) -> int:
        """Tasks with a stored snapshot (0 before the first :meth:`snapshot`)."""
        return 0 if self.targets is None else int(self.targets.shape[0])

    @torch.no_grad()
    def snapshot(self, hnet: HyperNetwork, num_tasks: int) -> None:
        """Store ``theta*_k = h(e_k)`` for tasks ``0 .. num_tasks - 1`` (``(num_tasks, numel)``),
        generated in eval mode (the hypernetwork's mode is restored afterwards).

        Raises:
            ValueError: ``num_tasks`` is not an int ``>= 0``.
        """
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 0:
            raise ValueError(f"OutputRegularizer.snapshot: num_tasks must be an int >= 0, got {num_tasks!r}")
        if num_tasks == 0:
            self.targets = None
            return
        with _eval_mode(hnet):
            ids = torch.arange(num_tasks, device=hnet.theta_scale.device)
            self.targets = hnet.generate_flat(ids)[0].detach().clone()

    def task_ids(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """The earlier tasks to regularise now, ``(|S|,)`` int64: all, or a sorted random subset
        of ``num_sampled`` drawn from ``generator``."""
        n = self.num_tasks
        if self.num_sampled and self.num_sampled < n:
            return torch.randperm(n, generator=generator)[: self.num_sampled].sort().values
        return torch.arange(n)

    def __call__(
        self,
        hnet: HyperNetwork,
        delta: Mapping[str, torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The regulariser: a scalar tensor (0 without earlier tasks or with ``beta = 0``), the
        outputs generated in eval mode as the snapshot (exactly 0 right after it).

        Args:
            hnet: the hypernetwork being trained.
            delta: parameter name -> look-ahead change ``dTheta`` of that parameter's shape
                (treated as a constant); ``None`` regularises at the current parameters.
            generator: draws the subset of tasks when ``num_sampled`` is set.

        Raises:
            ValueError: ``delta`` names parameters the hypernetwork does not have (all listed).
        """
        if self.targets is None or self.beta == 0:
            return hnet.theta_scale.new_zeros(())
        ids = self.task_ids(generator).to(self.targets.device)
        if delta:
            params = dict(hnet.named_parameters())
            unknown = sorted(set(delta) - set(params))
            if unknown:
                raise ValueError(f"OutputRegularizer: delta names unknown hypernetwork parameters {unknown}")
        # in eval mode, as the snapshot: a trunk's dropout (or spectral norm's power iteration)
        # would otherwise put noise between the outputs and their fixed targets
        with _eval_mode(hnet):
            if delta:
                moved = {n: params[n] + d.detach() for n, d in delta.items()}
                current = hnet.spec.flatten(functional_call(hnet, moved, (ids,)))
            else:
                current = hnet.generate_flat(ids)[0]
        diff = current - self.targets.index_select(0, ids)
        return self.beta * diff.pow(2).sum(dim=1).mean()


@contextlib.contextmanager
def _eval_mode(hnet: HyperNetwork) -> Iterator[None]:
    """``hnet`` in eval mode inside the block; its mode is restored on exit (also after an error)."""
    was_training = hnet.training
    hnet.eval()
    try:
        yield
    finally:
        hnet.train(was_training)
