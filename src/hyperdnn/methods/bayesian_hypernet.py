"""A Bayesian hypernetwork: an invertible hypernetwork as the variational posterior over weights.

Krueger et al. (2017, "Bayesian Hypernetworks") train a normalising flow
(:class:`~hyperdnn.methods.flow.FlowHypernetwork`) from noise to the target's weights as a
variational posterior ``q(theta)``, on the evidence lower bound: per training example,

    L = mean_k NLL(theta_k) + kl_weight * (log q(theta_k) - log p(theta_k)) / num_train,
    theta_k = f(eps_k), eps_k ~ N(0, I)

where the second term is a one-sample-per-member estimate of ``KL(q || p) / num_train`` with the
exact density of the flow. As in the paper, the weights the flow generates are the per-unit
scales of weight-normalised layers (:class:`ScaledLinear`: ``y = g * (V x / ||V||) + b``;
Salimans and Kingma, 2016): one number per output unit, so the flow stays small, while the
directions ``V`` and the biases ``b`` are trained as point estimates. The prior is
``p(g) = N(0, prior_std^2)`` per scale. ``K`` weight sets run as one
:meth:`~hyperdnn.Target.ensemble` pass on the batch.

:func:`scaled_mlp` builds the target: :func:`~hyperdnn.networks.mlp` with every
``nn.Linear`` a :class:`ScaledLinear` (which equals that ``nn.Linear`` at initialisation).

Example::

    >>> import torch
    >>> from hyperdnn.methods import BayesianHypernet
    >>> from hyperdnn.methods.bayesian_hypernet import scaled_mlp
    >>> from hyperdnn.methods.uncertainty import categorical_nll
    >>> model = BayesianHypernet(scaled_mlp(4, (8,), 3), samples=10, flow_layers=2, flow_hidden=8)
    >>> model.flow.dim                                  # 8 + 3 unit scales
    11
    >>> model(torch.randn(7, 4)).shape
    torch.Size([10, 7, 3])
    >>> loss, logs = model.loss(torch.randn(7, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0]), categorical_nll, 100)
    >>> sorted(logs)
    ['kl', 'nll']
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn.methods.flow import FlowHypernetwork
from hyperdnn.methods.uncertainty import Likelihood, UncertaintyModel, check_samples
from hyperdnn.networks import mlp_parameters
from hyperdnn.target import Target

__all__ = ["ScaledLinear", "scaled_mlp", "BayesianHypernet"]


class ScaledLinear(nn.Module):
    """A weight-normalised linear layer, ``y = scale * (x @ (V / ||V||)^T) + bias`` with ``V``
    normalised per output unit (row).

    Args:
        in_features, out_features: the widths.

    Parameters ``direction (out, in)``, ``scale (out,)`` and ``bias (out,)`` start from
    ``nn.Linear``'s initialisation (``scale`` = the rows' norms), so the layer first equals
    that ``nn.Linear``.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        linear = nn.Linear(in_features, out_features)
        self.direction = nn.Parameter(linear.weight.detach().clone())
        self.scale = nn.Parameter(linear.weight.detach().norm(dim=1))
        self.bias = nn.Parameter(linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unit = self.direction / self.direction.norm(dim=1, keepdim=True)
        return F.linear(x, unit) * self.scale + self.bias


def scaled_mlp(in_features: int, hidden: Sequence[int], out_features: int) -> nn.Sequential:
    """:func:`~hyperdnn.networks.mlp` with :class:`ScaledLinear` layers: ``ScaledLinear -> ReLU``
    per hidden width, then a ``ScaledLinear`` to ``out_features``. Under the same seed it starts
    as the function ``mlp(in_features, hidden, out_features)`` starts (the same draws in order).

    Raises:
        TypeError, ValueError: a width that is not an int >= 1.
    """
    mlp_parameters(in_features, hidden, out_features)  # checks the widths, naming every bad one
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [ScaledLinear(width, h), nn.ReLU()]
        width = h
    layers.append(ScaledLinear(width, out_features))
    return nn.Sequential(*layers)


class BayesianHypernet(UncertaintyModel):
    """A normalising-flow posterior over the unit scales of a :class:`ScaledLinear` network,
    trained on the evidence lower bound.

    Args:
        network: the target network; the ``scale`` of every :class:`ScaledLinear` in it is
            generated, everything else is its own (trained directly).
        samples: ``K`` weight sets per prediction.
        train_samples: weight sets per training step.
        flow_layers, flow_hidden: the flow's couplings and their MLP width.
        init_std: the flow's initial standard deviation of every scale.
        prior_std: the standard deviation of the zero-mean Gaussian prior on every scale.
        kl_weight: the weight of the KL term (1: the evidence lower bound).

    Raises:
        ValueError: a network without :class:`ScaledLinear` layers, a sample count below 1, a
            ``prior_std`` or ``init_std`` that is not positive, a negative ``kl_weight``.
    """

    def __init__(
        self,
        network: nn.Module,
        samples: int = 10,
        train_samples: int = 4,
        flow_layers: int = 4,
        flow_hidden: int = 32,
        init_std: float = 0.05,
        prior_std: float = 1.0,
        kl_weight: float = 1.0,
    ):
        super().__init__()
        self.samples = check_samples("BayesianHypernet", "samples", samples)
        self.train_samples = check_samples("BayesianHypernet", "train_samples", train_samples)
        for name, value, positive in (("init_std", init_std, True), ("prior_std", prior_std, True), ("kl_weight", kl_weight, False)):  # fmt: skip
            ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            if not ok or value < 0 or (positive and value == 0):
                raise ValueError(f"BayesianHypernet: {name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")  # fmt: skip
        if not any(isinstance(m, ScaledLinear) for m in network.modules()):
            raise ValueError(
                f"BayesianHypernet: the network must contain ScaledLinear layers (their scales are generated), "
                f"got {type(network).__name__} without one; build it with scaled_mlp(...)"
            )
        scales = {f"{path}.scale".lstrip(".") for path, m in network.named_modules() if isinstance(m, ScaledLinear)}
        self.target = Target(network, select=lambda name, p: name in scales)
        mean = self.target.spec.flatten(self.target.default_weights())
        self.flow = FlowHypernetwork(self.target.spec.numel, flow_layers, flow_hidden, mean, init_std)
        self.prior_std, self.kl_weight = float(prior_std), float(kl_weight)

    def sample(self, k: int, generator: torch.Generator | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``k`` weight sets (name -> ``(k, *shape)``) and their log-density ``log q`` ``(k,)``."""
        theta, log_q = self.flow.sample(check_samples("BayesianHypernet.sample", "k", k), generator)
        return self.target.spec.unflatten(theta), log_q

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(K, N, ...)``: the network on ``x`` with ``K = samples`` posterior samples, one ensemble pass."""
        weights, _ = self.sample(self.samples, generator)
        return self.target.ensemble(weights, x)

    def log_prior(self, theta: torch.Tensor) -> torch.Tensor:
        """``log p(theta)`` per row of flat weights ``(K, D)``: ``(K,)``."""
        var = self.prior_std**2
        return -0.5 * (theta.pow(2).sum(-1) / var + theta.shape[-1] * math.log(2 * math.pi * var))

    def loss(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        likelihood: Likelihood,
        num_train: int,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The negative evidence lower bound per training example, on ``train_samples`` samples."""
        if isinstance(num_train, bool) or not isinstance(num_train, int) or num_train < 1:
            raise ValueError(f"BayesianHypernet.loss: num_train must be an int >= 1, got {num_train!r}")
        theta, log_q = self.flow.sample(self.train_samples, generator)
        out = self.target.run(self.target.spec.unflatten(theta), x, mode="ensemble", validate=False)
        nll = likelihood(out, y).mean()
        kl = (log_q - self.log_prior(theta)).mean()
        return nll + self.kl_weight * kl / num_train, {"nll": float(nll.detach()), "kl": float(kl.detach())}

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The flow's parameters and the network's own (directions and biases)."""
        own = [p for n, p in self.target.module.named_parameters() if n not in self.target.spec and p.requires_grad]
        return [*self.flow.parameters(), *own]
