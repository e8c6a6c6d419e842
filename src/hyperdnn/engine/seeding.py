"""Seeds, devices and threads: every random number of a run derives from one seed.

:func:`derive_seed` turns the run's seed and any keys (a method name, a task index, an epoch)
into an independent 63-bit seed, so each piece of work draws from its own
:class:`torch.Generator` and a resumed run draws exactly what an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

from hyperdnn.engine.errors import UsageError

__all__ = ["derive_seed", "make_generator", "seed_everything", "resolve_device", "set_threads"]


def derive_seed(seed: int, *keys: object) -> int:
    """A seed in ``[0, 2**63)`` determined by ``seed`` and ``keys`` (stable across runs and platforms)."""
    text = repr((int(seed),) + tuple(str(k) for k in keys)).encode("utf-8")
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def make_generator(seed: int, *keys: object) -> torch.Generator:
    """A CPU :class:`torch.Generator` seeded with ``derive_seed(seed, *keys)``."""
    return torch.Generator().manual_seed(derive_seed(seed, *keys))


def seed_everything(seed: int, *keys: object) -> None:
    """Seed torch's, numpy's and Python's global generators from ``seed`` and ``keys``."""
    s = derive_seed(seed, *keys)
    torch.manual_seed(s)
    np.random.seed(s % 2**32)
    random.seed(s)


def resolve_device(name: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a device that exists here.

    Raises:
        UsageError: an unknown name, or CUDA asked for where it is not available.
    """
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device: expected cpu, cuda or cuda:N, got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device: expected cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads in torch (0 keeps torch's default)."""
    if threads < 0:
        raise UsageError(f"--threads: expected an int >= 0, got {threads}")
    if threads:
        torch.set_num_threads(threads)
