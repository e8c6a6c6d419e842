"""An implicit noise-conditioned hypernetwork: ``z ~ N(0, I) -> all the target's weights``.

One trained hypernetwork is a whole ensemble: every noise sample ``z`` gives a weight set
``theta = h(z)`` of the target network (HyperGAN, Ratzlaff and Li, ICML 2019; implicit weight
uncertainty, Pawlowski et al. 2017). The ``K`` weight sets of ``K`` samples run as one
:class:`~hyperdnn.HyperModel` ensemble pass on the batch, outputs ``(K, N, ...)``. Training
minimises the members' mean negative log-likelihood minus ``diversity`` times the nearest-
neighbour entropy estimate of the generated weights
(:func:`~hyperdnn.methods.diversity.weight_diversity`), which keeps the weight sets from
collapsing onto one network:

    L = mean_k NLL(theta_k) - diversity * weight_diversity(theta_1..K)

With ``diversity = 0`` and one sample per step this is ordinary training of a network whose
weights the hypernetwork generates.

Given ``probes`` (probe inputs, or a function drawing them each step), the term is measured in
function space instead: :func:`~hyperdnn.methods.diversity.function_diversity` of the members'
outputs at the probes, with a Gaussian prior of ``prior_std`` on their spread. This is the one
that widens a regressor's band between clusters of data (``hyperdnn run uncertainty``'s toy).

Example::

    >>> import torch
    >>> from hyperdnn import MLP, Chunked, Target
    >>> from hyperdnn.methods import ImplicitHypernet
    >>> from hyperdnn.methods.uncertainty import categorical_nll
    >>> from hyperdnn.networks import mlp
    >>> model = ImplicitHypernet(Target(mlp(4, (8,), 3)), noise_dim=5, trunk=MLP((16,)), head=Chunked(16, 4),
    ...                          samples=10, train_samples=4, diversity=0.1)
    >>> model(torch.randn(7, 4)).shape               # 10 weight sets on one batch of 7
    torch.Size([10, 7, 3])
    >>> loss, logs = model.loss(torch.randn(7, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0]), categorical_nll, 100)
    >>> sorted(logs)
    ['diversity', 'nll']
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from hyperdnn.conditioners import Noise
from hyperdnn.heads import Head
from hyperdnn.hypernet import HyperModel, HyperNetwork
from hyperdnn.methods.diversity import function_diversity, weight_diversity
from hyperdnn.methods.uncertainty import Likelihood, UncertaintyModel, check_samples
from hyperdnn.target import Target
from hyperdnn.trunks import Trunk

__all__ = ["ImplicitHypernet"]

#: probe inputs ``(P, ...)``, or a function of the step's generator that draws them
Probes = torch.Tensor | Callable[[torch.Generator | None], torch.Tensor]


class ImplicitHypernet(UncertaintyModel):
    """A :class:`~hyperdnn.Noise`-conditioned hypernetwork that generates every weight of the target.

    Args:
        target: the :class:`~hyperdnn.Target` it generates for (all its selected tensors).
        noise_dim: the width of the noise ``z``.
        trunk: the hypernetwork's trunk description (e.g. ``MLP((64,))``).
        head: its head description (e.g. ``Chunked(1024, 16, hidden=(64,))``).
        samples: ``K`` weight sets per prediction.
        train_samples: weight sets per training step (``>= 2`` for the diversity term).
        diversity: ``lambda >= 0``, the weight of the diversity term.
        probes: ``None`` (the term is measured on the weights), or probe inputs ``(P, ...)``
            shaped like a batch, or a function ``generator -> (P, ...)`` that draws fresh ones
            each step: the term is then measured on the outputs at the probes
            (:func:`~hyperdnn.methods.diversity.function_diversity`). The probes run in the
            same ensemble pass as the batch.
        prior_std: ``> 0``, the function-space prior's spread (only with ``probes``).
        probe_outputs: picks what is compared at the probes from the outputs ``(K, P, ...)``
            (e.g. ``lambda f: f[..., 0]``, a regressor's mean); ``None``: every output.

    ``model.model`` is the :class:`~hyperdnn.HyperModel` (hypernetwork and target).

    Raises:
        ValueError: a sample count below 1, a negative ``diversity``, or ``diversity > 0`` with
            one training sample (the term needs two), ``prior_std <= 0``. TypeError:
            ``probes`` neither a tensor nor a callable.
    """

    def __init__(
        self,
        target: Target,
        noise_dim: int,
        trunk: Trunk,
        head: Head,
        samples: int = 10,
        train_samples: int = 4,
        diversity: float = 0.0,
        probes: Probes | None = None,
        prior_std: float = 1.0,
        probe_outputs: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        super().__init__()
        self.samples = check_samples("ImplicitHypernet", "samples", samples)
        self.train_samples = check_samples("ImplicitHypernet", "train_samples", train_samples)
        if isinstance(diversity, bool) or not isinstance(diversity, (int, float)) or not diversity >= 0:
            raise ValueError(f"ImplicitHypernet: diversity must be a number >= 0, got {diversity!r}")
        if diversity > 0 and train_samples < 2:
            raise ValueError(
                f"ImplicitHypernet: the diversity term compares weight sets, so diversity={diversity} needs "
                f"train_samples >= 2, got {train_samples}"
            )
        if probes is not None and not (isinstance(probes, torch.Tensor) or callable(probes)):
            raise TypeError(f"ImplicitHypernet: probes must be None, a tensor of inputs or a callable, got {type(probes).__name__}")  # fmt: skip
        if isinstance(prior_std, bool) or not isinstance(prior_std, (int, float)) or not prior_std > 0:
            raise ValueError(f"ImplicitHypernet: prior_std must be a number > 0, got {prior_std!r}")
        self.diversity = float(diversity)
        self.probes, self.prior_std, self.probe_outputs = probes, float(prior_std), probe_outputs
        self.model = HyperModel(HyperNetwork(target, Noise(noise_dim), trunk, head), target)

    @property
    def noise_dim(self) -> int:
        """The width of the noise the hypernetwork reads."""
        return self.model.hypernet.conditioner.out_features

    def noise(self, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``k`` noise samples ``(k, noise_dim)`` (``k >= 1``), from ``generator``."""
        check_samples("ImplicitHypernet.noise", "k", k)
        return self.model.hypernet.conditioner.sample(k, generator)

    def _checked(self, noise: torch.Tensor) -> torch.Tensor:
        if (
            not isinstance(noise, torch.Tensor)
            or noise.dim() != 2
            or noise.shape[1] != self.noise_dim
            or not len(noise)
        ):
            shape = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
            raise ValueError(
                f"ImplicitHypernet: expected noise of shape (K, {self.noise_dim}) with K >= 1 (the hypernetwork's "
                f"noise width is {self.noise_dim}), got {shape}"
            )
        return noise

    def weights(self, noise: torch.Tensor) -> torch.Tensor:
        """The flat weight sets ``(K, D)`` generated for ``noise (K, noise_dim)``, in the target
        spec's layout (``model.target.spec.unflatten`` names them).

        Raises:
            ValueError: noise of another width than the hypernetwork's (naming both).
        """
        return self.model.hypernet.generate_flat(self._checked(noise))[0]

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(K, N, ...)``: the target on ``x`` with ``K`` generated weight sets, one ensemble pass.

        Args:
            x: ``(N, ...)`` inputs.
            generator: draws ``K = samples`` noise vectors when ``noise`` is not given.
            noise: ``(K, noise_dim)`` noise to use instead.
        """
        z = self.noise(self.samples, generator) if noise is None else self._checked(noise)
        return self.model(x, z, mode="ensemble")

    def loss(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        likelihood: Likelihood,
        num_train: int,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``mean_k NLL_k - diversity * D`` on ``train_samples`` weight sets, ``D`` the weights'
        :func:`~hyperdnn.methods.diversity.weight_diversity` or, with ``probes``, the outputs'
        :func:`~hyperdnn.methods.diversity.function_diversity` at the probes.

        Raises:
            ValueError: probes that are not shaped like a batch of ``x`` (naming both shapes).
        """
        hnet = self.model.hypernet
        flat, _ = hnet.generate_flat(self.noise(self.train_samples, generator))
        function_space = self.diversity > 0 and self.probes is not None
        inputs = x
        if function_space:
            xp = self.probes(generator) if callable(self.probes) else self.probes
            if not isinstance(xp, torch.Tensor) or xp.shape[1:] != x.shape[1:] or not len(xp):
                shape = tuple(xp.shape) if isinstance(xp, torch.Tensor) else type(xp).__name__
                raise ValueError(f"ImplicitHypernet: expected probes of shape (P, {', '.join(map(str, x.shape[1:]))}) with P >= 1, like the batch {tuple(x.shape)}, got {shape}")  # fmt: skip
            inputs = torch.cat([x, xp.to(x.device, x.dtype)])
        out = self.model.target.run(hnet.unflatten(flat, True), inputs, mode="ensemble", validate=False)
        nll = likelihood(out[:, : len(x)], y).mean()
        logs = {"nll": float(nll.detach())}
        if function_space:
            f = out[:, len(x) :]
            div = function_diversity(self.probe_outputs(f) if self.probe_outputs else f, self.prior_std)
            logs["diversity"] = float(div.detach())
            return nll - self.diversity * div, logs
        if self.diversity > 0:
            div = weight_diversity(flat, hnet.theta_scale)
            logs["diversity"] = float(div.detach())
            return nll - self.diversity * div, logs
        return nll, logs

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The hypernetwork's parameters and the target's own (not generated) ones."""
        return self.model.trainable_parameters()
