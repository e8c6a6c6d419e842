"""Searching a grid of candidates under a constraint: evolution (MetaPruning's search).

A *candidate* is a tuple of ints, one gene per position, each in ``[1, levels]`` (a layer's
width level, a choice of a search space). A search evaluates candidates with a ``fitness``
function (higher is better: accuracy on held-out data read from generated weights) and only
ever proposes candidates that ``feasible`` accepts (a FLOPs budget); each candidate is
evaluated once, however often it is proposed.

* :class:`CandidateSearch` - the contract: :meth:`~CandidateSearch.step` one round (a
  generation), :attr:`~CandidateSearch.best`, and a JSON/tensor state to resume from.
* :class:`EvolutionarySearch` - the evolutionary search of MetaPruning (Liu et al., ICCV
  2019): a random feasible population, then per generation the ``parents`` fittest
  candidates seen so far breed children by mutation (each gene redrawn with probability
  ``mutation``) and crossover (each gene from one of two parents), feasible ones only.

:class:`~hyperdnn.baselines.RandomSearch` draws the same number of feasible candidates at
random (the baseline).

Example::

    >>> import torch
    >>> from hyperdnn.methods.search import EvolutionarySearch
    >>> fitness = lambda c: float(sum(c))                   # wider is better ...
    >>> feasible = lambda c: sum(c) <= 10                    # ... within a budget
    >>> search = EvolutionarySearch(3, 8, fitness, feasible, torch.Generator().manual_seed(0), population=8)
    >>> for _ in range(5):
    ...     _ = search.step()
    >>> search.best[1]
    10.0
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["Candidate", "CandidateSearch", "EvolutionarySearch"]

#: one point of the grid: a gene per position, each in [1, levels]
Candidate = tuple[int, ...]


class CandidateSearch(ABC):
    """(Abstract) a search over candidates of ``genes`` ints in ``[1, levels]``.

    Args:
        genes: positions of a candidate.
        levels: choices per position (genes are ``1 .. levels``).
        fitness: ``fitness(candidate) -> float``, higher is better, finite (:meth:`step`
            raises ``ValueError`` for NaN or inf, which no ranking can place); called once
            per candidate.
        feasible: ``feasible(candidate) -> bool``; only feasible candidates are evaluated.
        generator: the search's random numbers (its state is part of :meth:`state`).
        population: candidates evaluated per :meth:`step` (at most; fewer when the feasible
            grid runs out of unseen candidates).
        max_tries: random proposals per wanted candidate before the search gives up on it.

    Raises:
        ValueError: a count below 1.
    """

    def __init__(
        self,
        genes: int,
        levels: int,
        fitness: Callable[[Candidate], float],
        feasible: Callable[[Candidate], bool],
        generator: torch.Generator,
        *,
        population: int = 16,
        max_tries: int = 200,
    ):
        for name, value in (("genes", genes), ("levels", levels), ("population", population), ("max_tries", max_tries)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be an int >= 1, got {value!r}")
        self.genes, self.levels, self.population, self.max_tries = genes, levels, population, max_tries
        self.fitness, self.feasible, self.generator = fitness, feasible, generator
        #: every candidate evaluated, in order, with its fitness
        self.history: list[tuple[Candidate, float]] = []
        self._seen: dict[Candidate, float] = {}
        self.rounds = 0

    # ------------------------------------------------------------------ the contract
    @abstractmethod
    def propose(self) -> Candidate:
        """One candidate (feasibility and novelty are checked by :meth:`step`)."""

    def step(self, tick: Callable[[], None] | None = None) -> float:
        """One round: propose up to ``population`` unseen feasible candidates and evaluate
        them (``tick()`` after each); returns the best fitness so far."""
        wanted = self.population
        new: list[Candidate] = []
        for _ in range(wanted * self.max_tries):
            if len(new) == wanted:
                break
            c = self.propose()
            if c not in self._seen and c not in new and self.feasible(c):
                new.append(c)
        for c in new:
            f = float(self.fitness(c))
            if not math.isfinite(f):
                # NaN compares false both ways: max() and the parents' sort would rank it anywhere
                raise ValueError(f"{type(self).__name__}: fitness of candidate {c} is {f}; expected a finite number")
            self._seen[c] = f
            self.history.append((c, f))
            if tick is not None:
                tick()
        self.rounds += 1
        return self.best[1] if self.history else float("-inf")

    @property
    def best(self) -> tuple[Candidate, float]:
        """The fittest candidate evaluated so far (the first of equals) and its fitness.

        Raises:
            ValueError: nothing evaluated yet (no feasible candidate found).
        """
        if not self.history:
            raise ValueError(f"{type(self).__name__}: no feasible candidate has been evaluated")
        return max(self.history, key=lambda cf: cf[1])

    def random_candidate(self) -> Candidate:
        """A candidate with every gene uniform in ``[1, levels]``."""
        return tuple(int(v) + 1 for v in torch.randint(self.levels, (self.genes,), generator=self.generator))

    # ------------------------------------------------------------------ state
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The generator's state (a tensor) and the JSON rest: rounds and history."""
        return {"generator": self.generator.get_state()}, {
            "rounds": self.rounds,
            "history": [[list(c), f] for c, f in self.history],
        }

    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        """Restore :meth:`state` (``ValueError`` for a candidate that does not fit)."""
        history = [(tuple(int(v) for v in c), float(f)) for c, f in meta["history"]]
        bad = [c for c, _ in history if len(c) != self.genes or not all(1 <= v <= self.levels for v in c)]
        if bad:
            raise ValueError(
                f"{type(self).__name__}: saved candidates {bad} are not {self.genes} genes in [1, {self.levels}]"
            )
        self.generator.set_state(tensors["generator"])
        self.history, self.rounds = history, int(meta["rounds"])
        self._seen = dict(history)


