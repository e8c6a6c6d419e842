"""Personalised federated learning with a hypernetwork on the server (pFedHN; Shamsian, Navon,
Fetaya and Chechik, ICML 2021).

The server holds a hypernetwork ``h(v_i; phi)`` and one learned embedding ``v_i`` per client.
A round: the server sends client ``i`` its personal weights ``theta_i = h(v_i; phi)``; the client
trains them locally (:func:`local_sgd`) and returns the change ``delta_i = theta_i' - theta_i``;
the server treats ``-delta_i`` as the gradient of the client's loss at ``theta_i`` and turns it into
an update of ``phi`` and ``v_i`` by the chain rule, ``grad = (d theta_i / d (phi, v_i))^T (-delta_i)``
(one vector-Jacobian product, :meth:`PFedHN.step`). Only ``theta_i`` and ``delta_i`` travel: the
hypernetwork's size does not change what is sent.

pFedHN-PC: the hypernetwork generates only part of the target (the feature extractor); the rest
(the classifier head) is each client's own and never leaves it (``select``).

A client that joins after training gets a new embedding; with the hypernetwork frozen
(:meth:`PFedHN.freeze`) the same rounds learn only that embedding.

Example (two clients, one round each)::

    >>> import torch
    >>> from hyperdnn.methods.pfedhn import PFedHN, local_sgd
    >>> from hyperdnn.networks import mlp
    >>> server = PFedHN(mlp(4, (8,), 2), num_clients=2, embed_dim=3, hidden=(16,), lr=1e-2)
    >>> x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    >>> for client in (0, 1):
    ...     sent = server.generate(client)
    ...     trained = local_sgd(server.client_module(sent), x, y, steps=5, lr=0.1, batch_size=8,
    ...                         generator=torch.Generator().manual_seed(client))
    ...     moved = server.step(client, {k: trained[k] - sent[k] for k in sent})
    >>> sorted(server.generate(0))
    ['0.bias', '0.weight', '2.bias', '2.weight']
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn.conditioners import TaskEmbedding
from hyperdnn.heads import Once
from hyperdnn.hypernet import HyperNetwork
from hyperdnn.target import Target
from hyperdnn.trunks import MLP

__all__ = ["PFedHN", "local_sgd", "accuracy"]


class PFedHN(nn.Module):
    """The pFedHN server state: a hypernetwork from client embeddings to target weights.

    Args:
        net: the target network every client runs (its initial values are not used for the
            generated tensors; the non-generated ones are the clients' starting head).
        num_clients: embeddings at the start (clients ``0 .. num_clients - 1``).
        embed_dim: the width of each client's embedding.
        hidden: hidden widths of the hypernetwork's MLP trunk.
        lr: Adam learning rate of the hypernetwork and the embeddings.
        select: names of ``net``'s parameters to generate (``None``: all of them; pFedHN-PC
            passes every tensor but the classifier head's).

    Raises:
        ValueError: a count or width below 1, a ``select`` name ``net`` does not have.
    """

    def __init__(self, net: nn.Module, num_clients: int, embed_dim: int, hidden: Sequence[int], lr: float,
                 select: Sequence[str] | None = None):  # fmt: skip
        super().__init__()
        self.net = net
        self.target = Target(net, select=list(select) if select is not None else None)
        self.hnet = HyperNetwork(self.target, TaskEmbedding(num_clients, embed_dim), MLP(tuple(hidden)), Once())
        self.lr = lr
        self.optimizer = torch.optim.Adam(self.hnet.parameters(), lr=lr)

    @property
    def names(self) -> list[str]:
        """The generated tensors' names, in the target's order."""
        return list(self.target.spec.names)

    @property
    def num_clients(self) -> int:
        """The clients with an embedding."""
        return len(self.hnet.conditioner.embeddings)

    def generate(self, client: int) -> dict[str, torch.Tensor]:
        """Client ``client``'s personal weights ``theta_i`` (detached copies, name -> tensor)."""
        with torch.no_grad():
            return {k: v.detach().clone() for k, v in self.hnet(client).items()}

    def client_module(self, weights: Mapping[str, torch.Tensor]) -> nn.Module:
        """A copy of the target with ``weights`` loaded (the client's starting point)."""
        module = copy.deepcopy(self.net)
        module.load_state_dict(dict(weights), strict=False)
        return module

    def step(self, client: int, delta: Mapping[str, torch.Tensor]) -> float:
        """Update the hypernetwork (or, frozen, only the embedding) from client ``client``'s change.

        Args:
            client: the client's id.
            delta: name -> ``theta_i' - theta_i``, for every generated tensor.

        Returns:
            The norm of ``delta`` (how far the client moved).

        Raises:
            KeyError: ``delta`` lacks generated tensors or has others (all of them named).
        """
        names = self.names
        if sorted(delta) != sorted(names):
            raise KeyError(f"PFedHN.step: expected deltas for {sorted(names)}, got {sorted(delta)}")
        embeddings = self.hnet.conditioner.embeddings
        if (
            isinstance(client, int)
            and 0 <= client < len(embeddings)
            and not embeddings[client].requires_grad
            and not any(p.requires_grad for n, p in self.hnet.named_parameters() if not n.startswith("conditioner."))
        ):  # frozen, and not one of the clients added since
            trainable = [i for i, e in enumerate(embeddings) if e.requires_grad]
            raise ValueError(
                f"PFedHN.step: the hypernetwork is frozen (freeze) and only the clients added since train "
                f"({trainable}); got client {client}"
            )
        theta = self.hnet(client)
        self.optimizer.zero_grad()
        torch.autograd.backward([theta[k] for k in names], [-delta[k].to(theta[k].dtype) for k in names])
        self.optimizer.step()
        return float(torch.sqrt(sum((d.double() ** 2).sum() for d in delta.values())))

    def freeze(self, count: int, lr: float, generator: torch.Generator | None = None) -> list[int]:
        """Add ``count`` client embeddings and train only them from now on, with Adam at ``lr``
        (clients that join after training: the hypernetwork is frozen).

        Returns:
            The new clients' ids.
        """
        ids = self.hnet.conditioner.add_tasks(count, generator=generator) if count else []
        for p in self.hnet.parameters():
            p.requires_grad_(False)
        new = [self.hnet.conditioner.embeddings[i] for i in ids]
        for p in new:
            p.requires_grad_(True)
        self.optimizer = torch.optim.Adam(new, lr=lr) if new else self.optimizer
        return list(ids)


def local_sgd(module: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, batch_size: int,
              generator: torch.Generator, momentum: float = 0.9) -> dict[str, torch.Tensor]:  # fmt: skip
    """Train ``module`` in place on ``(x, y)`` for ``steps`` minibatches of SGD with momentum.

    Args:
        module: a classifier ``(N, F) -> (N, C)``.
        x, y: the client's images ``(n, F)`` and labels ``(n,)``.
        steps: minibatches (0: no training).
        lr, momentum: SGD's settings.
        batch_size: images per minibatch (the batches walk through shuffled data, reshuffled
            each pass).
        generator: draws the shuffles.

    Returns:
        The trained state, name -> detached tensor.
    """
    opt = torch.optim.SGD(module.parameters(), lr=lr, momentum=momentum)
    module.train()
    order: list[torch.Tensor] = []
    for _ in range(steps):
        if not order:
            order = list(torch.randperm(len(x), generator=generator).split(batch_size))
        rows = order.pop(0)
        loss = F.cross_entropy(module(x[rows]), y[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@torch.no_grad()
def accuracy(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The share of ``x (n, F)`` that ``module`` labels ``y (n,)``."""
    module.eval()
    return float((module(x).argmax(-1) == y).float().mean()) if len(y) else float("nan")
