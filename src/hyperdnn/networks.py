"""Plain networks the recipes, baselines and benchmarks build: one MLP builder, one CNN builder.

:func:`mlp` is the multilayer perceptron every target, baseline and demo network of hyperdnn
is made of: ``Linear -> ReLU (-> Dropout)`` per hidden width, then a ``Linear`` to the output.
Its layers draw their initial weights from the global generator in order, so two MLPs that
differ only in the output width start with the same hidden layers under the same seed (the
continual recipe's baselines rely on this). :func:`mlp_parameters` counts an MLP's parameters
without building it. :func:`conv_net` is the four-block CNN of few-shot learning (Vinyals et
al., 2016; Snell et al., 2017), and :func:`embedding_net` the backbone every few- and zero-shot
method here embeds its examples with (that CNN for images, an MLP for feature vectors).

Example::

    >>> import torch
    >>> from hyperdnn.networks import mlp, mlp_parameters
    >>> net = mlp(64, (32,), 10, dropout=0.1)
    >>> net
    Sequential(
      (0): Linear(in_features=64, out_features=32, bias=True)
      (1): ReLU()
      (2): Dropout(p=0.1, inplace=False)
      (3): Linear(in_features=32, out_features=10, bias=True)
    )
    >>> net(torch.zeros(5, 64)).shape, mlp_parameters(64, (32,), 10)
    (torch.Size([5, 10]), 2410)
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["mlp", "mlp_parameters", "conv_net", "conv_net_features", "embedding_net"]


def _check_widths(in_features: int, hidden: Sequence[int], out_features: int, where: str) -> tuple[int, ...]:
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise TypeError(f"{where}: hidden must be a sequence of ints, got {type(hidden).__name__}")
    widths = {"in_features": in_features, "out_features": out_features}
    widths.update({f"hidden[{i}]": h for i, h in enumerate(hidden)})
    bad = {k: v for k, v in widths.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
    if bad:
        raise ValueError(f"{where}: widths must be ints >= 1, got {', '.join(f'{k}={v!r}' for k, v in bad.items())}")
    return tuple(hidden)


def mlp(in_features: int, hidden: Sequence[int], out_features: int, dropout: float = 0.0) -> nn.Sequential:
    """``Linear -> ReLU (-> Dropout)`` per hidden width, then a ``Linear`` to ``out_features``.

    Args:
        in_features: the input width ``F``.
        hidden: the hidden widths, in order (empty: one linear layer).
        out_features: the output width ``C``.
        dropout: the probability of an ``nn.Dropout`` after each hidden ReLU (0: no dropout
            layers, so the module names are ``0, 2, 4 ...`` for the linear layers).

    Returns:
        An ``nn.Sequential`` mapping ``(N, F)`` to ``(N, C)``.

    Raises:
        TypeError, ValueError: a width that is not an int >= 1 (all of them named), a dropout
            outside ``[0, 1)``.
    """
    hidden = _check_widths(in_features, hidden, out_features, "mlp")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"mlp: dropout must be a float in [0, 1), got {dropout!r}")
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def mlp_parameters(in_features: int, hidden: Sequence[int], out_features: int) -> int:
    """The parameters of ``mlp(in_features, hidden, out_features)`` (weights and biases), counted
    without building it."""
    widths = (in_features, *_check_widths(in_features, hidden, out_features, "mlp_parameters"), out_features)
    return sum(a * b + b for a, b in zip(widths, widths[1:]))


def conv_net(in_channels: int, channels: int = 64, blocks: int = 4) -> nn.Sequential:
    """``Conv 3x3 (padding 1) -> BatchNorm -> ReLU -> MaxPool 2`` per block, then flattened: the
    backbone of ProtoNet and MAML ("Conv-4").

    Args:
        in_channels: the image channels ``C``.
        channels: the channels of every block.
        blocks: the number of blocks (each halves the height and width, rounding down).

    Returns:
        An ``nn.Sequential`` mapping ``(N, C, H, W)`` to ``(N, conv_net_features(...))``.

    Example::

        >>> import torch
        >>> from hyperdnn.networks import conv_net, conv_net_features
        >>> net = conv_net(1, channels=16)
        >>> net(torch.zeros(2, 1, 28, 28)).shape, conv_net_features(16, 4, (28, 28))
        (torch.Size([2, 16]), 16)
    """
    for name, value in (("in_channels", in_channels), ("channels", channels), ("blocks", blocks)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"conv_net: {name} must be an int >= 1, got {value!r}")
    layers: list[nn.Module] = []
    width = in_channels
    for _ in range(blocks):
        layers += [nn.Conv2d(width, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(), nn.MaxPool2d(2)]
        width = channels
    return nn.Sequential(*layers, nn.Flatten())


def conv_net_features(channels: int, blocks: int, size: tuple[int, int]) -> int:
    """The output width of ``conv_net(C, channels, blocks)`` on ``size = (H, W)`` images.

    Raises:
        ValueError: the images are too small for ``blocks`` halvings (naming the size).
    """
    h, w = size
    for _ in range(blocks):
        h, w = h // 2, w // 2
    if h < 1 or w < 1:
        raise ValueError(
            f"conv_net_features: {size[0]}x{size[1]} images are too small for {blocks} blocks of 2x2 pooling"
        )
    return channels * h * w


def embedding_net(shape: tuple[int, ...], width: int) -> tuple[nn.Sequential, int]:
    """The backbone of the few- and zero-shot methods for examples of ``shape``, and its output
    width: :func:`conv_net` with ``width`` channels for images ``(C, H, W)`` (up to four blocks,
    fewer for images under 16 pixels), ``Linear -> ReLU -> Linear -> ReLU`` (hidden ``4 *
    width``, output ``width``) for feature vectors ``(F,)``.

    Example::

        >>> from hyperdnn.networks import embedding_net
        >>> embedding_net((1, 28, 28), 32)[1], embedding_net((2048,), 32)[1]
        (32, 32)
    """
    if len(shape) == 3:
        blocks = min(4, max(1, min(shape[1:]).bit_length() - 1))
        return conv_net(shape[0], width, blocks), conv_net_features(width, blocks, (shape[1], shape[2]))
    if len(shape) == 1:
        return nn.Sequential(mlp(shape[0], (4 * width,), width), nn.ReLU()), width
    raise ValueError(f"embedding_net: expected the shape of an image (C, H, W) or a vector (F,), got {shape!r}")
