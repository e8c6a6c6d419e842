"""FLOPs of a network: the multiply-accumulates of its convolutions and linear layers.

:func:`count_flops` runs the module once on example inputs with forward hooks and counts, per
input sample, the multiply-accumulates (MACs) of every convolution (``out elements x in
channels per group x kernel elements``, transposed convolutions included) and every linear
layer (``out elements x in features``). This is the convention of the pruning and mobile
network papers (MetaPruning, MobileNet), which call MACs "FLOPs"; ``torch.utils.flop_counter``
counts two floating-point operations per MAC, so its total is twice this one for a network of
convolutions and linear layers. Biases, normalisation, activations and pooling are not counted.

Inputs on the ``meta`` device cost nothing (shapes only) and a module built under ``with
torch.device("meta")`` draws no random numbers: that is how a search counts thousands of
candidates (see :meth:`~hyperdnn.arch.PrunableCNN.flops`).

Example::

    >>> import torch
    >>> from torch import nn
    >>> from hyperdnn.arch import count_flops
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 5 * 5, 10))
    >>> count = count_flops(net, torch.zeros(1, 1, 5, 5))
    >>> count.total, count.layers                 # 4*5*5 outputs x 9 taps; 100 inputs x 10 outputs
    (1900, {'0': 900, '2': 1000})
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["FlopCount", "count_flops"]


@dataclass(frozen=True)
class FlopCount:
    """What :func:`count_flops` counted.

    Attributes:
        total: multiply-accumulates per input sample, all layers.
        layers: module path -> its multiply-accumulates per sample, in call order (a module
            called twice counts twice).
    """

    total: int
    layers: dict[str, int]


def _macs(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor, batch: int) -> int:
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.transposed:  # every input element meets every kernel tap of its group's outputs
            per_input = module.out_channels // module.groups * math.prod(module.kernel_size)
            return inputs[0].numel() // batch * per_input
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        return output.numel() // batch * per_output
    return output.numel() // batch * module.in_features  # nn.Linear


def count_flops(module: nn.Module, *inputs: Any, batch_dim: int = 0) -> FlopCount:
    """Count the multiply-accumulates of ``module`` per input sample.

    Args:
        module: the network; its convolutions (``nn.Conv1d/2d/3d``, transposed ones) and
            ``nn.Linear`` layers are counted wherever they sit (other layers count zero).
        *inputs: example inputs for one forward call (any batch size ``N >= 1``; ``meta``
            tensors count shapes only).
        batch_dim: where the first input carries its batch ``N``.

    Returns:
        A :class:`FlopCount`: the total and each counted layer's share, per sample.

    Raises:
        TypeError: ``module`` is not an ``nn.Module`` or the first input is not a tensor.
        ValueError: the first input has no batch at ``batch_dim`` (or an empty one).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"count_flops: module must be an nn.Module, got {type(module).__name__}")
    if not inputs or not isinstance(inputs[0], torch.Tensor):
        raise TypeError(f"count_flops: expected an example input tensor, got {[type(i).__name__ for i in inputs]}")
    x = inputs[0]
    if not 0 <= batch_dim < x.dim() or x.shape[batch_dim] < 1:
        raise ValueError(
            f"count_flops: the first input needs a batch of N >= 1 at batch_dim={batch_dim}, got shape {list(x.shape)}"
        )
    batch = x.shape[batch_dim]
    layers: dict[str, int] = {}
    counted = (nn.modules.conv._ConvNd, nn.Linear)

    def hook(name: str):
        def record(mod: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
            layers[name] = layers.get(name, 0) + _macs(mod, args, out, batch)

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in module.named_modules() if isinstance(m, counted)]
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return FlopCount(sum(layers.values()), layers)
