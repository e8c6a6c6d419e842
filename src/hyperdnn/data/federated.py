"""Non-IID client data for federated learning: each client sees a few classes, in skewed amounts.

:func:`client_splits` deals a :class:`~hyperdnn.data.Split` to clients the way pFedHN
(Shamsian et al., ICML 2021) and FedAvg's pathological split do: every client holds
``classes_per_client`` classes, every class is held by about as many clients, and the
training images of a class are shared among its clients in proportions drawn per client
(log-normal sizes, ``skew`` its standard deviation), so some clients hold several times more
images than others; ``share`` below 1 deals only that share of each class's training images
(clients with little data), the same way. No training image is on two clients. Each client's test set is the test
images of its own classes (its personal distribution); clients that hold the same class
share those test images.

Example::

    >>> import torch
    >>> from hyperdnn.data import Split
    >>> from hyperdnn.data.federated import client_splits
    >>> x, y = torch.rand(400, 4), torch.arange(400) % 10
    >>> clients = client_splits(Split(x[:300], y[:300], x[300:], y[300:], (1, 2, 2), 10), 5, 2, seed=0)
    >>> [sorted(c.classes) for c in clients]
    [[1, 4], [5, 7], [3, 9], [0, 8], [2, 6]]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hyperdnn.data.split import Split

__all__ = ["ClientData", "client_splits", "MIN_IMAGES_PER_CLASS"]

#: the fewest training images of one class a client may hold
MIN_IMAGES_PER_CLASS = 5


@dataclass(frozen=True)
class ClientData:
    """One client's data.

    Attributes:
        classes: the labels it holds.
        x_train, y_train: its training images ``(n, F)`` and labels ``(n,)``.
        x_test, y_test: the test images of its classes ``(m, F)`` and labels ``(m,)``.
    """

    classes: tuple[int, ...]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def _assign_classes(clients: int, per_client: int, num_classes: int, g: torch.Generator) -> list[tuple[int, ...]]:
    """``per_client`` distinct classes per client, every class used about equally often."""
    slots = clients * per_client
    pool = (torch.arange(-(-slots // num_classes) * num_classes) % num_classes)[:slots]
    for _ in range(1000):  # reshuffle until no client holds a class twice
        deal = pool[torch.randperm(slots, generator=g)].view(clients, per_client)
        if all(len(set(row.tolist())) == per_client for row in deal):
            return [tuple(sorted(row.tolist())) for row in deal]
    return [tuple((i * per_client + j) % num_classes for j in range(per_client)) for i in range(clients)]


def client_splits(data: Split, num_clients: int, classes_per_client: int, seed: int, skew: float = 0.7,
                  share: float = 1.0) -> list[ClientData]:  # fmt: skip
    """Deal ``data`` to ``num_clients`` clients of ``classes_per_client`` classes each.

    Args:
        data: the train/test split to deal.
        num_clients: the number of clients, ``>= 1``.
        classes_per_client: the classes each client holds, in ``[1, data.num_classes]``.
        seed: draws the classes and the shares.
        skew: the standard deviation of the clients' log sizes (0: every client of a class holds
            the same share).
        share: the share of each class's training images dealt, in ``(0, 1]`` (the first ones of
            a seeded shuffle; 1: all of them), but never fewer than
            :data:`MIN_IMAGES_PER_CLASS` per client that holds the class.

    Returns:
        One :class:`ClientData` per client, in client order.

    Raises:
        ValueError: a count out of range, or so many clients that a class's training images
            cannot give each of its clients :data:`MIN_IMAGES_PER_CLASS` (the message gives
            the most clients the data can split).
    """
    C = data.num_classes
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise ValueError(f"client_splits: num_clients must be an int >= 1, got {num_clients!r}")
    if isinstance(classes_per_client, bool) or not isinstance(classes_per_client, int) or not 1 <= classes_per_client <= C:  # fmt: skip
        raise ValueError(f"client_splits: classes_per_client must be in [1, {C}], got {classes_per_client!r}")
    if skew < 0:
        raise ValueError(f"client_splits: skew must be >= 0, got {skew!r}")
    if not 0 < share <= 1:
        raise ValueError(f"client_splits: share must be in (0, 1], got {share!r}")
    counts = torch.bincount(data.y_train, minlength=C)
    holders = -(-num_clients * classes_per_client // C)  # the most clients one class is dealt to
    if int(counts.min()) < holders * MIN_IMAGES_PER_CLASS:
        most = int(counts.min()) // MIN_IMAGES_PER_CLASS * C // classes_per_client
        raise ValueError(
            f"{num_clients} clients of {classes_per_client} classes: the smallest class has {int(counts.min())} "
            f"training images, too few for {holders} clients of at least {MIN_IMAGES_PER_CLASS} each; "
            f"at most {most} clients"
        )
    g = torch.Generator().manual_seed(seed)
    classes = _assign_classes(num_clients, classes_per_client, C, g)
    size = (torch.randn(num_clients, generator=g) * skew).exp()  # each client's relative size
    rows: list[list[torch.Tensor]] = [[] for _ in range(num_clients)]
    for c in range(C):
        owners = [i for i in range(num_clients) if c in classes[i]]
        if not owners:
            continue
        idx = (data.y_train == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        idx = idx[: max(MIN_IMAGES_PER_CLASS * len(owners), round(share * len(idx)))]  # share 1: all
        spare = len(idx) - MIN_IMAGES_PER_CLASS * len(owners)
        part = size[owners] / size[owners].sum()
        extra = (part * spare).floor().long()
        extra[0] += spare - int(extra.sum())
        bounds = torch.cumsum(extra + MIN_IMAGES_PER_CLASS, 0).tolist()
        for i, lo, hi in zip(owners, [0, *bounds[:-1]], bounds):
            rows[i].append(idx[lo:hi])
    out = []
    for i in range(num_clients):
        tr = torch.cat(rows[i])
        te = torch.isin(data.y_test, torch.tensor(classes[i]))
        out.append(ClientData(classes[i], data.x_train[tr], data.y_train[tr], data.x_test[te], data.y_test[te]))
    return out
