"""Checkpoints: tensors in safetensors plus a small JSON of training state, written atomically.

A checkpoint folder holds ``ckpt-NNNNNN.safetensors`` (tensors only, never pickled code) and
``latest.json``, which names the current tensor file and holds the JSON training state, with a
SHA-256 of each. Saving writes the tensor file under a temporary name, flushes it to disk and
renames it; then does the same for ``latest.json``; only then is the previous tensor file
removed. A crash at any moment leaves either the old or the new checkpoint complete, never a
mix; what a crash can leave behind (a temporary file, the tensor file of a checkpoint that
never became current) :meth:`Checkpointer.clean` removes. Loading checks both checksums, so a
hand-edited ``latest.json`` is refused as tampered, and :func:`validate_state` checks a state
against the schema a recipe declares for it (a ``TypedDict``).

Files are written with the permissions the user's umask gives any new file (``0644`` under
umask ``022``).

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
import math
import os
import re
import tempfile
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import torch

from hyperdnn.engine.errors import CheckpointError

__all__ = [
    "Checkpoint",
    "Checkpointer",
    "OptimizerState",
    "atomic_write_bytes",
    "atomic_write_text",
    "canonical_json",
    "find_mismatches",
    "validate_state",
    "optimizer_state_tensors",
    "load_optimizer_state",
]

#: format 2: latest.json holds a SHA-256 of the state as well as of the tensor file
FORMAT = 2
_INDEX = "latest.json"
_TENSOR_FILE = re.compile(r"ckpt-\d{6}\.safetensors")
#: the names :func:`atomic_write_bytes` gives its temporary files: ``.<name>.<random>.tmp``
TEMP_FILE = re.compile(r"\..+\.[^.]+\.tmp")


def _umask() -> int:
    """The process's umask (read without changing it where the platform allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # pragma: no cover - platforms without /proc
    os.umask(mask)  # pragma: no cover
    return mask  # pragma: no cover


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
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename.

    The file gets the permissions the umask gives any new file (``0644`` under umask ``022``),
    not the private ``0600`` of the temporary file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_umask())
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


_NONFINITE = "__nonfinite__"


def _tag_nonfinite(value: Any) -> Any:
    """``value`` with each NaN or infinity as ``{"__nonfinite__": "nan" | "inf" | "-inf"}``:
    a diverged loss in a recipe's results is saved (JSON has no such numbers) and comes back
    as the float it was (:func:`_untag_nonfinite`)."""
    if isinstance(value, float) and not math.isfinite(value):
        return {_NONFINITE: repr(value)}
    if isinstance(value, dict):
        return {k: _tag_nonfinite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_tag_nonfinite(v) for v in value]
    return value


