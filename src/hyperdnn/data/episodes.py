"""Few-shot episodes: N-way K-shot tasks drawn from a fixed set of classes.

An :class:`EpisodeSampler` is bound to the classes it may use (the training classes, or the test
classes): every episode it draws holds ``ways`` of them, ``shots`` support and ``queries``
query examples of each, drawn without replacement, and its classes are relabelled
``0 .. ways - 1`` in a random order. A sampler over the training classes can never show a test
class, because it never sees one: it keeps only the examples of its own classes.

Example::

    >>> import torch
    >>> from hyperdnn.data.classes import ClassData
    >>> from hyperdnn.data.episodes import EpisodeSampler
    >>> data = ClassData("toy", torch.rand(60, 1, 4, 4), torch.arange(60) % 6, tuple("abcdef"), ("",) * 6)
    >>> sampler = EpisodeSampler(data, classes=[0, 1, 2, 3], ways=3, shots=2, queries=4)
    >>> ep = sampler.sample(torch.Generator().manual_seed(0))
    >>> ep.support.shape, ep.query.shape, ep.query_labels.shape
    (torch.Size([3, 2, 1, 4, 4]), torch.Size([12, 1, 4, 4]), torch.Size([12]))
    >>> set(ep.classes.tolist()) <= {0, 1, 2, 3}
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hyperdnn._checks import check_int
from hyperdnn.data.classes import ClassData, _check_classes

__all__ = ["Episode", "EpisodeSampler", "check_support"]


@dataclass(frozen=True)
class Episode:
    """One N-way K-shot task.

    Attributes:
        support: ``(ways, shots, *shape)``: row ``n`` holds the support examples of class ``n``.
        query: ``(ways * queries, *shape)``: the query examples, class by class.
        query_labels: int64 ``(ways * queries,)`` in ``[0, ways)``.
        classes: int64 ``(ways,)``: the data set's class of each episode class.
    """

    support: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor
    classes: torch.Tensor

    @property
    def ways(self) -> int:
        """The number of classes, ``N``."""
        return self.support.shape[0]

    @property
    def shots(self) -> int:
        """Support examples per class, ``K``."""
        return self.support.shape[1]

    def to(self, device: torch.device | str) -> Episode:
        """The episode with its tensors on ``device``."""
        return Episode(*(t.to(device) for t in (self.support, self.query, self.query_labels, self.classes)))

    def support_labels(self) -> torch.Tensor:
        """int64 ``(ways * shots,)``: the label of each row of ``support.flatten(0, 1)``."""
        return torch.arange(self.ways, device=self.support.device).repeat_interleave(self.shots)


def check_support(where: str, support: torch.Tensor, ways: int, shape: Sequence[int] | None = None) -> None:
    """Check a support set ``(ways, shots, *shape)`` of ``ways`` classes (raises a ``ValueError``
    naming ``where``, the expected and the given shape).

    Args:
        where: the API, for the message.
        support: the support set.
        ways: the number of classes it must hold.
        shape: the shape of one example (``None``: any).
    """
    if not isinstance(support, torch.Tensor):
        raise TypeError(f"{where}: support must be a tensor (ways, shots, ...), got {type(support).__name__}")
    expected = f"({ways}, shots, {', '.join(map(str, shape))})" if shape is not None else f"({ways}, shots, ...)"
    ok = support.dim() >= 3 and support.shape[0] == ways and support.shape[1] >= 1
    if shape is not None:
        ok = ok and tuple(support.shape[2:]) == tuple(shape)
    if not ok:
        raise ValueError(
            f"{where}: expected a support set of {ways} classes, {expected}, got {tuple(support.shape)}"
            + (f" ({support.shape[0]} classes)" if support.dim() >= 3 and support.shape[0] != ways else "")
        )


class EpisodeSampler:
    """Draws N-way K-shot episodes from ``classes`` of ``data`` only.

    Args:
        data: the data set.
        classes: the classes episodes may use (distinct indices of ``data``).
        ways: classes per episode, ``N`` (at most ``len(classes)``).
        shots: support examples per class, ``K``.
        queries: query examples per class (every class used needs ``shots + queries``
            examples).

    Raises:
        ValueError: naming the argument: ``ways`` above the number of classes, a class with
            fewer than ``shots + queries`` examples, a class index outside ``data``.
    """

    def __init__(self, data: ClassData, classes: Sequence[int], ways: int, shots: int, queries: int):
        if not isinstance(data, ClassData):
            raise TypeError(f"EpisodeSampler: data must be a ClassData, got {type(data).__name__}")
        ids = _check_classes(data, classes, "EpisodeSampler")
        check_int("EpisodeSampler", "ways", ways, 2)
        check_int("EpisodeSampler", "shots", shots)
        check_int("EpisodeSampler", "queries", queries)
        if ways > len(ids):
            raise ValueError(f"EpisodeSampler: ways must be at most the {len(ids)} classes it samples from, got {ways}")
        counts = data.counts()[torch.tensor(ids)]
        short = [data.classes[c] for c, n in zip(ids, counts.tolist()) if n < shots + queries]
        if short:
            raise ValueError(
                f"EpisodeSampler: every class needs shots + queries = {shots + queries} examples; "
                f"{len(short)} have fewer (fewest {int(counts.min())}), e.g. {short[:3]}"
            )
        self.classes = torch.tensor(ids)
        self.ways, self.shots, self.queries = ways, shots, queries
        # the examples of this sampler's classes only: nothing else can reach an episode
        self._examples = [data.x[data.y == c] for c in ids]

    def sample(self, generator: torch.Generator) -> Episode:
        """Draw one episode with ``generator`` (the same state gives the same episode)."""
        pick = torch.randperm(len(self._examples), generator=generator)[: self.ways]
        support, query = [], []
        for i in pick.tolist():
            pool = self._examples[i]
            order = torch.randperm(len(pool), generator=generator)[: self.shots + self.queries]
            support.append(pool[order[: self.shots]])
            query.append(pool[order[self.shots :]])
        labels = torch.arange(self.ways).repeat_interleave(self.queries)
        return Episode(torch.stack(support), torch.cat(query), labels, self.classes[pick])
