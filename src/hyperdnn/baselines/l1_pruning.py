"""L1-norm filter pruning (Li et al., ICLR 2017): the baseline of a width search.

Each convolution of a trained :class:`~hyperdnn.arch.PrunableCNN` keeps the filters (output
channels) with the largest L1 norm, as many as a width vector says;
:func:`torch.nn.utils.prune.ln_structured` (``n=1``, ``dim=0``) picks them. The pruned network
is then built at those widths and takes the kept filters, the matching input channels of the
next convolution (or of the classifier), and the batch norms' parameters and running
statistics of the kept channels, so it computes exactly what the full network computes with
the pruned channels' outputs set to zero (before fine-tuning).

Example::

    >>> import torch
    >>> from hyperdnn.arch import PrunableCNN
    >>> from hyperdnn.baselines import l1_filter_prune
    >>> cnn = PrunableCNN((4, 6), (1, 2), image_size=8)
    >>> small = l1_filter_prune(cnn, cnn.build(), (2, 3))
    >>> small[0].weight.shape, small[3].weight.shape, small[-1].weight.shape
    (torch.Size([2, 1, 3, 3]), torch.Size([3, 2, 3, 3]), torch.Size([10, 3]))
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import prune

from hyperdnn.arch.prunable import PrunableCNN

__all__ = ["l1_filter_prune", "l1_kept_filters"]


def l1_kept_filters(conv: nn.Conv2d, keep: int) -> torch.Tensor:
    """The sorted indices of the ``keep`` filters of ``conv`` with the largest L1 norm (ties
    as :func:`torch.nn.utils.prune.ln_structured` breaks them); ``conv`` is not changed.

    Raises:
        ValueError: ``keep`` outside ``[1, out_channels]``.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= conv.out_channels:
        raise ValueError(f"l1_kept_filters: keep must be an int in [1, {conv.out_channels}], got {keep!r}")
    probe = copy.deepcopy(conv)
    prune.ln_structured(probe, "weight", amount=conv.out_channels - keep, n=1, dim=0)
    kept = probe.weight_mask.flatten(1).any(1)
    return kept.nonzero().flatten()


@torch.no_grad()
def l1_filter_prune(cnn: PrunableCNN, net: nn.Sequential, widths: Sequence[int]) -> nn.Sequential:
    """The network ``net`` (built by ``cnn``, trained) pruned to ``widths`` by filter L1 norm.

    Args:
        cnn: the description ``net`` was built from.
        net: the full-width network (``cnn.build()``), trained; it is not changed.
        widths: filters to keep per convolution (checked by
            :meth:`~hyperdnn.arch.PrunableCNN.check_widths`).

    Returns:
        ``cnn.build(widths)`` holding the kept filters' weights and statistics, in ``net``'s
        training mode. Building it draws no numbers from the global generator.

    Raises:
        ValueError: ``widths`` that do not fit ``cnn`` (the layers named), or a ``net`` whose
            shapes are not ``cnn``'s full network.
    """
    widths = cnn.check_widths(widths)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in cnn.build().state_dict().items()}
    given = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    if expected != given:
        diff = sorted(k for k in set(expected) | set(given) if expected.get(k) != given.get(k))
        raise ValueError(f"l1_filter_prune: net is not the full network of cnn; differing entries: {diff}")
    with torch.random.fork_rng(devices=[]):
        small = cnn.build(widths)
    previous = torch.arange(cnn.in_channels)
    for i, keep in enumerate(widths):
        conv, bn = net[3 * i], net[3 * i + 1]
        kept = l1_kept_filters(conv, keep)
        small[3 * i].weight.copy_(conv.weight[kept][:, previous])
        target_bn = small[3 * i + 1]
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(target_bn, name).copy_(getattr(bn, name)[kept])
        target_bn.num_batches_tracked.copy_(bn.num_batches_tracked)
        previous = kept
    small[-1].weight.copy_(net[-1].weight[:, previous])
    small[-1].bias.copy_(net[-1].bias)
    return small.train(net.training)
