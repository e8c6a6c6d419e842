"""Generative replay for class- and domain-incremental learning: HNET+R and DGR.

A classifier that must tell every class seen so far apart (CL3) or answer without the task
identity (CL2) forgets the earlier tasks unless it sees them again. Generative replay trains a
variational autoencoder (VAE) on the tasks as they come and, while task ``t`` trains, draws
inputs of the earlier tasks from it; the classifier learns the current task's data and these
replayed inputs, labelled by the classifier as it was before task ``t`` (Shin et al., 2017).

* **HNET+R** (von Oswald et al., ICLR 2020): the VAE's decoder is generated per task by a
  task-conditioned hypernetwork, protected by the same output regulariser as the hypernetwork
  classifier (:class:`~hyperdnn.methods.output_regularizer.OutputRegularizer`), so the decoder of
  every earlier task stays where it was and needs no replay itself: :class:`HypernetReplay`.
* **DGR** (deep generative replay, the baseline without the hypernetwork): one VAE, fine-tuned on
  each task with its own earlier samples replayed (from a frozen copy taken before the task):
  :class:`VAEReplay`.

:class:`ReplayLearner` is the continual learner (the :class:`~hyperdnn.methods.ContinualLearner`
contract) that trains a classifier with either. The VAE's loss is the negative evidence lower
bound per input number (Bernoulli likelihood of inputs in ``[0, 1]``, standard normal prior), so
that it is on the scale of the classification loss and of the regulariser's ``beta``.

Example (two tasks of a toy problem, class-incremental)::

    >>> import torch
    >>> from hyperdnn import MLP, HyperNetwork, Target, TaskEmbedding
    >>> from hyperdnn.methods.generative_replay import HypernetReplay, ReplayLearner
    >>> from hyperdnn.networks import mlp
    >>> from hyperdnn.optim import adam
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> decoder = Target(mlp(3, (8,), 6))
    >>> replay = HypernetReplay(mlp(6, (8,), 2 * 3), HyperNetwork(decoder, TaskEmbedding(1, 4), MLP((16,))), decoder, 3, 0.1)
    >>> learner = ReplayLearner(mlp(6, (8,), 4), "CL3", 2, 2, replay)
    >>> x, y, g = torch.rand(16, 6), torch.randint(0, 2, (16,)), torch.Generator().manual_seed(0)
    >>> for t in range(2):
    ...     learner.begin_task(t)
    ...     logs = learner.train_step(t, x, y, torch.full_like(y, t), adam(learner.parameters_for(t)), g)
    >>> sorted(logs), learner.predict(x, 0, 2, "CL3")[0].shape
    (['loss', 'reg', 'replay', 'vae'], torch.Size([16]))
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn import HyperNetwork, Target, TaskEmbedding
from hyperdnn.baselines.shared_network import SharedNetworkLearner
from hyperdnn.methods.continual import load_module_state, with_prefix, without_prefix
from hyperdnn.methods.output_regularizer import OutputRegularizer

__all__ = ["vae_loss", "ReplayModel", "HypernetReplay", "VAEReplay", "ReplayLearner"]


def vae_loss(
    encoder: nn.Module,
    decode: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The negative evidence lower bound of ``x`` per input number, averaged over the batch.

    Args:
        encoder: ``(N, F) -> (N, 2 * latent)``: the posterior's mean and log-variance.
        decode: ``(N, latent) -> (N, F)`` logits of the Bernoulli likelihood.
        x: ``(N, F)`` inputs in ``[0, 1]``.
        generator: draws the reparameterisation noise (``None``: the global generator).

    Returns:
        ``(BCE(decode(z), x) + KL(q(z | x) || N(0, I))) / F``, ``z = mu + sigma * eps``.
    """
    mu, logvar = encoder(x).chunk(2, dim=-1)
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    z = mu + eps * (0.5 * logvar).exp()
    recon = F.binary_cross_entropy_with_logits(decode(z), x, reduction="sum")
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum()
    return (recon + kl) / x.numel()


