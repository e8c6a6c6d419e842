"""Full MNIST (or Fashion-MNIST) from local idx files: the torchvision layout, never a download.

:func:`load_mnist_idx` reads the four standard files from ``root`` or from
``root/MNIST/raw`` (where ``torchvision.datasets.MNIST(root, download=True)`` puts them),
plain or gzip-compressed::

    train-images-idx3-ubyte  train-labels-idx1-ubyte  t10k-images-idx3-ubyte  t10k-labels-idx1-ubyte

:func:`read_idx` parses one idx file (the format is big-endian: two zero bytes, a type code,
the number of dims, each dim as a 32-bit int, then the data).

The data set is registered as ``mnist`` in :data:`~hyperdnn.data.DATASETS` (its ``root`` is the
folder of the files, ``"."`` when empty; the split is the official one, whatever the seed).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from hyperdnn.data.registry import Dataset, register_dataset
from hyperdnn.data.split import Split

__all__ = ["read_idx", "find_mnist_files", "load_mnist_idx", "MNIST_FILES"]

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (optionally ``.gz``) into an array of its stored shape.

    Raises:
        ValueError: the file is not a well-formed idx file (bad magic, type or size).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an idx file (expected magic 0x0000TTDD, got {data[:4].hex() or 'nothing'})")
    code, ndim = data[2], data[3]
    if code not in _IDX_TYPES:
        raise ValueError(f"{path}: unknown idx data type 0x{code:02x}; expected one of {sorted(_IDX_TYPES)}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated idx header ({len(data)} bytes for {ndim} dims)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_TYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(f"{path}: idx dims {dims} need {expected} data bytes, the file has {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def find_mnist_files(root: str | Path) -> dict[str, Path]:
    """Locate the four MNIST idx files under ``root`` or ``root/MNIST/raw`` (plain or ``.gz``).

    Raises:
        FileNotFoundError: naming the folders searched and the files missing.
    """
    root = Path(root)
    folders = [root, root / "MNIST" / "raw"]
    for folder in folders:
        found = {}
        for key, name in MNIST_FILES.items():
            for candidate in (folder / name, folder / (name + ".gz")):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(MNIST_FILES):
            return found
    raise FileNotFoundError(
        f"MNIST idx files not found in {str(folders[0])!r} or {str(folders[1])!r}; expected "
        f"{', '.join(MNIST_FILES.values())} (optionally .gz), e.g. from torchvision.datasets.MNIST(root, download=True)"
    )


def load_mnist_idx(root: str | Path) -> Split:
    """MNIST from local idx files: the official 60,000/10,000 train/test split, pixels in [0, 1].

    Args:
        root: a folder holding the four idx files, or a torchvision root (``root/MNIST/raw``).

    Returns:
        A :class:`~hyperdnn.data.Split` with ``x_*`` float ``(N, 784)``, ``y_*`` int64 ``(N,)``.

    Raises:
        FileNotFoundError: the files are not there.
        ValueError: a file is malformed, or images and labels disagree.
    """
    files = find_mnist_files(root)
    parts = {key: read_idx(path) for key, path in files.items()}
    for side in ("train", "test"):
        images, labels = parts[f"{side}_images"], parts[f"{side}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"MNIST {side}: expected images (N, H, W) and labels (N,), got {images.shape} and {labels.shape}"
            )
    h, w = parts["train_images"].shape[1:]
    if parts["test_images"].shape[1:] != (h, w):
        raise ValueError(f"MNIST: train images are {h}x{w} but test images are {parts['test_images'].shape[1:]}")

    def x(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a.reshape(a.shape[0], -1).astype(np.float32) / 255.0)

    def y(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a.astype(np.int64))

    num_classes = int(max(parts["train_labels"].max(initial=0), parts["test_labels"].max(initial=0))) + 1
    return Split(
        x(parts["train_images"]),
        y(parts["train_labels"]),
        x(parts["test_images"]),
        y(parts["test_labels"]),
        (1, int(h), int(w)),
        max(num_classes, 10),
    )


def _locate(root: str) -> None:
    find_mnist_files(root or ".")


register_dataset(
    Dataset(
        "mnist",
        "full MNIST from local idx files (--data_root; a torchvision root works)",
        lambda seed, root: load_mnist_idx(root or "."),
        (1, 28, 28),
        10,
        70_000,
        locate=_locate,
    )
)
