"""Checkpoints: tensors in safetensors plus a small JSON of training state, written atomically.

A checkpoint folder holds ``ckpt-NNNNNN.safetensors`` (tensors only, never pickled code) and
``latest.json``, which names the current tensor file, its SHA-256 and the JSON training state.
Saving writes the tensor file under a temporary name, flushes it to disk and renames it; then
does the same for ``latest.json``; only then is the previous tensor file removed. A crash at
any moment leaves either the old or the new checkpoint complete, never a mix.

Example::

    >>> import tempfile, torch
    >>> from hyperdnn.engine.checkpoint import Checkpointer
    >>> ck = Checkpointer(tempfile.mkdtemp())
    >>> ck.save({"w": torch.ones(2)}, {"epoch": 3})
    >>> ck.load().state["epoch"]
    3
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hyperdnn.engine.errors import CheckpointError

__all__ = [
    "Checkpoint",
    "Checkpointer",
    "atomic_write_bytes",
    "atomic_write_text",
    "optimizer_state_tensors",
    "load_optimizer_state",
]

FORMAT = 1
_INDEX = "latest.json"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: name -> tensor (on CPU) and the JSON training state."""

    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]


class Checkpointer:
    """Saves and loads the checkpoint of one run in ``folder``.

    Args:
        folder: where checkpoints live (created on the first save).
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._counter: int | None = None

    @property
    def index_path(self) -> Path:
        return self.folder / _INDEX

    def exists(self) -> bool:
        """Whether a checkpoint index is present (it may still turn out to be corrupt)."""
        return self.index_path.is_file()

    def save(self, tensors: Mapping[str, torch.Tensor], state: Mapping[str, Any]) -> None:
        """Write a new checkpoint and make it the current one.

        Args:
            tensors: name -> tensor (any device and dtype; stored as contiguous CPU copies).
            state: JSON-serialisable training state (numbers, strings, lists, dicts).

        Raises:
            TypeError: a value in ``tensors`` is not a tensor, or ``state`` is not JSON-serialisable.
        """
        from safetensors.torch import save as st_save

        bad = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise TypeError(f"Checkpointer.save: expected tensors, got non-tensor values for {bad}")
        try:
            state_text = json.dumps(dict(state), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise TypeError(f"Checkpointer.save: the state must be JSON-serialisable (no NaN): {e}") from None
        self.folder.mkdir(parents=True, exist_ok=True)
        blob = st_save({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()})
        previous = self._current_file()
        counter = self._next_counter()
        name = f"ckpt-{counter:06d}.safetensors"
        atomic_write_bytes(self.folder / name, blob)
        index = {
            "format": FORMAT,
            "tensors": name,
            "sha256": hashlib.sha256(blob).hexdigest(),
            "state": json.loads(state_text),
        }
        atomic_write_text(self.index_path, json.dumps(index, indent=1))
        if previous is not None and previous != name and (self.folder / previous).exists():
            (self.folder / previous).unlink()

    def load(self) -> Checkpoint:
        """Load the current checkpoint.

        Raises:
            CheckpointError: there is none, or it is unreadable, corrupt or of another format.
        """
        from safetensors.torch import load as st_load

        where = str(self.folder)
        if not self.exists():
            raise CheckpointError(f"no checkpoint to resume in {where!r} (expected {_INDEX})")
        try:
            index = json.loads(self.index_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"corrupt checkpoint in {where!r}: {_INDEX} is unreadable ({e})") from None
        if not isinstance(index, dict) or not {"format", "tensors", "sha256", "state"} <= set(index):
            raise CheckpointError(f"corrupt checkpoint in {where!r}: {_INDEX} lacks format/tensors/sha256/state")
        if index["format"] != FORMAT:
            raise CheckpointError(
                f"checkpoint in {where!r} has format {index['format']!r}; this version reads format {FORMAT}"
            )
        name = str(index["tensors"])
        if "/" in name or "\\" in name or name.startswith("."):
            raise CheckpointError(f"corrupt checkpoint in {where!r}: bad tensor file name {name!r}")
        try:
            blob = (self.folder / name).read_bytes()
        except OSError as e:
            raise CheckpointError(f"corrupt checkpoint in {where!r}: cannot read {name} ({e.strerror or e})") from None
        if hashlib.sha256(blob).hexdigest() != index["sha256"]:
            raise CheckpointError(f"corrupt checkpoint in {where!r}: {name} does not match its SHA-256")
        try:
            tensors = st_load(blob)
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"corrupt checkpoint in {where!r}: {name} is not safetensors ({e})") from None
        if not isinstance(index["state"], dict):
            raise CheckpointError(f"corrupt checkpoint in {where!r}: the state is not a mapping")
        return Checkpoint(dict(tensors), index["state"])

    # ------------------------------------------------------------------ internals
    def _current_file(self) -> str | None:
        try:
            return str(json.loads(self.index_path.read_text(encoding="utf-8"))["tensors"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _next_counter(self) -> int:
        if self._counter is None:
            found = [int(p.name[5:11]) for p in self.folder.glob("ckpt-*.safetensors") if p.name[5:11].isdigit()]
            self._counter = max(found, default=0)
        self._counter += 1
        return self._counter


# ---------------------------------------------------------------------- optimizers
def optimizer_state_tensors(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's ``state_dict`` into tensors and a JSON part.

    Args:
        optimizer: any ``torch.optim`` optimizer whose per-parameter state holds tensors or
            numbers.
        prefix: prepended to every tensor name (e.g. ``"optim."``).

    Returns:
        (name -> tensor, JSON-serialisable rest) for :func:`load_optimizer_state`. The tensors
        are the optimizer's live state (not copies).
    """
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars, "indices": [int(i) for i in sd["state"]]}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], prefix: str
) -> None:
    """Restore what :func:`optimizer_state_tensors` saved into ``optimizer``.

    Raises:
        CheckpointError: the saved state does not fit the optimizer's parameters.
    """
    state: dict[int, dict[str, Any]] = {}
    for idx in meta["indices"]:
        entry: dict[str, Any] = dict(meta["scalars"].get(str(idx), {}))
        head = f"{prefix}{idx}."
        for name, value in tensors.items():
            if name.startswith(head):
                entry[name[len(head) :]] = value.clone()  # never alias the caller's tensors
        state[int(idx)] = entry
    groups = [dict(g) for g in meta["param_groups"]]
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"the checkpoint's optimizer state does not fit this optimizer: {e}") from None
