"""Images as implicit neural representations: coordinates in, pixel values out.

An implicit neural representation (INR) of an image is a coordinate network ``F(p; theta)``
(a :func:`~hyperdnn.siren.siren`) whose value at pixel position ``p`` is that pixel's
intensity. A hypernetwork that reads the image and writes ``theta`` represents a new image in
one forward pass (functa, Dupont et al. 2022; Trans-INR, Chen and Wang 2022); the baselines fit
``theta`` per image by gradient descent (:mod:`hyperdnn.baselines.inr_fitting`).

* :func:`coordinate_grid` - the ``(H * W, 2)`` positions of an image's pixels in ``[-1, 1]``,
  in the row-major order of a flattened image.
* :func:`image_values` - ``(B, H * W, C)`` pixel values of a batch of images (flat rows or
  ``(B, C, H, W)``), checked against the image shape.
* :func:`pixels_at` - the values of the pixels nearest to given coordinates (random pixel
  subsets for training), which must lie on the grid's square ``[-1, 1]^2``.

Example::

    >>> import torch
    >>> from hyperdnn.methods.inr import coordinate_grid, image_values, pixels_at
    >>> coordinate_grid(2, 3)
    tensor([[-1., -1.],
            [-1.,  0.],
            [-1.,  1.],
            [ 1., -1.],
            [ 1.,  0.],
            [ 1.,  1.]])
    >>> images = torch.arange(12.0).reshape(2, 6)       # two flattened 1x2x3 images
    >>> image_values(images, (1, 2, 3)).shape
    torch.Size([2, 6, 1])
    >>> pixels_at(images, torch.tensor([[[1.0, 1.0]], [[-1.0, -0.9]]]), (1, 2, 3))   # y, x
    tensor([[[5.]],
    <BLANKLINE>
            [[6.]]])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["coordinate_grid", "image_values", "pixels_at", "check_image_shape"]


def check_image_shape(where: str, shape: Sequence[int]) -> tuple[int, int, int]:
    """``shape`` as ``(C, H, W)`` of ints >= 1 (``ValueError`` naming ``where`` otherwise)."""
    dims = tuple(shape) if isinstance(shape, Sequence) and not isinstance(shape, str) else None
    if dims is None or len(dims) != 3 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"{where}: shape must be (C, H, W) of ints >= 1, got {shape!r}")
    return dims  # type: ignore[return-value]


def coordinate_grid(height: int, width: int) -> torch.Tensor:
    """Pixel positions ``(y, x)`` of an ``height x width`` image, each axis spanning ``[-1, 1]``.

    Args:
        height, width: the image's size (ints >= 1; a size of 1 sits at 0).

    Returns:
        ``(height * width, 2)`` float32, row-major: row ``i * width + j`` is pixel ``(i, j)``, the
        order of a flattened image.

    Raises:
        ValueError: a size that is not an int >= 1.
    """
    bad = {k: v for k, v in (("height", height), ("width", width)) if isinstance(v, bool) or not isinstance(v, int) or v < 1}  # fmt: skip
    if bad:
        raise ValueError(f"coordinate_grid: sizes must be ints >= 1, got {', '.join(f'{k}={v!r}' for k, v in bad.items())}")  # fmt: skip
    ys = torch.linspace(-1.0, 1.0, height) if height > 1 else torch.zeros(1)
    xs = torch.linspace(-1.0, 1.0, width) if width > 1 else torch.zeros(1)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(-1, 2)


def _as_channels_last(where: str, images: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``images`` (``(B, C*H*W)`` or ``(B, C, H, W)``) as ``(B, H*W, C)``, checked."""
    C, H, W = check_image_shape(where, shape)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{where}: images must be a tensor, got {type(images).__name__}")
    flat_ok = images.dim() == 2 and images.shape[1] == C * H * W
    if not (flat_ok or (images.dim() == 4 and tuple(images.shape[1:]) == (C, H, W))):
        raise ValueError(
            f"{where}: expected images of shape (B, {C * H * W}) or (B, {C}, {H}, {W}) for the image shape "
            f"{(C, H, W)}, got {tuple(images.shape)}"
        )
    return images.reshape(images.shape[0], C, H * W).transpose(1, 2)


def image_values(images: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The pixel values of ``images`` in the order of :func:`coordinate_grid`.

    Args:
        images: ``(B, C * H * W)`` flattened images or ``(B, C, H, W)``.
        shape: the image shape ``(C, H, W)``.

    Returns:
        ``(B, H * W, C)``: the values an INR of each image should output on the grid.

    Raises:
        TypeError: ``images`` is not a tensor.
        ValueError: images of another size than ``shape`` says, or a bad ``shape``.
    """
    return _as_channels_last("image_values", images, shape)


def pixels_at(images: torch.Tensor, coords: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The value of the pixel nearest to each coordinate.

    Args:
        images: ``(B, C * H * W)`` or ``(B, C, H, W)``.
        coords: ``(B, P, 2)`` positions ``(y, x)`` in ``[-1, 1]`` (the grid of
            :func:`coordinate_grid`), ``P`` per image.
        shape: the image shape ``(C, H, W)``.

    Returns:
        ``(B, P, C)``: the values there.

    Raises:
        TypeError: an argument that is not a tensor.
        ValueError: images of the wrong size, coordinates of another shape than ``(B, P, 2)``
            or outside ``[-1, 1]`` (the first offending one named), or that are not finite.
    """
    values = _as_channels_last("pixels_at", images, shape)
    _, H, W = check_image_shape("pixels_at", shape)
    if not isinstance(coords, torch.Tensor):
        raise TypeError(f"pixels_at: coords must be a tensor, got {type(coords).__name__}")
    B = values.shape[0]
    if coords.dim() != 3 or coords.shape[0] != B or coords.shape[2] != 2:
        raise ValueError(f"pixels_at: expected coords of shape ({B}, P, 2) for {B} images, got {tuple(coords.shape)}")
    outside = ~(coords.isfinite() & (coords.abs() <= 1.0)).all(-1)
    if bool(outside.any()):
        b, p = (int(i) for i in outside.nonzero()[0])
        raise ValueError(
            f"pixels_at: coordinates must lie on the grid [-1, 1]^2, got {coords[b, p].tolist()} at image {b}, "
            f"point {p} ({int(outside.sum())} outside in all)"
        )
    row = torch.round((coords[..., 0] + 1.0) / 2.0 * (H - 1)).long()
    col = torch.round((coords[..., 1] + 1.0) / 2.0 * (W - 1)).long()
    index = (row * W + col).unsqueeze(-1).expand(-1, -1, values.shape[2])
    return values.gather(1, index)
