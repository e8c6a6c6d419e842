"""The train/test tensors of an image data set, and the reproducible split that makes them.

Example::

    >>> import numpy as np
    >>> from hyperdnn.data.split import train_test_split
    >>> s = train_test_split(np.random.rand(10, 4), np.arange(10) % 2, 0.2, seed=0, shape=(1, 2, 2), num_classes=2)
    >>> tuple(s.x_train.shape), tuple(s.x_test.shape), s.y_test.dtype
    ((8, 4), (2, 4), torch.int64)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Split", "train_test_split"]


@dataclass(frozen=True)
class Split:
    """Train/test tensors of a data set.

    Attributes:
        x_train, x_test: float ``(N, features)``, flattened images in ``[0, 1]``.
        y_train, y_test: int64 ``(N,)`` labels in ``[0, num_classes)``.
        shape: the image shape ``(C, H, W)`` of one flattened row.
        num_classes: the number of classes.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    shape: tuple[int, int, int]
    num_classes: int


def train_test_split(
    x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, shape: tuple[int, int, int], num_classes: int
) -> Split:
    """Shuffle ``x (N, F)`` and ``y (N,)`` with ``seed`` and hold out ``round(N * test_fraction)``
    rows as the test set (float32 inputs, int64 labels).

    Raises:
        ValueError: ``test_fraction`` outside ``(0, 1)``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    te, tr = order[:n_test], order[n_test:]
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.int64)
    return Split(xt[tr], yt[tr], xt[te], yt[te], shape, num_classes)
