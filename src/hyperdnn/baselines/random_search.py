"""Random search: the baseline of a search method, with the same evaluations.

:class:`RandomSearch` draws feasible candidates uniformly at random (every gene uniform in
``[1, levels]``, infeasible draws rejected) and keeps the fittest, through the same
:class:`~hyperdnn.methods.search.CandidateSearch` contract as
:class:`~hyperdnn.methods.search.EvolutionarySearch`: give both the same ``population`` and
number of steps and they evaluate the same number of candidates.

Example::

    >>> import torch
    >>> from hyperdnn.baselines import RandomSearch
    >>> search = RandomSearch(3, 8, lambda c: float(sum(c)), lambda c: sum(c) <= 10,
    ...                       torch.Generator().manual_seed(0), population=8)
    >>> _ = search.step()
    >>> len(search.history), all(sum(c) <= 10 for c, _ in search.history)
    (8, True)
"""

from __future__ import annotations

from hyperdnn.methods.search import Candidate, CandidateSearch

__all__ = ["RandomSearch"]


class RandomSearch(CandidateSearch):
    """Uniformly random feasible candidates (arguments as for
    :class:`~hyperdnn.methods.search.CandidateSearch`)."""

    def propose(self) -> Candidate:
        """A candidate with every gene uniform in ``[1, levels]``."""
        return self.random_candidate()
