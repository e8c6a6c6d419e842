"""Out-of-distribution inputs made from a data set: held-out classes, rotated images, noise.

A model trained on some classes of an image data set meets three kinds of inputs it never saw
(the sets of Ovadia et al., 2019, and of the Bayesian-hypernetwork papers):

* :func:`hold_out_classes` - the data set cut into the classes a model learns and the classes it
  never sees (train on 0-4, score 5-9);
* :func:`rotate_images` - images rotated by an angle (a shift of the same digits);
* :func:`noise_images` - images of uniform noise.

Images are flattened rows ``(N, C*H*W)`` as every :class:`~hyperdnn.data.Split` holds them.

Example::

    >>> import torch
    >>> from hyperdnn.data.shift import noise_images, rotate_images
    >>> x = torch.arange(4.0).view(1, 4)                  # one 2x2 image [[0, 1], [2, 3]]
    >>> rotate_images(x, (1, 2, 2), 90).round().view(2, 2)  # a quarter turn counter-clockwise
    tensor([[1., 3.],
            [0., 2.]])
    >>> noise_images(3, (1, 2, 2), torch.Generator().manual_seed(0)).shape
    torch.Size([3, 4])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hyperdnn.data.split import Split

__all__ = ["HeldOut", "hold_out_classes", "rotate_images", "noise_images"]


@dataclass(frozen=True)
class HeldOut:
    """A data set cut by class: the classes a model learns and those it never sees.

    Attributes:
        x_train, y_train: the training rows of the first ``classes`` classes.
        x_test, y_test: the test rows of those classes.
        x_unseen: every row (train and test) of the other classes: out of distribution.
        classes: how many classes are in distribution (labels ``0 .. classes - 1``).
        shape: the image shape ``(C, H, W)`` of a row.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_unseen: torch.Tensor
    classes: int
    shape: tuple[int, int, int]


def hold_out_classes(data: Split, classes: int) -> HeldOut:
    """Keep labels ``0 .. classes - 1`` in distribution; all rows of the rest are unseen.

    Args:
        data: a data set's train/test split.
        classes: ``1 <= classes < data.num_classes``.

    Raises:
        ValueError: ``classes`` outside ``[1, data.num_classes)`` (naming both).
    """
    if isinstance(classes, bool) or not isinstance(classes, int) or not 1 <= classes < data.num_classes:
        raise ValueError(
            f"hold_out_classes: classes must be an int in [1, {data.num_classes}) (the data set has "
            f"{data.num_classes} classes; the rest are held out), got {classes!r}"
        )
    seen_train, seen_test = data.y_train < classes, data.y_test < classes
    unseen = torch.cat([data.x_train[~seen_train], data.x_test[~seen_test]])
    return HeldOut(
        data.x_train[seen_train],
        data.y_train[seen_train],
        data.x_test[seen_test],
        data.y_test[seen_test],
        unseen,
        classes,
        data.shape,
    )


def _check_rows(where: str, x: torch.Tensor, shape: tuple[int, int, int]) -> None:
    if x.dim() != 2 or x.shape[1] != math.prod(shape):
        raise ValueError(f"{where}: expected rows (N, {math.prod(shape)}) of images {shape}, got {tuple(x.shape)}")


def rotate_images(x: torch.Tensor, shape: tuple[int, int, int], degrees: float) -> torch.Tensor:
    """Rotate every image counter-clockwise by ``degrees`` about its centre (bilinear; pixels
    from outside the image are 0). Multiples of 90 degrees on square images move pixels exactly.

    Args:
        x: ``(N, C*H*W)`` flattened images.
        shape: ``(C, H, W)``.
        degrees: the angle.

    Returns:
        ``(N, C*H*W)``, the rotated images.

    Raises:
        ValueError: rows that are not images of ``shape``, or an angle that is not finite.
    """
    _check_rows("rotate_images", x, shape)
    if isinstance(degrees, bool) or not isinstance(degrees, (int, float)) or not math.isfinite(degrees):
        raise ValueError(f"rotate_images: degrees must be a finite number, got {degrees!r}")
    a = math.radians(degrees)
    # the sampling grid maps each output pixel (x right, y down) to the input pixel it reads:
    # for a counter-clockwise turn on screen, the point turned back by the angle
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=x.dtype)
    images = x.view(-1, *shape)
    grid = F.affine_grid(theta.expand(len(images), 2, 3), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False).reshape(len(x), -1)


def noise_images(n: int, shape: tuple[int, int, int], generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` images of independent uniform noise in ``[0, 1)``, flattened: ``(n, C*H*W)``.

    Raises:
        ValueError: ``n < 1``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"noise_images: n must be an int >= 1, got {n!r}")
    return torch.rand(n, math.prod(shape), generator=generator)
