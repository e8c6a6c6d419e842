"""A convolutional network whose every layer can be narrowed: the target of channel pruning.

:class:`PrunableCNN` describes the full network (a stack of ``Conv -> BatchNorm -> ReLU``
layers, global average pooling and a linear classifier) and builds it, or any narrower copy,
from a *width vector*: the number of output channels of each convolution. Every narrower
network has the full network's parameter names, and each of its tensors is the leading block of
the full one (the first ``k`` channels), so :func:`~hyperdnn.arch.crop_weights` cuts its
weights out of the full network's. :meth:`PrunableCNN.check_widths` is the one validation of a
width vector (its length, ints in ``[1, full width]``), naming every offending layer.

Example::

    >>> import torch
    >>> from hyperdnn.arch import PrunableCNN
    >>> net = PrunableCNN(channels=(8, 16), strides=(1, 2), in_channels=1, image_size=8, classes=10)
    >>> small = net.build((4, 6))
    >>> small(torch.zeros(2, 1, 8, 8)).shape, small[0].weight.shape
    (torch.Size([2, 10]), torch.Size([4, 1, 3, 3]))
    >>> net.uniform_widths(0.5), net.level_widths((1, 4), num_levels=4)
    ((4, 8), (2, 16))
    >>> net.check_widths((8, 0))
    Traceback (most recent call last):
    ...
    ValueError: PrunableCNN: widths must be 2 ints, one per convolution, each in [1, its full width]; got layer 1 (conv 1): 0 (full 16)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from hyperdnn.arch.flops import count_flops

__all__ = ["PrunableCNN"]


@dataclass(frozen=True)
class PrunableCNN:
    """The full network of channel pruning, and its narrower copies.

    Layer ``i`` is ``Conv2d(kernel, stride=strides[i], padding=kernel // 2, bias=False) ->
    BatchNorm2d -> ReLU``; then ``AdaptiveAvgPool2d(1) -> Flatten -> Linear(width, classes)``.
    In the built ``nn.Sequential`` convolution ``i`` is module ``3 * i`` and its batch norm
    ``3 * i + 1``.

    Args:
        channels: the full width (output channels) of each convolution.
        strides: the stride of each convolution (same length as ``channels``).
        in_channels: channels of the input images.
        image_size: height and width of the (square) input images.
        classes: outputs of the classifier.
        kernel: the convolutions' kernel size (odd).

    Raises:
        ValueError: empty or non-positive channels, strides of another length, a size or
            kernel that is not a positive int (or an even kernel); every problem named.
    """

    channels: tuple[int, ...]
    strides: tuple[int, ...]
    in_channels: int = 1
    image_size: int = 28
    classes: int = 10
    kernel: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "strides", tuple(self.strides))
        problems = []
        if not self.channels or not all(_positive(c) for c in self.channels):
            problems.append(f"channels must be a non-empty tuple of ints >= 1, got {self.channels}")
        if len(self.strides) != len(self.channels) or not all(_positive(s) for s in self.strides):
            problems.append(f"strides must be {len(self.channels)} ints >= 1 (one per convolution), got {self.strides}")
        for name in ("in_channels", "image_size", "classes", "kernel"):
            if not _positive(getattr(self, name)):
                problems.append(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if _positive(self.kernel) and self.kernel % 2 == 0:
            problems.append(f"kernel must be odd, got {self.kernel}")
        if problems:
            raise ValueError(f"PrunableCNN: {'; '.join(problems)}")

    @property
    def layers(self) -> int:
        """The number of convolutions (the length of a width vector)."""
        return len(self.channels)

    def check_widths(self, widths: Sequence[int]) -> tuple[int, ...]:
        """``widths`` as a tuple, after checking its length and every entry.

        Raises:
            ValueError: not one int per convolution, or an entry outside ``[1, full width]``
                (every offending layer named with its value and full width).
        """
        head = f"PrunableCNN: widths must be {self.layers} ints, one per convolution, each in [1, its full width]"
        if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
            raise ValueError(f"{head}; got {type(widths).__name__} {widths!r}")
        widths = tuple(widths)
        if len(widths) != self.layers:
            raise ValueError(f"{head}; got {len(widths)} widths {list(widths)}")
        bad = [
            f"layer {i} (conv {i}): {w!r} (full {c})"
            for i, (w, c) in enumerate(zip(widths, self.channels))
            if not (_positive(w) and w <= c)
        ]
        if bad:
            raise ValueError(f"{head}; got {', '.join(bad)}")
        return tuple(int(w) for w in widths)

    def build(self, widths: Sequence[int] | None = None) -> nn.Sequential:
        """The network with ``widths`` output channels per convolution (``None``: full width).

        Returns:
            An ``nn.Sequential`` mapping ``(N, in_channels, image_size, image_size)`` to
            ``(N, classes)``; its layers draw their initial weights from the global generator.
        """
        widths = self.channels if widths is None else self.check_widths(widths)
        layers: list[nn.Module] = []
        cin = self.in_channels
        for w, s in zip(widths, self.strides):
            layers += [nn.Conv2d(cin, w, self.kernel, s, self.kernel // 2, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            cin = w
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, self.classes)]
        return nn.Sequential(*layers)

    def level_widths(self, levels: Sequence[int], num_levels: int = 8) -> tuple[int, ...]:
        """The widths of a point of the search grid: layer ``i`` at ``levels[i]`` of
        ``num_levels`` equal steps of its full width, ``ceil(c * levels[i] / num_levels)``.

        Raises:
            ValueError: ``num_levels < 1``, or not one level per convolution in
                ``[1, num_levels]`` (every offending layer named).
        """
        if not _positive(num_levels):
            raise ValueError(f"PrunableCNN.level_widths: num_levels must be an int >= 1, got {num_levels!r}")
        head = (
            f"PrunableCNN.level_widths: expected {self.layers} levels, one per convolution, each in [1, {num_levels}]"
        )
        if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence) or len(levels) != self.layers:
            raise ValueError(f"{head}; got {levels!r}")
        bad = [f"layer {i}: {v!r}" for i, v in enumerate(levels) if not (_positive(v) and v <= num_levels)]
        if bad:
            raise ValueError(f"{head}; got {', '.join(bad)}")
        return tuple(math.ceil(c * v / num_levels) for c, v in zip(self.channels, levels))

    def flops(self, widths: Sequence[int] | None = None) -> int:
        """Multiply-accumulates per image of the network with ``widths`` (``None``: full).

        Counted from each convolution's output size, which :func:`~hyperdnn.arch.count_flops`
        measures once on the full network on the ``meta`` device (no compute, no random
        numbers): convolution ``i`` costs ``pixels_i * widths[i] * widths[i-1] * kernel**2``
        and the classifier ``widths[-1] * classes``, the same total :func:`count_flops` gives
        for the built network, in microseconds (a search counts thousands of candidates).
        """
        widths = self.channels if widths is None else self.check_widths(widths)
        cin = (self.in_channels, *widths[:-1])
        convs = sum(p * w * c * self.kernel**2 for p, w, c in zip(self._pixels, widths, cin))
        return convs + widths[-1] * self.classes

    @functools.cached_property
    def _pixels(self) -> tuple[int, ...]:
        """Output pixels of each convolution (measured once on the full network)."""
        with torch.device("meta"):
            net = self.build()
            x = torch.empty(1, self.in_channels, self.image_size, self.image_size)
        layers = count_flops(net, x).layers
        cin = (self.in_channels, *self.channels[:-1])
        return tuple(layers[str(3 * i)] // (w * c * self.kernel**2) for i, (w, c) in enumerate(zip(self.channels, cin)))

    def uniform_for_budget(self, max_flops: float) -> tuple[int, ...]:
        """The widest uniformly narrowed network (:meth:`uniform_widths`) within ``max_flops``
        multiply-accumulates per image.

        Raises:
            ValueError: no network meets the budget (even one channel per layer needs more),
                naming the budget and that smallest count.
        """
        smallest = self.flops((1,) * self.layers)
        if max_flops < smallest:
            raise ValueError(
                f"PrunableCNN: no network meets a budget of {max_flops:,.0f} FLOPs; the smallest "
                f"(one channel per layer) needs {smallest:,}"
            )
        best, lo, hi = (1,) * self.layers, 0.0, 1.0
        for _ in range(30):  # bisect the multiplier; widths are monotone in it
            mid = (lo + hi) / 2
            widths = self.uniform_widths(mid)
            if self.flops(widths) <= max_flops:
                best, lo = max(best, widths), mid
            else:
                hi = mid
        return self.channels if self.flops() <= max_flops else best

    def uniform_widths(self, multiplier: float) -> tuple[int, ...]:
        """Every layer at ``multiplier`` of its full width: ``max(1, round(multiplier * c))``.

        Raises:
            ValueError: ``multiplier`` outside ``(0, 1]``.
        """
        if not 0.0 < multiplier <= 1.0:
            raise ValueError(f"PrunableCNN.uniform_widths: multiplier must be in (0, 1], got {multiplier!r}")
        return tuple(max(1, min(c, round(multiplier * c))) for c in self.channels)


def _positive(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
