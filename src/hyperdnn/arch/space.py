"""A search space of small convolutional networks, sampled in code.

An :class:`Architecture` is a stack of :class:`Cell` s on images of ``in_channels`` channels:
each cell is a convolution of its own width and kernel size, a normalisation (batch norm, group
norm or none), a ReLU and
an optional skip connection (the cell's input added to its output, through a 1x1 convolution
when the widths differ); then average pooling to a 2x2 grid and a linear classifier.
:meth:`Architecture.build` makes the ``nn.Module`` (:class:`ArchNet`), whose batch norms use
the batch's statistics (``track_running_stats=False``), so a network runs the same whether its
weights were trained, predicted or drawn; a group norm has ``gcd(4, width)`` groups.

A :class:`SearchSpace` holds the choices (depths, widths, kernel sizes, normalisations, the
chance of a skip connection), draws architectures from a ``torch.Generator``
(:meth:`SearchSpace.sample`) and writes one as a flat vector (:meth:`SearchSpace.encode`:
per cell slot its presence, width, kernel, normalisation and skip, zeros past the depth), the
input of a hypernetwork that reads no graph.

Example::

    >>> import torch
    >>> from hyperdnn.arch import SearchSpace
    >>> space = SearchSpace(depths=(2, 3), widths=(8, 16), kernels=(1, 3))
    >>> arch = space.sample(torch.Generator().manual_seed(0))
    >>> net = arch.build()
    >>> net(torch.zeros(4, 1, 8, 8)).shape, space.encode(arch).shape
    (torch.Size([4, 10]), torch.Size([18]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Cell", "Architecture", "ArchNet", "CellModule", "SearchSpace", "NORMS"]

#: the normalisations a cell can have: batch norm, group norm, none
NORMS = ("bn", "gn", "none")


def _positive(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True)
class Cell:
    """One cell: ``Conv2d(width, kernel, padding=kernel // 2) -> norm -> ReLU (+ skip)``.

    Args:
        width: output channels.
        kernel: kernel size (odd).
        norm: ``"bn"`` (batch norm, batch statistics), ``"gn"`` (group norm) or ``"none"``.
        skip: add the cell's input to its output.

    Raises:
        ValueError: a width or kernel that is not an int >= 1, an even kernel, an unknown norm.
    """

    width: int
    kernel: int = 3
    norm: str = "bn"
    skip: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not _positive(self.width):
            problems.append(f"width must be an int >= 1, got {self.width!r}")
        if not _positive(self.kernel) or self.kernel % 2 == 0:
            problems.append(f"kernel must be an odd int >= 1, got {self.kernel!r}")
        if self.norm not in NORMS:
            problems.append(f"norm must be one of {list(NORMS)}, got {self.norm!r}")
        if not isinstance(self.skip, bool):
            problems.append(f"skip must be a bool, got {self.skip!r}")
        if problems:
            raise ValueError(f"Cell: {'; '.join(problems)}")


class CellModule(nn.Module):
    """A :class:`Cell` as a module: ``relu(norm(conv(x)))``, plus ``x`` (or ``proj(x)``) with
    a skip connection."""

    def __init__(self, cell: Cell, in_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, cell.width, cell.kernel, padding=cell.kernel // 2)
        self.norm: nn.Module
        if cell.norm == "bn":
            self.norm = nn.BatchNorm2d(cell.width, track_running_stats=False)
        elif cell.norm == "gn":
            self.norm = nn.GroupNorm(math.gcd(4, cell.width), cell.width)
        else:
            self.norm = nn.Identity()
        self.act = nn.ReLU()
        self.skip = cell.skip
        self.proj = nn.Conv2d(in_channels, cell.width, 1) if cell.skip and in_channels != cell.width else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm(self.conv(x)))
        if self.skip:
            y = y + (x if self.proj is None else self.proj(x))
        return y


class ArchNet(nn.Module):
    """An :class:`Architecture` as a module: its cells, average pooling to a 2x2 grid and a
    linear classifier on the ``4 * width`` pooled features; maps ``(N, in_channels, H, W)``
    (``H, W >= 2``) to ``(N, classes)``."""

    def __init__(self, arch: Architecture):
        super().__init__()
        cells, cin = [], arch.in_channels
        for cell in arch.cells:
            cells.append(CellModule(cell, cin))
            cin = cell.width
        self.cells = nn.Sequential(*cells)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(4 * cin, arch.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.cells(x))))


@dataclass(frozen=True)
class Architecture:
    """A network of the search space: its cells, input channels and classes.

    Raises:
        ValueError: no cells, a value that is not a :class:`Cell`, channels or classes < 1.
    """

    cells: tuple[Cell, ...]
    in_channels: int = 1
    classes: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "cells", tuple(self.cells))
        if not self.cells or not all(isinstance(c, Cell) for c in self.cells):
            raise ValueError(f"Architecture: cells must be a non-empty tuple of Cell, got {self.cells!r}")
        if not _positive(self.in_channels) or not _positive(self.classes):
            raise ValueError(
                f"Architecture: in_channels and classes must be ints >= 1, got {self.in_channels!r}, {self.classes!r}"
            )

    @property
    def depth(self) -> int:
        """The number of cells."""
        return len(self.cells)

    def build(self) -> ArchNet:
        """The module (its layers draw their initial weights from the global generator)."""
        return ArchNet(self)

    def describe(self) -> str:
        """One line: ``"3 cells: 16c3bn+ 8c1 32c5gn"`` (width, kernel, norm, ``+`` for a skip)."""
        parts = [f"{c.width}c{c.kernel}{'' if c.norm == 'none' else c.norm}{'+' if c.skip else ''}" for c in self.cells]
        return f"{self.depth} cells: {' '.join(parts)}"


@dataclass(frozen=True)
class SearchSpace:
    """The choices architectures are drawn from.

    Args:
        depths: numbers of cells.
        widths: cell widths.
        kernels: kernel sizes (odd).
        norms: normalisations (of :data:`NORMS`).
        skip_probability: the chance that a cell has a skip connection.
        in_channels: channels of the input images.
        classes: outputs of the classifier.

    Raises:
        ValueError: an empty or invalid choice (every problem named).
    """

    depths: tuple[int, ...] = (2, 3, 4, 5)
    widths: tuple[int, ...] = (8, 16, 24, 32)
    kernels: tuple[int, ...] = (1, 3, 5)
    norms: tuple[str, ...] = ("bn", "gn")
    skip_probability: float = 0.5
    in_channels: int = 1
    classes: int = 10

    def __post_init__(self) -> None:
        for name in ("depths", "widths", "kernels", "norms"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        problems = []
        for name in ("depths", "widths", "kernels"):
            values = getattr(self, name)
            if not values or not all(_positive(v) for v in values):
                problems.append(f"{name} must be a non-empty tuple of ints >= 1, got {values}")
        if any(_positive(k) and k % 2 == 0 for k in self.kernels):
            problems.append(f"kernels must be odd, got {self.kernels}")
        if not self.norms or any(n not in NORMS for n in self.norms):
            problems.append(f"norms must be a non-empty tuple of {list(NORMS)}, got {self.norms}")
        if not 0.0 <= self.skip_probability <= 1.0:
            problems.append(f"skip_probability must be in [0, 1], got {self.skip_probability!r}")
        if not _positive(self.in_channels) or not _positive(self.classes):
            problems.append(f"in_channels and classes must be ints >= 1, got {self.in_channels!r}, {self.classes!r}")
        if problems:
            raise ValueError(f"SearchSpace: {'; '.join(problems)}")

    def sample(self, generator: torch.Generator) -> Architecture:
        """Draw one architecture: a depth, then per cell a width, kernel, norm and skip."""

        def pick(options: Sequence) -> object:
            return options[int(torch.randint(len(options), (), generator=generator))]

        depth = pick(self.depths)
        cells = tuple(
            Cell(
                pick(self.widths),  # type: ignore[arg-type]
                pick(self.kernels),  # type: ignore[arg-type]
                pick(self.norms),  # type: ignore[arg-type]
                bool(torch.rand((), generator=generator) < self.skip_probability),
            )
            for _ in range(depth)  # type: ignore[call-overload]
        )
        return Architecture(cells, self.in_channels, self.classes)

    def encode(self, arch: Architecture, max_depth: int | None = None) -> torch.Tensor:
        """The flat encoding ``(6 * max_depth,)``: per cell slot, present (1), width / the
        widest choice, kernel / the largest choice, batch norm (1/0), group norm (1/0) and
        skip (1/0); zeros for slots past the depth.

        Args:
            arch: the architecture (its widths and kernels may lie outside the choices:
                deeper or wider held-out networks encode the same way).
            max_depth: the number of slots (default: the deepest choice).

        Raises:
            ValueError: ``arch`` has more cells than ``max_depth`` slots.
        """
        slots = max(self.depths) if max_depth is None else max_depth
        if arch.depth > slots:
            raise ValueError(f"SearchSpace.encode: the architecture has {arch.depth} cells, more than {slots} slots")
        code = torch.zeros(slots, 6)
        for i, c in enumerate(arch.cells):
            width, kernel = c.width / max(self.widths), c.kernel / max(self.kernels)
            code[i] = torch.tensor([1.0, width, kernel, float(c.norm == "bn"), float(c.norm == "gn"), float(c.skip)])
        return code.flatten()