def _untag_nonfinite(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and _NONFINITE in value and value[_NONFINITE] in ("nan", "inf", "-inf"):
            return float(value[_NONFINITE])
        return {k: _untag_nonfinite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untag_nonfinite(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    """The one JSON text of ``value`` that checksums are taken over (sorted keys, no spaces).

    Raises:
        ValueError: a NaN or infinity (not JSON). TypeError: a value JSON cannot hold.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: name -> tensor (on CPU), the JSON training state, and the number
    of processes of the run that wrote it (a data-parallel run resumes with as many)."""

    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]
    world_size: int = 1
    #: the SHA-256 of the run's config it was written with (``None``: not recorded)
    config_sha256: str | None = None


class Checkpointer:
    """Saves and loads the checkpoint of one run in ``folder``.

    Args:
        folder: where checkpoints live (created on the first save).
        world_size: the processes of the run (written into every checkpoint, in the tensor
            file's safetensors metadata, which its SHA-256 covers; a checkpoint without it was
            written by one process).
        config_sha256: the SHA-256 of the run's config, written beside ``world_size`` (a
            resume compares it with the config it reads; ``None``: not recorded).

    One process at a time may save into a folder (the run engine holds a lock on the run
    folder for the whole run; in a data-parallel run only rank 0 saves).
    """

    def __init__(self, folder: str | Path, world_size: int = 1, config_sha256: str | None = None):
        self.folder = Path(folder)
        self.world_size = world_size
        self.config_sha256 = config_sha256
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
            state: JSON-serialisable training state (numbers, strings, lists, dicts); a NaN or
                infinity is kept (tagged in the file) and loads as the same float.

        Raises:
            TypeError: a value in ``tensors`` is not a tensor, or ``state`` is not JSON-serialisable.
        """
        from safetensors.torch import save as st_save

        bad = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise TypeError(f"Checkpointer.save: expected tensors, got non-tensor values for {bad}")
        try:
            state_text = canonical_json(_tag_nonfinite(dict(state)))
        except (TypeError, ValueError) as e:
            raise TypeError(f"Checkpointer.save: the state must be JSON-serialisable: {e}") from None
        self.folder.mkdir(parents=True, exist_ok=True)
        blob = st_save(
            {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()},
            metadata={"world_size": str(self.world_size)}
            | ({"config_sha256": self.config_sha256} if self.config_sha256 else {}),
        )
        previous = self._current_file()
        counter = self._next_counter()
        name = f"ckpt-{counter:06d}.safetensors"
        atomic_write_bytes(self.folder / name, blob)
        index = {
            "format": FORMAT,
            "tensors": name,
            "sha256": _sha256(blob),
            "state_sha256": _sha256(state_text.encode("ascii")),
            "state": json.loads(state_text),
        }
        atomic_write_text(self.index_path, json.dumps(index, indent=1))
        if previous is not None and previous != name and (self.folder / previous).exists():
            (self.folder / previous).unlink()

    def load(self) -> Checkpoint:
        """Load the current checkpoint and verify both checksums.

        Raises:
            CheckpointError: there is none, or it is unreadable, corrupt, tampered with (the
                tensor file or the state no longer match their SHA-256) or of another format.
        """
        from safetensors.torch import load as st_load

        where = str(self.folder)
        if not self.exists():
            raise CheckpointError(f"no checkpoint to resume in {where!r} (expected {_INDEX})")
        try:
            index = json.loads(self.index_path.read_bytes().decode("utf-8"))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"corrupt checkpoint in {where!r}: {_INDEX} is unreadable ({e})") from None
        fields = {"format", "tensors", "sha256", "state_sha256", "state"}
        if isinstance(index, dict) and "format" in index and index["format"] != FORMAT:
            raise CheckpointError(
                f"checkpoint in {where!r} has format {index['format']!r}; this version reads format {FORMAT}"
            )
        if not isinstance(index, dict) or not fields <= set(index):
            missing = sorted(fields - set(index)) if isinstance(index, dict) else sorted(fields)
            raise CheckpointError(f"corrupt checkpoint in {where!r}: {_INDEX} lacks {', '.join(missing)}")
        name = index["tensors"]
        if not isinstance(name, str) or not _TENSOR_FILE.fullmatch(name):
            raise CheckpointError(
                f"corrupt checkpoint in {where!r}: bad tensor file name {name!r} (expected ckpt-NNNNNN.safetensors)"
            )
        state = index["state"]
        try:
            state_text = canonical_json(state)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"corrupt checkpoint in {where!r}: the state is not plain JSON ({e})") from None
        if _sha256(state_text.encode("ascii")) != index["state_sha256"]:
            raise CheckpointError(
                f"tampered checkpoint in {where!r}: the state in {_INDEX} does not match its SHA-256 "
                "(it was edited after it was written)"
            )
        try:
            blob = (self.folder / name).read_bytes()
        except OSError as e:
            raise CheckpointError(f"corrupt checkpoint in {where!r}: cannot read {name} ({e.strerror or e})") from None
        if _sha256(blob) != index["sha256"]:
            raise CheckpointError(f"corrupt checkpoint in {where!r}: {name} does not match its SHA-256")
        try:
            tensors = st_load(blob)
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"corrupt checkpoint in {where!r}: {name} is not safetensors ({e})") from None
        if not isinstance(state, dict):
            raise CheckpointError(f"corrupt checkpoint in {where!r}: the state is not a mapping")
        metadata = _metadata(blob)
        world_size = metadata.get("world_size", "1")
        if not world_size.isdigit() or int(world_size) < 1:
            raise CheckpointError(f"corrupt checkpoint in {where!r}: {name} names world size {world_size!r}")
        return Checkpoint(dict(tensors), _untag_nonfinite(state), int(world_size), metadata.get("config_sha256"))

    def clean(self) -> list[Path]:
        """Remove what a crash can leave behind: temporary files, and tensor files other than
        the one the current ``latest.json`` names (all of them when there is no ``latest.json``).

        Returns:
            The removed files. With a ``latest.json`` that cannot be read only temporary files
            are removed.
        """
        if not self.folder.is_dir():
            return []
        current = self._current_file()
        keep_tensors = self.exists() and current is None  # unreadable index: touch no tensor file
        removed = []
        for p in sorted(self.folder.iterdir()):
            stale_tensor = _TENSOR_FILE.fullmatch(p.name) and p.name != current and not keep_tensors
            if p.is_file() and (TEMP_FILE.fullmatch(p.name) or stale_tensor):
                p.unlink()
                removed.append(p)
        return removed

    # ------------------------------------------------------------------ internals
    def _current_file(self) -> str | None:
        try:
            name = json.loads(self.index_path.read_text(encoding="utf-8"))["tensors"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return name if isinstance(name, str) and _TENSOR_FILE.fullmatch(name) else None

    def _next_counter(self) -> int:
        if self._counter is None:
            found = [int(p.name[5:11]) for p in self.folder.glob("ckpt-*.safetensors") if p.name[5:11].isdigit()]
            self._counter = max(found, default=0)
        self._counter += 1
        return self._counter


def _metadata(blob: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file held in ``blob`` (already loaded once, so
    its header is valid: an 8-byte little-endian length, then that many bytes of JSON)."""
    size = int.from_bytes(blob[:8], "little")
    meta = json.loads(blob[8 : 8 + size].decode("utf-8")).get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


# ---------------------------------------------------------------------- state schemas
def _schema_name(schema: Any) -> str:
    if schema is Any:
        return "anything"
    if schema is None or schema is type(None):
        return "null"
    origin = typing.get_origin(schema)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_schema_name(a) for a in typing.get_args(schema))
    if origin is list:
        return "a list"
    if origin is dict or _is_typeddict(schema):
        return "a mapping"
    return getattr(schema, "__name__", repr(schema))


def _is_typeddict(schema: Any) -> bool:
    return isinstance(schema, type) and issubclass(schema, dict) and hasattr(schema, "__required_keys__")


def _given(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'}"
    return f"{value!r} ({type(value).__name__})"


def _check(value: Any, schema: Any, path: str, problems: list[str]) -> None:
    """Append to ``problems`` every place where ``value`` does not match ``schema``."""
    if schema is Any:
        return
    origin = typing.get_origin(schema)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(schema):
            trial: list[str] = []
            _check(value, option, path, trial)
            if not trial:
                return
        problems.append(f"{path}: expected {_schema_name(schema)}, got {_given(value)}")
        return
    if schema is None or schema is type(None):
        ok = value is None
    elif schema is bool:
        ok = isinstance(value, bool)
    elif schema is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif schema is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif schema is str:
        ok = isinstance(value, str)
    elif origin is list:
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {_given(value)}")
            return
        (item,) = typing.get_args(schema)
        for i, v in enumerate(value):
            _check(v, item, f"{path}[{i}]", problems)
        return
    elif origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping, got {_given(value)}")
            return
        _, item = typing.get_args(schema)
        for k, v in value.items():
            _check(v, item, f"{path}[{k!r}]", problems)
        return
    elif _is_typeddict(schema):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping, got {_given(value)}")
            return
        try:
            hints = typing.get_type_hints(schema)
        except NameError as e:
            raise TypeError(f"validate_state: the annotations of {schema.__name__} cannot be resolved ({e})") from None
        missing = sorted(set(schema.__required_keys__) - set(value))
        unknown = sorted(set(value) - set(hints))
        if missing:
            problems.append(f"{path}: missing {', '.join(repr(k) for k in missing)}")
        if unknown:
            problems.append(f"{path}: unexpected {', '.join(repr(k) for k in unknown)}")
        for k, v in value.items():
            if k in hints:
                _check(v, hints[k], f"{path}[{k!r}]", problems)
        return
    else:
        raise TypeError(f"validate_state: unsupported schema {schema!r}")
    if not ok:
        problems.append(f"{path}: expected {_schema_name(schema)}, got {_given(value)}")


def find_mismatches(value: Any, schema: Any, path: str = "state") -> list[str]:
    """Every place where the JSON ``value`` does not match ``schema`` (see
    :func:`validate_state` for the schemas), one line each naming its path (``path`` for
    ``value`` itself), what was expected and what was given; empty when it matches.

    Raises:
        TypeError: ``schema`` is not a supported schema.
    """
    problems: list[str] = []
    _check(value, schema, path, problems)
    return problems


def validate_state(state: Any, schema: Any, where: str = "the state") -> None:
    """Check a JSON state against a schema written as type annotations.

    Args:
        state: the JSON value (as ``json.loads`` returns it).
        schema: a ``TypedDict`` class (its keys: required unless declared in a ``total=False``
            class; unknown keys are errors), ``dict[str, X]``, ``list[X]``, ``X | Y``, ``int``,
            ``float`` (an int or a finite float), ``str``, ``bool``, ``None`` or ``Any``.
        where: names the state in the message.

    Raises:
        CheckpointError: listing every mismatch (the first eight), each with its path, what was
            expected and what was given.

    Example::

        >>> from typing import TypedDict
        >>> class State(TypedDict):
        ...     epoch: int
        ...     losses: list[float]
        >>> validate_state({"epoch": 3, "losses": [0.5]}, State)
        >>> validate_state({"epoch": "3"}, State)
        Traceback (most recent call last):
        ...
        hyperdnn.engine.errors.CheckpointError: the state does not fit: state: missing 'losses'; state['epoch']: expected int, got '3' (str)
    """
    problems = find_mismatches(state, schema)
    if problems:
        more = f"; and {len(problems) - 8} more" if len(problems) > 8 else ""
        raise CheckpointError(f"{where} does not fit: {'; '.join(problems[:8])}{more}")


# ---------------------------------------------------------------------- optimizers
class OptimizerState(TypedDict):
    """The JSON part of an optimizer's state (:func:`optimizer_state_tensors`), as a schema for
    :func:`validate_state`."""

    param_groups: list[dict[str, Any]]
    scalars: dict[str, dict[str, Any]]
    indices: list[int]


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
        CheckpointError: ``meta`` is not an :class:`OptimizerState`, or the saved state does
            not fit the optimizer's parameters.
    """
    validate_state(meta, OptimizerState, "the checkpoint's optimizer state")
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