class EvolutionarySearch(CandidateSearch):
    """MetaPruning's evolutionary search (see the module docstring).

    Args:
        genes, levels, fitness, feasible, generator, population, max_tries: as for
            :class:`CandidateSearch`.
        parents: the fittest candidates seen so far that breed each generation.
        mutation: the probability that a child of mutation redraws a gene.
        crossover: the share of children made by crossover (the rest by mutation).

    Raises:
        ValueError: a count below 1, a probability outside ``[0, 1]``.
    """

    def __init__(
        self,
        genes: int,
        levels: int,
        fitness: Callable[[Candidate], float],
        feasible: Callable[[Candidate], bool],
        generator: torch.Generator,
        *,
        population: int = 16,
        parents: int = 6,
        mutation: float = 0.2,
        crossover: float = 0.5,
        max_tries: int = 200,
    ):
        super().__init__(genes, levels, fitness, feasible, generator, population=population, max_tries=max_tries)
        if isinstance(parents, bool) or not isinstance(parents, int) or parents < 1:
            raise ValueError(f"EvolutionarySearch: parents must be an int >= 1, got {parents!r}")
        for name, p in (("mutation", mutation), ("crossover", crossover)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"EvolutionarySearch: {name} must be a probability in [0, 1], got {p!r}")
        self.parents, self.mutation, self.crossover = parents, mutation, crossover

    def _parents(self) -> list[Candidate]:
        ranked = sorted(self.history, key=lambda cf: -cf[1])  # stable: the first of equals first
        return [c for c, _ in ranked[: self.parents]]

    def propose(self) -> Candidate:
        """A random candidate in the first generation; then a child of the fittest."""
        if self.rounds == 0 or not self.history:
            return self.random_candidate()
        parents = self._parents()
        g = self.generator
        if float(torch.rand((), generator=g)) < self.crossover and len(parents) > 1:
            i, j = torch.randperm(len(parents), generator=g)[:2].tolist()
            pick = torch.rand(self.genes, generator=g) < 0.5
            return tuple(a if k else b for a, b, k in zip(parents[i], parents[j], pick.tolist()))
        parent = parents[int(torch.randint(len(parents), (), generator=g))]
        redraw = torch.rand(self.genes, generator=g) < self.mutation
        fresh = self.random_candidate()
        return tuple(f if r else p for p, f, r in zip(parent, fresh, redraw.tolist()))
