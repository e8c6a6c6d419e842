"""Single-vector modulation: one shared network, shifted per input by a latent vector.

Functa (Dupont et al., ICML 2022) represents each signal by a *modulation*: a latent vector
``z`` that a linear map turns into a shift of every hidden layer's pre-activation (its bias)
of one shared SIREN, ``sin(omega * (W h + b + s(z)))``; only ``z`` differs between signals.
It is the baseline of a hypernetwork that writes the whole network: the same input, one
vector per signal, but the weights ``W`` are shared.

:func:`shift_modulation` builds it from the library's pieces: a
:class:`~hyperdnn.hypernet.HyperNetwork` whose spec is the hidden layers' biases (the shifts),
whose trunk ends in the latent ``z`` and whose head is one linear map (:class:`~hyperdnn.Once`),
in the residual form with a learned base (``b + s(z)``, the shared biases learned); the shared
weights are the target's own parameters, trained with it. ``model.trainable_parameters()``
holds everything to train.

Example::

    >>> import torch
    >>> from hyperdnn import DataEncoder
    >>> from hyperdnn.baselines.modulation import shift_modulation
    >>> from hyperdnn.siren import siren
    >>> encoder = DataEncoder(torch.nn.Linear(64, 16), 16)        # reads an 8x8 image
    >>> model = shift_modulation(siren(2, (32, 32), 1), encoder, latent=8)
    >>> model.target.spec.names                                   # the shifted biases
    ('0.bias', '2.bias')
    >>> model(torch.rand(5, 64, 2) * 2 - 1, torch.rand(5, 64)).shape   # coordinates, images
    torch.Size([5, 64, 1])
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from hyperdnn._checks import check_float, check_int, check_widths
from hyperdnn.conditioners import Conditioner
from hyperdnn.heads import Once
from hyperdnn.hypernet import HyperModel, HyperNetwork
from hyperdnn.spec import Selection
from hyperdnn.target import Target
from hyperdnn.trunks import MLP

__all__ = ["shift_modulation", "hidden_biases"]


def hidden_biases(module: nn.Module) -> list[str]:
    """The bias names of every ``nn.Linear`` of ``module`` but the last (its hidden layers).

    Raises:
        ValueError: ``module`` has fewer than two linear layers with a bias.
    """
    names = [f"{path}.bias" for path, m in module.named_modules() if isinstance(m, nn.Linear) and m.bias is not None]
    if len(names) < 2:
        raise ValueError(f"hidden_biases: expected at least two linear layers with a bias, found {names}")
    return names[:-1]


def shift_modulation(
    module: nn.Module,
    conditioner: Conditioner,
    latent: int,
    hidden: Sequence[int] = (),
    select: Selection = None,
    residual_scale: float = 0.1,
) -> HyperModel:
    """A shared ``module`` whose hidden biases are shifted by a linear map of one latent vector.

    Args:
        module: the shared network (e.g. a :func:`~hyperdnn.siren.siren`); its weights are
            trained as its own parameters.
        conditioner: what reads the input (e.g. a :class:`~hyperdnn.DataEncoder` of the image).
        latent: the latent vector's width ``d`` (the trunk's last layer).
        hidden: trunk widths before the latent layer.
        select: the shifted tensors (default: :func:`hidden_biases` of ``module``).
        residual_scale: the shifts' initial size relative to the biases' initial spread.

    Returns:
        A :class:`~hyperdnn.HyperModel`: ``model(coords, context)`` runs the shared network on
        ``coords`` (batch ``B``) with the shifts of ``B`` contexts, one per sample.

    Raises:
        TypeError, ValueError: bad widths, a ``residual_scale`` < 0, or a selection that the
            module cannot give.
    """
    check_int("shift_modulation", "latent", latent)
    widths = check_widths("shift_modulation", "hidden", hidden)
    check_float("shift_modulation", "residual_scale", residual_scale, 0.0)
    target = Target(module, select=hidden_biases(module) if select is None else select)
    hypernet = HyperNetwork(
        target,
        conditioner,
        MLP((*widths, latent)),
        Once(),
        residual="target",
        learn_theta0=True,
        residual_scale=residual_scale,
    )
    return HyperModel(hypernet, target)
