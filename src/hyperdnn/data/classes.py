"""Examples grouped by class, with what each class is: the data of few- and zero-shot learning.

A :class:`ClassData` holds every example of a data set with its class, the name and group of
each class (a glyph's script, an Omniglot character's alphabet) and, where the data set has
them, a description of each class in words (``"script:latin case:capital letter:e mark:acute"``
for a glyph, the attributes an AwA2 animal has). Few-shot learning draws episodes from a subset
of its classes (:mod:`hyperdnn.data.episodes`); zero-shot learning generates a class's
classifier from its description. :func:`split_classes` holds classes out: at random, or (for
zero-shot learning) only classes whose every description word some training class also has.

Example::

    >>> import torch
    >>> from hyperdnn.data.classes import ClassData, split_classes
    >>> data = ClassData(
    ...     "toy", torch.rand(8, 1, 4, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]),
    ...     ("red circle", "red square", "blue circle", "blue square"), ("", "", "", ""),
    ...     descriptions=("red circle", "red square", "blue circle", "blue square"))
    >>> data.num_classes, data.shape, data.vocabulary
    (4, (1, 4, 4), ('blue', 'circle', 'red', 'square'))
    >>> data.attributes()[0].tolist()   # 'red circle' as a multi-hot row over the vocabulary
    [0.0, 1.0, 1.0, 0.0]
    >>> train, test = split_classes(data, 1, seed=0, seen_words=True)
    >>> sorted(train + test), len(test)
    ([0, 1, 2, 3], 1)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hyperdnn.data.split import Split, train_test_split

__all__ = ["ClassData", "split_classes", "description_words", "attribute_matrix"]


def description_words(description: str) -> tuple[str, ...]:
    """The words of a class description: its whitespace-separated parts, in order."""
    return tuple(description.split())


def attribute_matrix(descriptions: Sequence[str], vocabulary: Sequence[str]) -> torch.Tensor:
    """Descriptions as multi-hot rows: float ``(len(descriptions), len(vocabulary))``, ``1`` where
    description ``k`` has word ``v``.

    Raises:
        ValueError: an empty description, or a word outside ``vocabulary`` (naming both).
    """
    index = {w: i for i, w in enumerate(vocabulary)}
    rows = torch.zeros(len(descriptions), len(index))
    for k, d in enumerate(descriptions):
        words = description_words(d)
        if not words:
            raise ValueError(f"attribute_matrix: description {k} is empty ({d!r}); expected at least one word")
        unknown = [w for w in words if w not in index]
        if unknown:
            raise ValueError(
                f"attribute_matrix: description {k} ({d!r}) has words outside the vocabulary of {len(index)}: {unknown}"
            )
        rows[k, [index[w] for w in words]] = 1.0
    return rows


@dataclass(frozen=True)
class ClassData:
    """Every example of a data set, with its class, and what each class is.

    Args:
        name: the data set's name (``"glyphs"``).
        x: float ``(N, *shape)``: the examples (images ``(N, C, H, W)`` in ``[0, 1]``, or
            feature vectors ``(N, F)``).
        y: int64 ``(N,)``: the class of each example, in ``[0, K)``; every class has at least
            one example.
        classes: ``K`` class names (``"LATIN CAPITAL LETTER E WITH ACUTE"``), distinct.
        groups: ``K`` group names: the script, the alphabet, ``""`` for none.
        descriptions: ``K`` descriptions, each of whitespace-separated words, or ``None`` (the
            data set describes no class).
        test_classes: the classes the data set itself holds out (Omniglot's evaluation
            alphabets, AwA2's test classes), or ``None``.

    Raises:
        TypeError, ValueError: naming the field, what was expected and what was given.
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    classes: tuple[str, ...]
    groups: tuple[str, ...]
    descriptions: tuple[str, ...] | None = None
    test_classes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        where = f"ClassData {self.name!r}"
        if not isinstance(self.x, torch.Tensor) or not self.x.dtype.is_floating_point or self.x.dim() < 2:
            got = f"dtype {self.x.dtype}, shape {tuple(self.x.shape)}" if isinstance(self.x, torch.Tensor) else type(self.x).__name__  # fmt: skip
            raise TypeError(f"{where}: x must be a float tensor (N, *shape), got {got}")
        if not isinstance(self.y, torch.Tensor) or self.y.dtype != torch.int64 or self.y.shape != self.x.shape[:1]:
            got = f"dtype {self.y.dtype}, shape {tuple(self.y.shape)}" if isinstance(self.y, torch.Tensor) else type(self.y).__name__  # fmt: skip
            raise TypeError(f"{where}: y must be int64 of shape ({self.x.shape[0]},), got {got}")
        for field in ("classes", "groups") + (("descriptions",) if self.descriptions is not None else ()):
            value = getattr(self, field)
            if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
                raise TypeError(f"{where}: {field} must be a tuple of strings, got {type(value).__name__}")
        K = len(self.classes)
        if K < 1 or len(set(self.classes)) != K:
            raise ValueError(f"{where}: classes must be at least one distinct name, got {K} with {K - len(set(self.classes))} repeated")  # fmt: skip
        lengths = {"groups": len(self.groups)}
        if self.descriptions is not None:
            lengths["descriptions"] = len(self.descriptions)
        wrong = {k: n for k, n in lengths.items() if n != K}
        if wrong:
            raise ValueError(f"{where}: expected one entry per class ({K}), got {wrong}")
        if self.descriptions is not None:
            empty = [self.classes[k] for k, d in enumerate(self.descriptions) if not d.split()]
            if empty:
                raise ValueError(f"{where}: every description needs a word; empty for {empty}")
        counts = torch.bincount(self.y, minlength=K) if self.y.numel() and int(self.y.min()) >= 0 else None
        if counts is None or counts.numel() != K:
            lo, hi = (int(self.y.min()), int(self.y.max())) if self.y.numel() else (None, None)
            raise ValueError(f"{where}: labels must lie in [0, {K}), got min {lo}, max {hi}")
        if bool((counts == 0).any()):
            missing = [self.classes[k] for k in (counts == 0).nonzero()[:, 0].tolist()]
            raise ValueError(f"{where}: every class needs an example; none for {missing[:5]} ({len(missing)} classes)")
        if self.test_classes is not None:
            bad = [c for c in self.test_classes if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < K]
            if not isinstance(self.test_classes, tuple) or bad or len(set(self.test_classes)) != len(self.test_classes):
                raise ValueError(f"{where}: test_classes must be distinct class indices in [0, {K}), got {bad or self.test_classes}")  # fmt: skip

    @property
    def num_classes(self) -> int:
        """``K``, the number of classes."""
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one example."""
        return tuple(self.x.shape[1:])

    def counts(self) -> torch.Tensor:
        """Examples per class, int64 ``(K,)``."""
        return torch.bincount(self.y, minlength=self.num_classes)

    @property
    def vocabulary(self) -> tuple[str, ...]:
        """Every word of the descriptions, sorted (empty without descriptions)."""
        if self.descriptions is None:
            return ()
        return tuple(sorted({w for d in self.descriptions for w in description_words(d)}))

    def attributes(self, vocabulary: Sequence[str] | None = None) -> torch.Tensor:
        """The descriptions as multi-hot rows: float ``(K, V)``, ``1`` where class ``k``'s
        description has word ``v`` of ``vocabulary`` (default :attr:`vocabulary`).

        Raises:
            ValueError: the data set has no descriptions, or a description has a word outside
                ``vocabulary`` (naming it).
        """
        if self.descriptions is None:
            raise ValueError(f"ClassData {self.name!r}: it has no class descriptions, so no attributes")
        return attribute_matrix(self.descriptions, self.vocabulary if vocabulary is None else vocabulary)

    def subset(self, classes: Sequence[int]) -> ClassData:
        """The examples of ``classes`` only, relabelled ``0 .. len(classes) - 1`` in that order."""
        ids = _check_classes(self, classes, "subset")
        lookup = torch.full((self.num_classes,), -1, dtype=torch.int64)
        lookup[torch.tensor(ids)] = torch.arange(len(ids))
        keep = lookup[self.y] >= 0
        pick = [self.classes[c] for c in ids], [self.groups[c] for c in ids]
        descriptions = None if self.descriptions is None else tuple(self.descriptions[c] for c in ids)
        return ClassData(self.name, self.x[keep], lookup[self.y[keep]], tuple(pick[0]), tuple(pick[1]), descriptions)

    def to_split(self, test_fraction: float = 0.2, seed: int = 0) -> Split:
        """Every class in both halves: examples shuffled with ``seed`` and split per example
        (flattened rows), the way :class:`~hyperdnn.data.Dataset` loaders return data."""
        shape = self.shape if len(self.shape) == 3 else (self.shape[0], 1, 1) if len(self.shape) == 1 else None
        if shape is None:
            raise ValueError(f"ClassData {self.name!r}: examples of shape {self.shape} are neither images nor vectors")
        flat = self.x.reshape(len(self.x), -1).numpy()
        return train_test_split(flat, self.y.numpy(), test_fraction, seed, shape, self.num_classes)  # type: ignore[arg-type]


def _check_classes(data: ClassData, classes: Sequence[int], where: str) -> list[int]:
    ids = list(classes)
    bad = [
        c for c in ids if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < data.num_classes
    ]
    if not ids or bad or len(set(ids)) != len(ids):
        raise ValueError(
            f"ClassData.{where}: expected distinct class indices in [0, {data.num_classes}), got "
            f"{'none' if not ids else bad or 'repeated ones'}"
        )
    return [int(c) for c in ids]


def split_classes(
    data: ClassData, test: float | int, seed: int = 0, *, seen_words: bool = False
) -> tuple[list[int], list[int]]:
    """Hold classes out: ``(train classes, test classes)``, disjoint, each sorted.

    Args:
        data: the data set.
        test: a fraction in ``(0, 1)`` of the classes, or a number ``>= 1`` of them.
        seed: draws which classes.
        seen_words: hold out only classes each of whose description words some training class
            has too (zero-shot learning: an unseen class is described by seen attributes).
            Classes are tried in a random order and held out while that stays true, so fewer
            than asked may be held out (never none: then a ``ValueError``).

    Raises:
        ValueError: ``test`` out of range, leaves no training class, or (``seen_words``) the
            data set has no descriptions or no class can be held out.
    """
    K = data.num_classes
    if isinstance(test, bool) or not isinstance(test, (int, float)) or not math.isfinite(test):
        raise TypeError(f"split_classes: test must be a fraction in (0, 1) or a count >= 1, got {test!r}")
    n = int(round(K * test)) if isinstance(test, float) and 0 < test < 1 else test
    if not isinstance(n, int) or not 1 <= n < K:
        raise ValueError(f"split_classes: test must hold out between 1 and {K - 1} of the {K} classes, got {test!r}")
    order = np.random.default_rng(seed).permutation(K).tolist()
    if not seen_words:
        held = sorted(order[:n])
    else:
        if data.descriptions is None:
            raise ValueError(f"split_classes: seen_words needs class descriptions; {data.name!r} has none")
        words = [set(description_words(d)) for d in data.descriptions]
        left: dict[str, int] = {}
        for ws in words:
            for w in ws:
                left[w] = left.get(w, 0) + 1
        held = []
        for c in order:
            if len(held) == n:
                break
            if all(left[w] > 1 for w in words[c]):
                held.append(c)
                for w in words[c]:
                    left[w] -= 1
        if not held:
            raise ValueError(f"split_classes: no class of {data.name!r} has only words that other classes share")
        held.sort()
    taken = set(held)
    return [c for c in range(K) if c not in taken], held
