"""Seeds, devices, threads and memory: every random number of a run derives from one seed.

:func:`derive_seed` turns the run's seed and any keys (a method name, a task index, an epoch)
into an independent 63-bit seed, so each piece of work draws from its own
:class:`torch.Generator` and a resumed run draws exactly what an uninterrupted run would.

A run's own seed lies in ``[0, 2**32)`` (:data:`SEED_RANGE`): the range every seeding function
of torch and numpy accepts (measured: ``torch.manual_seed`` takes ``[-2**63, 2**64)``,
``numpy.random.default_rng`` any int ``>= 0``, ``numpy.random.seed`` ``[0, 2**32)``), with room
for recipes that offset it (the permuted task stream seeds ``seed * 100003 + task``).
:func:`memory_limit` is what a recipe's ``check`` compares its memory estimate with.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import numpy as np
import torch

from hyperdnn.engine.errors import UsageError

__all__ = [
    "SEED_RANGE",
    "check_seed",
    "derive_seed",
    "make_generator",
    "seed_everything",
    "resolve_device",
    "set_threads",
    "max_threads",
    "memory_limit",
    "format_bytes",
]

#: the seeds a run accepts: ``SEED_RANGE[0] <= seed < SEED_RANGE[1]``
SEED_RANGE = (0, 2**32)


def check_seed(seed: int, where: str = "--seed") -> int:
    """``seed`` if it is an int in :data:`SEED_RANGE`.

    Raises:
        UsageError: naming ``where``, the range and the value.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not SEED_RANGE[0] <= seed < SEED_RANGE[1]:
        raise UsageError(f"{where}: expected an int in [0, 2**32), got {seed!r}")
    return seed


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


def max_threads() -> int:
    """The most CPU threads a run may ask for: the CPUs of this machine."""
    return max(os.cpu_count() or 1, 1)


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads in torch (0 keeps torch's default).

    Raises:
        UsageError: ``threads`` is negative or more than :func:`max_threads`.
    """
    if not 0 <= threads <= max_threads():
        raise UsageError(f"--threads: expected an int in [0, {max_threads()}] (the CPUs here), got {threads}")
    if threads:
        torch.set_num_threads(threads)


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


def memory_limit() -> int:
    """Bytes of memory a run may use here: the machine's physical memory, or the container's
    limit where that is lower (0 where neither can be read)."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - platforms without sysconf
        physical = 0
    limit = _cgroup_limit()
    if limit is not None and (physical == 0 or limit < physical):
        return limit
    return max(physical, 0)


def format_bytes(n: float) -> str:
    """``n`` bytes for people: ``'512 B'``, ``'3.2 GB'``, ``'4.1e+09 TB'``."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            value = n / size
            return f"{value:.3g} {unit}" if value < 1e4 else f"{value:.2g} {unit}"
    return f"{int(n)} B"