class ReplayModel(nn.Module, ABC):
    """A generative model of the inputs of every task so far (see :class:`ReplayLearner`)."""

    latent: int

    @abstractmethod
    def begin_task(self, t: int) -> None:
        """Prepare for task ``t`` (snapshot what protects or replays the earlier tasks)."""

    @abstractmethod
    def parameters_for(self, t: int) -> list[nn.Parameter]:
        """What is trained on task ``t``."""

    @abstractmethod
    def loss(
        self, t: int, x: torch.Tensor, replayed: torch.Tensor | None, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """The model's losses on task ``t``'s inputs ``x`` (and the replayed ones): name -> scalar."""

    @abstractmethod
    def sample(self, n: int, t: int, generator: torch.Generator) -> torch.Tensor:
        """``(n, F)`` inputs of tasks ``0 .. t-1`` (in ``[0, 1]``), while task ``t`` trains."""

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Tensors beyond ``state_dict`` needed to continue (a snapshot)."""
        return {}

    def num_parameters(self) -> int:
        """The model's trainable parameters after all tasks so far."""
        return sum(p.numel() for p in self.parameters())

    def load_extra_state(self, tensors: Mapping[str, torch.Tensor], tasks: int) -> None:
        """Restore :meth:`extra_state` on a fresh model, ``tasks`` tasks begun."""


class HypernetReplay(ReplayModel):
    """HNET+R's replay model: a VAE whose decoder a task-conditioned hypernetwork generates.

    Args:
        encoder: ``(N, F) -> (N, 2 * latent)``, shared by all tasks (only used in training, so
            it needs no protection).
        hnet: generates the decoder's weights; its conditioner is a :class:`~hyperdnn.TaskEmbedding`.
        decoder: the :class:`~hyperdnn.Target` ``hnet`` generates for, ``(N, latent) -> (N, F)``.
        latent: the latent width.
        beta: the output regulariser's weight (the decoders of earlier tasks stay where they were).

    Raises:
        TypeError: ``hnet``'s conditioner is not a ``TaskEmbedding`` or ``decoder`` not a ``Target``.
        ValueError: ``latent < 1`` or a bad ``beta``.
    """

    def __init__(self, encoder: nn.Module, hnet: HyperNetwork, decoder: Target, latent: int, beta: float):
        super().__init__()
        if not isinstance(hnet.conditioner, TaskEmbedding):
            raise TypeError(f"HypernetReplay: hnet needs a TaskEmbedding conditioner, got {type(hnet.conditioner).__name__}")  # fmt: skip
        if not isinstance(decoder, Target):
            raise TypeError(f"HypernetReplay: decoder must be a Target, got {type(decoder).__name__}")
        if isinstance(latent, bool) or not isinstance(latent, int) or latent < 1:
            raise ValueError(f"HypernetReplay: latent must be an int >= 1, got {latent!r}")
        self.encoder, self.hnet, self.latent = encoder, hnet, latent
        self.decoder = decoder
        self.regularizer = OutputRegularizer(beta)

    @property
    def embeddings(self) -> nn.ParameterList:
        """The task embeddings, one per task begun."""
        return self.hnet.conditioner.embeddings  # type: ignore[union-attr,return-value]

    def _freeze_old_embeddings(self, t: int) -> None:
        for i, e in enumerate(self.embeddings):
            e.requires_grad_(i == t)

    def begin_task(self, t: int) -> None:
        while len(self.embeddings) <= t:
            self.hnet.conditioner.add_tasks(1)  # type: ignore[operator]
        self._freeze_old_embeddings(t)
        self.regularizer.snapshot(self.hnet, t)

    def parameters_for(self, t: int) -> list[nn.Parameter]:
        shared = [p for n, p in self.hnet.named_parameters() if not n.startswith("conditioner.")]
        return list(self.encoder.parameters()) + shared + [self.embeddings[t]]

    def loss(self, t, x, replayed, generator) -> dict[str, torch.Tensor]:
        self.train()
        weights = self.hnet(t)
        vae = vae_loss(self.encoder, lambda z: self.decoder(weights, z), x, generator)
        return {"vae": vae, "reg": self.regularizer(self.hnet)}

    @torch.no_grad()
    def sample(self, n: int, t: int, generator: torch.Generator) -> torch.Tensor:
        if t < 1:
            raise ValueError(f"HypernetReplay.sample: no earlier task to replay while task {t} trains")
        self.eval()
        weights = self.hnet(torch.arange(t, device=self.hnet.theta_scale.device))  # every earlier decoder
        per_task = -(-n // t)
        z = torch.randn(per_task, self.latent, generator=generator).to(self.hnet.theta_scale.device)
        x = torch.sigmoid(self.decoder.ensemble(weights, z)).flatten(0, 1)  # (t * per_task, F)
        keep = torch.randperm(x.shape[0], generator=generator)[:n].to(x.device)
        return x.index_select(0, keep)

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {} if self.regularizer.targets is None else {"targets": self.regularizer.targets}

    def num_parameters(self) -> int:
        """The encoder's and the hypernetwork's parameters (the decoder's own are a template the
        generated weights replace)."""
        return sum(p.numel() for m in (self.encoder, self.hnet) for p in m.parameters())

    def load_extra_state(self, tensors, tasks) -> None:
        targets = tensors.get("targets")
        self.regularizer.targets = None if targets is None else targets.to(self.hnet.theta_scale.device)
        self._freeze_old_embeddings(tasks - 1)

    def grow(self, tasks: int) -> None:
        """Have ``tasks`` task embeddings (before loading a saved state)."""
        if tasks > len(self.embeddings):
            self.hnet.conditioner.add_tasks(tasks - len(self.embeddings))  # type: ignore[operator]


class VAEReplay(ReplayModel):
    """DGR's replay model: one VAE, fine-tuned task after task on the current inputs and on its
    own samples of the earlier tasks (drawn from a frozen copy of its decoder taken when the
    task began), weighted ``1 / (t + 1)`` and ``t / (t + 1)``.

    Args:
        encoder: ``(N, F) -> (N, 2 * latent)``.
        decoder: ``(N, latent) -> (N, F)`` logits.
        latent: the latent width.

    Raises:
        ValueError: ``latent < 1``.
    """

    #: the frozen copy of the decoder taken when the current task began (``None`` on task 0)
    previous: nn.Module | None

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent: int):
        super().__init__()
        if isinstance(latent, bool) or not isinstance(latent, int) or latent < 1:
            raise ValueError(f"VAEReplay: latent must be an int >= 1, got {latent!r}")
        self.encoder, self.decoder, self.latent = encoder, decoder, latent
        self._set_previous(None)

    def _set_previous(self, module: nn.Module | None) -> None:
        # a plain attribute, not a submodule: never trained, saved as extra state
        object.__setattr__(self, "previous", module)

    def begin_task(self, t: int) -> None:
        self._set_previous(copy.deepcopy(self.decoder).requires_grad_(False).eval() if t > 0 else None)

    def parameters_for(self, t: int) -> list[nn.Parameter]:
        return list(self.encoder.parameters()) + list(self.decoder.parameters())

    def loss(self, t, x, replayed, generator) -> dict[str, torch.Tensor]:
        self.train()
        vae = vae_loss(self.encoder, self.decoder, x, generator)
        if replayed is not None:
            vae = (vae + t * vae_loss(self.encoder, self.decoder, replayed, generator)) / (t + 1)
        return {"vae": vae}

    @torch.no_grad()
    def sample(self, n: int, t: int, generator: torch.Generator) -> torch.Tensor:
        if self.previous is None:
            raise ValueError(f"VAEReplay.sample: no earlier task to replay while task {t} trains")
        device = next(self.decoder.parameters()).device
        z = torch.randn(n, self.latent, generator=generator).to(device)
        return torch.sigmoid(self.previous(z))

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {} if self.previous is None else with_prefix("previous.", self.previous.state_dict())

    def load_extra_state(self, tensors, tasks) -> None:
        saved = without_prefix("previous.", tensors)
        self._set_previous(None)
        if saved:
            previous = copy.deepcopy(self.decoder).requires_grad_(False).eval()
            load_module_state(previous, saved, "DGR's previous decoder")
            self._set_previous(previous)


class ReplayLearner(SharedNetworkLearner):
    """A classifier trained with generative replay (HNET+R with :class:`HypernetReplay`, DGR with
    :class:`VAEReplay`), for CL2 and CL3.

    While task ``t`` trains, every step draws as many replayed inputs as the batch has, labels
    them with the classifier as it was before task ``t`` (the most likely of the classes seen
    then), and minimises ``(CE(current) + t * CE(replayed)) / (t + 1)`` plus the replay model's
    losses. CL3 predictions are the most likely class seen so far; their task (class // C) is
    reported as the inferred task.

    Args:
        model: the classifier, ``(N, F) -> (N, scenario_outputs(scenario, C, T))``.
        scenario: ``"CL2"`` or ``"CL3"``.
        classes_per_task: ``C``.
        num_tasks: ``T``.
        replay: the generative model of the inputs.

    Raises:
        TypeError: ``replay`` is not a :class:`ReplayModel`.
        ValueError: scenario CL1 (the task is given there; replay is for CL2 and CL3).
    """

    def __init__(self, model: nn.Module, scenario: str, classes_per_task: int, num_tasks: int, replay: ReplayModel):
        super().__init__(model, scenario, classes_per_task, num_tasks)
        if scenario == "CL1":
            raise ValueError("ReplayLearner: scenario must be CL2 or CL3 (CL1 gives the task), got 'CL1'")
        if not isinstance(replay, ReplayModel):
            raise TypeError(f"ReplayLearner: replay must be a ReplayModel, got {type(replay).__name__}")
        self.replay = replay
        self.name = "hnet+r" if isinstance(replay, HypernetReplay) else "dgr"
        self.previous: nn.Module | None = None

    def begin_task(self, t: int) -> None:
        super().begin_task(t)
        if isinstance(self.replay, HypernetReplay):
            self.replay.grow(t + 1)
        self.previous = copy.deepcopy(self.model).requires_grad_(False).eval() if t > 0 else None
        self.replay.begin_task(t)

    def parameters_for(self, t: int) -> list[nn.Parameter]:
        return list(self.model.parameters()) + self.replay.parameters_for(t)

    def param_groups(self, t: int, lr: float, replay_lr: float = 0.0) -> list[dict[str, Any]]:
        """The optimizer's parameter groups on task ``t``: the classifier at ``lr`` and the
        replay model at ``replay_lr`` (two groups); ``replay_lr = 0``: one group of
        :meth:`parameters_for` at ``lr``.

        Raises:
            ValueError: a negative ``replay_lr``.
        """
        if replay_lr < 0:
            raise ValueError(f"ReplayLearner.param_groups: replay_lr must be >= 0, got {replay_lr!r}")
        if not replay_lr:
            return [{"params": self.parameters_for(t), "lr": lr}]
        return [
            {"params": list(self.model.parameters()), "lr": lr},
            {"params": self.replay.parameters_for(t), "lr": replay_lr},
        ]

    def train_step(self, t, x, y, task_ids, optimizer, generator) -> dict[str, float]:
        self.check_one_task(t, task_ids)
        replayed = None
        loss = self.task_loss(x, y, task_ids)
        logs: dict[str, torch.Tensor] = {"replay": loss.new_zeros(())}
        if t > 0 and self.previous is not None:
            replayed = self.replay.sample(x.shape[0], t, generator)
            with torch.no_grad():
                old = self.previous(replayed)
                y_old = (old[:, : t * self.k] if self.scenario == "CL3" else old).argmax(-1)
            self.model.train()
            logits = self._logits(replayed)
            replay_loss = F.cross_entropy(logits[:, : self.active] if self.scenario == "CL3" else logits, y_old)
            logs["replay"] = replay_loss
            loss = (loss + t * replay_loss) / (t + 1)
        model_losses = self.replay.loss(t, x, replayed, generator)
        optimizer.zero_grad(set_to_none=True)
        (loss + sum(model_losses.values())).backward()
        optimizer.step()
        out = {"loss": loss.detach().item(), "replay": logs["replay"].detach().item()}
        return out | {k: v.detach().item() for k, v in model_losses.items()}

    def end_task(self, t, task, generator) -> None:
        pass  # the next task's snapshots are taken when it begins

    @torch.no_grad()
    def predict(self, x, task, seen, scenario):
        pred, _ = super().predict(x, task, seen, scenario)
        return pred, (pred // self.k if self.scenario == "CL3" else None)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, meta = super().state()
        tensors |= with_prefix("replay.", self.replay.state_dict())
        tensors |= with_prefix("replay_extra.", self.replay.extra_state())
        if self.previous is not None:
            tensors |= with_prefix("previous.", self.previous.state_dict())
        return tensors, meta

    def load_state(self, tensors, meta) -> None:
        super().load_state(tensors, meta)
        tasks = self.active // self.k
        if isinstance(self.replay, HypernetReplay):
            self.replay.grow(tasks)
        load_module_state(self.replay, without_prefix("replay.", tensors), f"{self.name} replay model")
        self.replay.load_extra_state(without_prefix("replay_extra.", tensors), tasks)
        saved = without_prefix("previous.", tensors)
        self.previous = None
        if saved:
            self.previous = copy.deepcopy(self.model).requires_grad_(False).eval()
            load_module_state(self.previous, saved, f"{self.name} previous classifier")

    def num_parameters(self) -> int:
        return super().num_parameters() + self.replay.num_parameters()
