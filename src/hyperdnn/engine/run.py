"""Running a recipe: run options, the output folder, the :class:`RunContext`, results.

A run folder holds::

    .lock             locked (fcntl.flock) by the run that uses the folder, for the whole run
    config.yaml       the resolved config (recipe options, seed, device, threads)
    log.txt           the log lines
    checkpoints/      latest.json + ckpt-NNNNNN.safetensors while the run is unfinished
                      (see hyperdnn.engine.checkpoint); removed when the run ends
    <name>.safetensors  what the recipe trained (RunContext.save_model, see hyperdnn.engine.model)
    results.json      the recipe's metrics with the seed and config (written at the end)
    summary.md        the recipe's markdown tables
    *.png             the recipe's plots
    tensorboard/      only with --tensorboard

Under ``torchrun`` with several processes (see :mod:`hyperdnn.engine.distributed`) only rank
0 checks, locks and writes the folder; it sends the others the outcome of its checks (and
the checkpoint to resume from), so every process refuses bad input with the same message, and
the others write nothing. A checkpoint records the number of processes that wrote it; a
resumed run must have as many.

A new run refuses a folder that already holds files; ``--resume`` continues the run in the
folder from its last checkpoint with the config saved there, or starts it again from the
beginning (with that config) when it stopped before its first checkpoint. Every check (config,
device, folder and its permissions, the lock, the checkpoint and its state) happens before
anything is written; a run that is refused writes nothing, and a refusal the recipe raises
before its first checkpoint or model undoes what the engine had written. A second run on a
folder in use is refused. A finished run keeps no checkpoints: it can no longer be resumed, and
what it trained is in the files the recipe saved with :meth:`RunContext.save_model`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import nn

from hyperdnn.engine.checkpoint import TEMP_FILE, Checkpoint, Checkpointer, atomic_write_text, validate_state
from hyperdnn.engine.config import build_config, config_to_dict, option
from hyperdnn.engine.distributed import Share, World, close_world, init_world, reduce_on_step, world_from_env, wrap
from hyperdnn.engine.errors import CheckpointError, ConfigError, UsageError
from hyperdnn.engine.model import save_model
from hyperdnn.engine.progress import ProgressBar, RunLogger, tensorboard_available
from hyperdnn.engine.registry import Recipe
from hyperdnn.engine.seeding import (
    check_seed,
    derive_seed,
    make_generator,
    max_threads,
    resolve_device,
    seed_everything,
    set_threads,
)
from hyperdnn.extras import requirement_message

__all__ = ["RunOptions", "RUN_KEYS_FIXED_ON_RESUME", "LOCK_FILE", "Outcome", "RunContext", "execute", "lock_folder"]

#: the file in a run folder that the run using the folder holds an exclusive lock on
LOCK_FILE = ".lock"

#: what every run needs besides the core: config.yaml (pyyaml) and checkpoints (safetensors)
ENGINE_REQUIRES = {"yaml": "apps", "safetensors": "apps"}


@dataclass
class RunOptions:
    """Options every recipe shares (given on the same command line as the recipe's own)."""

    out: str = option("", "output folder (default: runs/<recipe>); a new run needs it empty or absent")
    resume: bool = option(False, "continue the run in --out from its last checkpoint, with its saved config")
    seed: int = option(0, "random seed in [0, 2**32); every random number of the run derives from it")
    device: str = option("cpu", "device: cpu, cuda or cuda:N")
    threads: int = option(0, "CPU threads for torch (0: torch's default)")
    progress: bool = option(True, "show progress bars on a terminal or in a notebook (needs tqdm)")
    tensorboard: bool = option(False, "also write TensorBoard scalars to <out>/tensorboard (needs tensorboard)")
    compile: bool = option(False, "compile the trained modules with torch.compile (recipes that train minibatches)")
    compile_backend: str = option(
        "inductor", "the torch.compile backend of --compile", choices=("inductor", "aot_eager", "eager")
    )

    def __post_init__(self) -> None:
        check_seed(self.seed)
        if not 0 <= self.threads <= max_threads():
            raise ValueError(f"--threads: expected an int in [0, {max_threads()}] (the CPUs here), got {self.threads}")


#: run options that a resumed run must keep (they change the numbers)
RUN_KEYS_FIXED_ON_RESUME = ("seed",)


@dataclass(frozen=True)
class Outcome:
    """What a recipe's ``run`` returns.

    Args:
        metrics: the results, written to results.json: numbers, strings, lists and mappings;
            tensors and numpy values become numbers or lists, a NaN or infinity anywhere
            becomes ``null``, and anything else its ``str``.
        summary: markdown for summary.md (tables of the main numbers).
    """

    metrics: Mapping[str, Any]
    summary: str


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON that ``json.dumps(..., allow_nan=False)`` always accepts."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, torch.Tensor):
        return _jsonable(value.detach().cpu().tolist())
    if isinstance(value, (np.generic, np.ndarray)):
        return _jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return str(value)


class RunContext:
    """Everything a recipe needs from the engine while it runs.

    Attributes:
        recipe: the recipe's name.
        out: the run folder.
        seed: the run's seed.
        device: the ``torch.device`` to compute on.
        options: the :class:`RunOptions`.
        resumed: the checkpoint to continue from, or ``None`` for a fresh run.
        config: the resolved config (what config.yaml holds).
        world: the run's processes (:class:`~hyperdnn.engine.distributed.World`; one
            without torchrun).
        is_main: whether this process is rank 0, the one that logs, shows progress and
            writes the run folder; on the others every write below does nothing.
    """

    def __init__(
        self,
        recipe: str,
        out: Path,
        options: RunOptions,
        device: torch.device,
        logger: RunLogger,
        resumed: Checkpoint | None,
        config: Mapping[str, Any] | None = None,
        world: World | None = None,
    ):
        self.recipe = recipe
        self.out = out
        self.options = options
        self.seed = options.seed
        self.device = device
        self.resumed = resumed
        self.config = dict(config or {})
        self._logger = logger
        self.world = world or World()
        self.is_main = self.world.is_main
        self._share = Share(self.world)
        self._checkpointer = Checkpointer(
            out / "checkpoints", world_size=self.world.size, config_sha256=config_digest(self.config)
        )
        #: whether the run has saved a checkpoint or a model (from then on it is under way)
        self.saved = False

    # -------------------------------------------------------------- logging
    def log(self, message: str) -> None:
        """One compact log line (stdout and log.txt)."""
        self._logger.log(message)

    def scalar(self, tag: str, value: float, step: int) -> None:
        """A TensorBoard scalar (no-op without ``--tensorboard``)."""
        self._logger.scalar(tag, value, step)

    def progress(self, total: int, desc: str) -> ProgressBar:
        """A progress bar over ``total`` steps (silent with ``--progress false``, and on every
        process but rank 0)."""
        return ProgressBar(total, desc, enabled=self.options.progress and self.is_main)

    # -------------------------------------------------------------- data-parallel training
    def prepare(self, module: nn.Module, find_unused: bool = False) -> nn.Module:
        """The module to call in training steps: ``module`` compiled with ``--compile``
        (in place; a :class:`~hyperdnn.HyperModel` through its own
        :meth:`~hyperdnn.HyperModel.compile`), inside ``DistributedDataParallel`` under
        torchrun with several processes, else ``module`` itself.

        Build ``module`` alike on every process (same seed) and on :attr:`device`; train its
        own parameters (the optimizer, ``state_dict`` and evaluation keep using ``module``),
        call the returned module on :meth:`shard` rows, and use a loss that is a mean over
        them.

        Args:
            module: the trained module.
            find_unused: some trained parameters get no gradient in a step (DDP's
                ``find_unused_parameters``).

        Returns:
            The module to call in training steps.
        """
        if self.options.compile:
            module.compile(backend=self.options.compile_backend)  # HyperModel.compile: fullgraph
        return wrap(module, self._share, self.device, find_unused)

    def prepare_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """``optimizer``, made to combine the gradients of every process (weighted by their
        :meth:`shard` rows) right before each step, under torchrun with several processes.

        For training steps that do not run through one module's forward (a learner's own
        ``train_step``, a hypernetwork called several times per step); otherwise prefer
        :meth:`prepare`. Change no gradient between the backward pass and the step.

        Returns:
            ``optimizer`` itself.

        Raises:
            UsageError: ``--compile`` (there is no one module to compile).
        """
        if self.options.compile:
            raise UsageError(
                f"--compile: recipe {self.recipe!r} trains through its optimizer, not one module's forward; "
                "there is nothing to compile: run it without --compile"
            )
        return reduce_on_step(optimizer, self._share)

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This process's rows of a global minibatch: ``index`` itself in a run of one
        process; under torchrun with ``N`` processes a contiguous ``1/N`` of it, and the
        gradients of the :meth:`prepare` d modules are weighted by it, so a step equals a
        single-process step on the whole of ``index`` (see
        :class:`~hyperdnn.engine.distributed.Share`).

        Args:
            index: the global minibatch's row indices, a 1-D integer tensor (the same on
                every process: draw it from :meth:`generator`).

        Returns:
            The row indices to train on here.

        Raises:
            ValueError: ``index`` is not a 1-D integer tensor.
        """
        return self._share.rows(index)

    def barrier(self) -> None:
        """Wait until every process of the run gets here (nothing in a run of one process)."""
        if self.world.parallel:
            import torch.distributed as dist

            dist.barrier()

    # -------------------------------------------------------------- randomness
    def derive_seed(self, *keys: object) -> int:
        """An independent seed for the piece of work named by ``keys``."""
        return derive_seed(self.seed, *keys)

    def generator(self, *keys: object) -> torch.Generator:
        """A CPU generator for the piece of work named by ``keys``."""
        return make_generator(self.seed, *keys)

    def seed_everything(self, *keys: object) -> None:
        """Seed the global generators for the piece of work named by ``keys`` (e.g. before
        building a model whose initialisation draws from the global generator)."""
        seed_everything(self.seed, *keys)

    # -------------------------------------------------------------- files
    def save_checkpoint(self, tensors: Mapping[str, torch.Tensor], state: Mapping[str, Any]) -> None:
        """Atomically replace the run's checkpoint (see :class:`Checkpointer`; rank 0 only)."""
        if self.is_main:
            self._checkpointer.save(tensors, state)
        self.saved = True

    def save_model(self, module: nn.Module, name: str = "model", info: Mapping[str, Any] | None = None) -> Path:
        """Save a trained module as ``<out>/<name>.safetensors`` (atomically), with the run's
        resolved config and ``info`` in its metadata.

        :func:`hyperdnn.engine.load_model` (``load_model(out, name)``) rebuilds it with the
        recipe's ``build_model(config, name, info)`` and loads the weights.

        Args:
            module: what the recipe trained.
            name: the file's stem (letters, digits, ``-`` and ``_``).
            info: JSON-serialisable sizes or choices ``build_model`` needs besides the config.

        Returns:
            The file written (by rank 0 only).
        """
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"save_model: name must be letters, digits, - and _, got {name!r}")
        path = self.path(f"{name}.safetensors")
        if self.is_main:
            save_model(path, module, self.recipe, self.config, info)
        self.saved = True
        return path

    def path(self, name: str) -> Path:
        """A path inside the run folder."""
        return self.out / name

    def write_text(self, name: str, text: str) -> Path:
        """Write a text file in the run folder atomically (rank 0 only)."""
        p = self.path(name)
        if self.is_main:
            atomic_write_text(p, text)
        return p

    def save_figure(self, figure: Any, name: str) -> Path:
        """Save a matplotlib figure as PNG in the run folder (atomically, rank 0 only) and close it."""
        import io

        import matplotlib.pyplot as plt

        if not self.is_main:
            plt.close(figure)
            return self.path(name)
        buf = io.BytesIO()
        figure.savefig(buf, format="png", dpi=120, bbox_inches="tight")
        plt.close(figure)
        from hyperdnn.engine.checkpoint import atomic_write_bytes

        p = self.path(name)
        atomic_write_bytes(p, buf.getvalue())
        return p


# ---------------------------------------------------------------------- the run folder
def lock_folder(out: Path, create: bool = True) -> int | None:
    """Take the exclusive lock of run folder ``out`` (``fcntl.flock`` on ``out/.lock``).

    Args:
        out: the run folder (it must exist).
        create: create ``.lock`` if it is missing; with ``False`` a missing lock file is not
            created and ``None`` is returned.

    Returns:
        The open file descriptor holding the lock (release with ``os.close``), or ``None``
        (no lock file and ``create=False``, or a platform without ``fcntl``).

    Raises:
        UsageError: another process holds the lock (naming the folder), or the lock file
            cannot be opened.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks
        return None
    path = out / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT if create else os.O_RDONLY, 0o666)
    except FileNotFoundError:
        if create:
            raise UsageError(f"cannot create the lock file {str(path)!r}: the folder does not exist") from None
        return None
    except OSError as e:
        raise UsageError(f"cannot open the lock file {str(path)!r}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise UsageError(
            f"run folder {str(out)!r} is in use by another run (it holds {LOCK_FILE}); "
            "wait for that run to end or choose another --out"
        ) from None
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock


def _require_writable(path: Path, what: str) -> None:
    if not os.access(path, os.W_OK | (os.X_OK if path.is_dir() else 0)):
        raise UsageError(f"{what} {str(path)!r} is not writable; fix its permissions or choose another --out")


def _foreign_entries(out: Path) -> list[str]:
    """What a folder holds besides a lock file and temporary files (a new run needs this
    empty; a run killed while writing its config.yaml leaves only those behind, and neither a
    resume nor a new run could then use the folder)."""
    return sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE and not TEMP_FILE.fullmatch(p.name))


def _check_new_folder(out: Path) -> Path | None:
    """Check that a new run can use ``out``; returns the topmost folder it has to create."""
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise UsageError(f"output folder {str(out)!r} is a file; choose another --out")
        if _foreign_entries(out):
            raise UsageError(
                f"output folder {str(out)!r} already holds files; pass --resume to continue the run there "
                "or choose another --out"
            )
        _require_writable(out, "output folder")
        return None
    top, parent = out, out.parent
    while not (parent.exists() or parent.is_symlink()) and parent != parent.parent:
        top, parent = parent, parent.parent
    if not parent.is_dir():
        raise UsageError(f"cannot create output folder {str(out)!r}: {str(parent)!r} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot create output folder {str(out)!r}: {str(parent)!r} is not writable")
    return top


def _check_resume_folder(out: Path) -> None:
    if not (out / "config.yaml").is_file():
        raise UsageError(f"--resume: {str(out)!r} holds no run to resume (no config.yaml)")
    if (out / "results.json").exists():
        raise UsageError(f"--resume: the run in {str(out)!r} already finished (results.json exists)")
    _require_writable(out, "run folder")
    checkpoints = out / "checkpoints"
    if checkpoints.exists() and not checkpoints.is_dir():
        raise UsageError(f"--resume: {str(checkpoints)!r} is not a folder")
    if checkpoints.is_dir():
        _require_writable(checkpoints, "checkpoint folder")
    if (out / "log.txt").exists():
        _require_writable(out / "log.txt", "log file")


def config_digest(resolved: Mapping[str, Any]) -> str:
    """The SHA-256 of a run's resolved config (what config.yaml holds), without ``threads`` and
    ``device``, which a resume may change: checkpoints record it, and a resume compares."""
    kept = {k: v for k, v in resolved.items() if k not in ("threads", "device")}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)  # inf kept as Infinity
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _load_resume_checkpoint(
    recipe: Recipe, config: Any, out: Path, world: World, resolved: Mapping[str, Any] | None = None
) -> Checkpoint | None:
    """The checkpoint to resume from, checked against the run's processes, config, the
    recipe's schema and config; ``None`` when the run stopped before its first checkpoint."""
    checkpointer = Checkpointer(out / "checkpoints")
    if not checkpointer.exists():
        return None
    checkpoint = checkpointer.load()
    recorded = checkpoint.config_sha256
    if recorded is not None and resolved is not None and recorded != config_digest(resolved):
        raise CheckpointError(
            f"--resume: {str(out / 'config.yaml')!r} differs from the config the checkpoint was written with "
            "(it was edited after the run started); restore it, or start a new run with the new settings"
        )
    if checkpoint.world_size != world.size:
        how = (
            "as one process, without torchrun"
            if checkpoint.world_size == 1
            else f"under torchrun --nproc_per_node={checkpoint.world_size} (in all, {checkpoint.world_size} processes)"
        )
        raise CheckpointError(
            f"--resume: the checkpoint in {str(checkpointer.folder)!r} was written by a run of "
            f"{checkpoint.world_size} process(es), this run has {world.size}; resume it {how}"
        )
    where = f"the state of the checkpoint in {str(checkpointer.folder)!r}"
    if recipe.state_schema is not None:
        validate_state(checkpoint.state, recipe.state_schema, where)
    if recipe.check_state is not None:
        try:
            recipe.check_state(config, checkpoint)
        except CheckpointError as e:
            raise CheckpointError(f"{where} does not fit this run: {e}") from None
    return checkpoint


def _snapshot(out: Path) -> dict[str, int]:
    """Relative path -> size (-1 for folders) of everything under ``out``."""
    if not out.is_dir():
        return {}
    return {str(p.relative_to(out)): (-1 if p.is_dir() else p.stat().st_size) for p in out.rglob("*")}


def _undo(out: Path, before: dict[str, int], created: Path | None) -> None:
    """Remove what a refused run wrote: new files and folders, lines appended to log.txt, and
    the folders it created."""
    for p in sorted(out.rglob("*"), key=lambda q: len(q.parts), reverse=True):
        rel = str(p.relative_to(out))
        if rel not in before:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        elif rel == "log.txt" and p.stat().st_size > before[rel]:
            os.truncate(p, before[rel])
    _remove_created_folders(out, created)


def _remove_created_folders(out: Path, created: Path | None) -> None:
    """Remove the folders from ``created`` down to ``out`` that a run made, where still empty."""
    if created is not None:
        folder = out
        while True:
            try:
                folder.rmdir()
            except OSError:
                break
            if folder == created:
                break
            folder = folder.parent


def _clean_stale(out: Path) -> tuple[int, int]:
    """Remove the files a crash left behind (temporary files, checkpoint files that are not
    current); returns how many and their bytes."""
    checkpoints = out / "checkpoints"
    sizes = {p: p.stat().st_size for p in checkpoints.iterdir() if p.is_file()} if checkpoints.is_dir() else {}
    removed = [(p, sizes.get(p, 0)) for p in Checkpointer(checkpoints).clean()]
    for p in sorted(out.iterdir()):
        if p.is_file() and TEMP_FILE.fullmatch(p.name):
            removed.append((p, p.stat().st_size))
            p.unlink()
    return len(removed), sum(size for _, size in removed)


def resolved_config(recipe: Recipe, config: Any, options: RunOptions) -> dict[str, Any]:
    """What config.yaml holds: the recipe's name, its options and the reproducibility options."""
    return {
        "recipe": recipe.name,
        "seed": options.seed,
        "device": options.device,
        "threads": options.threads,
        **config_to_dict(config),
    }


def execute(recipe: Recipe, config: Any, options: RunOptions, stream: TextIO | None = sys.stdout) -> dict[str, Any]:
    """Run ``recipe`` with ``config``: prepare the folder, resume if asked, write the results.

    Started by ``torchrun`` (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` set) with several
    processes, every process calls it: it joins the process group (gloo on the CPU, NCCL on
    CUDA), rank 0 alone writes the folder, and the group is ended when the run ends, also on
    an error.

    Args:
        recipe: the :class:`Recipe`.
        config: an instance of ``recipe.config``.
        options: the :class:`RunOptions`. ``--threads 0`` uses the recipe's ``threads`` (0:
            torch's default); the caller's thread count is restored when the run ends.
        stream: where log lines are echoed (``None``: only log.txt).

    Returns:
        The content written to results.json.

    Raises:
        UsageError: bad input, a module of :data:`ENGINE_REQUIRES` or ``recipe.requires`` that
            does not import, a folder that cannot be used or is in use by another run, a
            checkpoint that is corrupt, tampered with or does not fit (``recipe.state_schema``,
            ``recipe.check_state``). All are found before anything is written; a
            :class:`UsageError` the recipe raises before its first checkpoint or model undoes
            what the engine wrote (new files, lines added to log.txt). Also: a run started by
            torchrun with several processes, or with ``--compile``, for a recipe that does not
            declare ``data_parallel``; a resume with another number of processes than the
            checkpoint's; processes that cannot join each other. Under torchrun rank 0 checks
            the folder and every process raises its refusal alike.
        ConfigError: ``config`` or ``options`` fail the checks the command line applies
            (types, choices, finite floats, ranges).
    """
    missing = requirement_message({**ENGINE_REQUIRES, **recipe.requires})
    if missing is not None:
        raise UsageError(missing)
    if not isinstance(config, recipe.config):
        raise TypeError(f"execute: expected a {recipe.config.__name__} config, got {type(config).__name__}")
    options = _checked_options(options)
    build_config(recipe.config, config_to_dict(config))  # the command line's checks, for a config built in code
    if recipe.check is not None:
        recipe.check(config)
    world = world_from_env()
    _check_parallel(recipe, world, options)
    device = _process_device(resolve_device(options.device), world)
    if options.tensorboard and not tensorboard_available():
        raise UsageError("--tensorboard needs the tensorboard package: pip install 'hyperdnn[tensorboard]'")
    out = Path(options.out or f"runs/{recipe.name}")
    resolved = resolved_config(recipe, config, options)
    created_group = init_world(world, device)
    try:
        if world.is_main:
            try:
                folder = _prepare_folder(recipe, config, options, out, world)
            except BaseException as e:
                _tell_others(world, (e, None))
                raise
            _tell_others(world, (None, folder.resumed))
        else:
            folder = _Folder(None, _hear_from_main(), None, {})
        results = _run(recipe, config, options, out, resolved, folder, device, world, stream)
        if world.parallel:
            import torch.distributed as dist

            dist.barrier()  # rank 0 has written the results
        return results
    finally:
        close_world(created_group)


@dataclass
class _Folder:
    """The run folder as rank 0 found and locked it."""

    lock: int | None
    resumed: Checkpoint | None
    created: Path | None
    before: dict[str, int]


def _prepare_folder(recipe: Recipe, config: Any, options: RunOptions, out: Path, world: World) -> _Folder:
    """Check, lock (and for a new run create) the run folder; load the checkpoint to resume."""
    resumed: Checkpoint | None = None
    created: Path | None = None
    if options.resume:
        lock = lock_folder(out, create=False) if out.is_dir() else None
        try:
            _check_resume_folder(out)
            resumed = _load_resume_checkpoint(recipe, config, out, world, resolved_config(recipe, config, options))
            before = _snapshot(out)
            if lock is None:
                lock = lock_folder(out)
        except BaseException:
            _unlock(lock)
            raise
    else:
        created = _check_new_folder(out)
        before = _snapshot(out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create output folder {str(out)!r}: {e.strerror or e}") from None
        try:
            lock = lock_folder(out)
        except BaseException:
            # another run may have taken the folder since the snapshot: everything new in it
            # is that run's; only the folders this run made go, and only if still empty
            _remove_created_folders(out, created)
            raise
        if _foreign_entries(out):  # another run started here between the check and the lock
            _unlock(lock)
            raise UsageError(f"output folder {str(out)!r} already holds files; choose another --out")
        for p in out.iterdir():  # a killed run's temporary files: the folder is this run's now
            if p.is_file() and TEMP_FILE.fullmatch(p.name):
                p.unlink(missing_ok=True)
    return _Folder(lock, resumed, created, before)


def _tell_others(world: World, payload: tuple[BaseException | None, Checkpoint | None]) -> None:
    """Rank 0 sends the others the outcome of its folder checks: an error to raise alike, or
    the checkpoint to resume from."""
    if not world.parallel:
        return
    import torch.distributed as dist

    error, resumed = payload
    message = None if error is None else (type(error).__name__, " ".join(str(error).split()))
    dist.broadcast_object_list([message, resumed], src=0)


def _hear_from_main() -> Checkpoint | None:
    """What :func:`_tell_others` sent: the checkpoint, or the error rank 0 raised."""
    import torch.distributed as dist

    box: list[Any] = [None, None]
    dist.broadcast_object_list(box, src=0)
    message, resumed = box
    if message is not None:
        kind, text = message
        errors = {"UsageError": UsageError, "ConfigError": ConfigError, "CheckpointError": CheckpointError}
        raise errors.get(kind, RuntimeError)(text if kind in errors else f"rank 0 failed: {kind}: {text}")
    return resumed


def _run(
    recipe: Recipe,
    config: Any,
    options: RunOptions,
    out: Path,
    resolved: dict[str, Any],
    folder: _Folder,
    device: torch.device,
    world: World,
    stream: TextIO | None,
) -> dict[str, Any]:
    """Run the recipe in the prepared folder and write its results (rank 0 writes)."""
    main, resumed = world.is_main, folder.resumed
    logger: RunLogger | None = None
    ctx: RunContext | None = None
    threads = torch.get_num_threads()
    try:
        set_threads(options.threads or min(recipe.threads, max_threads()))
        stale, stale_bytes = _clean_stale(out) if options.resume and main else (0, 0)
        if main and not options.resume:
            import yaml

            atomic_write_text(out / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
        if main:
            (out / "checkpoints").mkdir(exist_ok=True)
            logger = RunLogger(
                out / "log.txt", stream=stream, tensorboard_dir=out / "tensorboard" if options.tensorboard else None
            )
        else:
            logger = RunLogger(None, stream=None)
        ctx = RunContext(recipe.name, out, options, device, logger, resumed, resolved, world)
        setup = f"seed {options.seed}, device {device}, {torch.get_num_threads()} threads"
        if world.parallel:
            setup += f", {world.size} processes (torchrun)"
        if options.compile:
            setup += f", compiled ({options.compile_backend})"
        if resumed is not None:
            ctx.log(f"resuming {recipe.name} in {out} ({setup})")
        elif options.resume:
            ctx.log(
                f"restarting {recipe.name} in {out} from the beginning with its saved config: it stopped before "
                f"its first checkpoint ({setup})"
            )
        else:
            ctx.log(f"starting {recipe.name} in {out} ({setup})")
        if stale:
            ctx.log(f"removed {stale} file(s) a crash left behind ({stale_bytes / 1e6:.1f} MB)")
        start = time.perf_counter()
        outcome = recipe.run(config, ctx)
        if not isinstance(outcome, Outcome):
            raise TypeError(f"recipe {recipe.name!r}: run must return an Outcome, got {type(outcome).__name__}")
        results = {
            "recipe": recipe.name,
            "seed": options.seed,
            "config": resolved,
            "resumed": resumed is not None,
            "wall_time_s": round(time.perf_counter() - start, 2),
            "threads": torch.get_num_threads(),
            "world_size": world.size,
            "versions": {
                "hyperdnn": _version(),
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "metrics": dict(outcome.metrics),
        }
        results = _jsonable(results)
        if main:
            atomic_write_text(out / "summary.md", outcome.summary)
            atomic_write_text(out / "results.json", json.dumps(results, indent=1, allow_nan=False))
            shutil.rmtree(out / "checkpoints", ignore_errors=True)  # a finished run cannot be resumed
        ctx.log(f"done in {results['wall_time_s']:.1f}s: {out / 'results.json'}, {out / 'summary.md'}")
        return results
    except UsageError:
        if main and (ctx is None or not ctx.saved):  # refused before the run got under way: leave the folder as it was
            if logger is not None:
                logger.close()
            _undo(out, folder.before, folder.created)
        raise
    finally:
        if logger is not None:
            logger.close()
        _unlock(folder.lock)
        torch.set_num_threads(threads)  # the caller's thread count again


def _check_parallel(recipe: Recipe, world: World, options: RunOptions) -> None:
    """Refuse torchrun with several processes, and ``--compile``, for a recipe that does not
    train through :meth:`RunContext.prepare` and :meth:`RunContext.shard`."""
    if recipe.data_parallel is True:
        return
    why = recipe.data_parallel or "it does not train through RunContext.prepare and RunContext.shard"
    if world.parallel:
        raise UsageError(
            f"recipe {recipe.name!r} does not train data-parallel ({why}); run it as one process, "
            f"without torchrun (given {world.size} processes)"
        )
    if options.compile:
        raise UsageError(
            f"--compile: recipe {recipe.name!r} has no compiled training ({why}); run it without --compile"
        )


def _process_device(device: torch.device, world: World) -> torch.device:
    """The device of this process: under torchrun with several processes, ``--device cuda``
    means ``cuda:LOCAL_RANK``."""
    if not world.parallel or device.type != "cuda":
        return device
    if device.index is not None:
        raise UsageError(f"--device {device}: under torchrun every process uses cuda:LOCAL_RANK; pass --device cuda")
    if world.local_rank >= torch.cuda.device_count():
        raise UsageError(
            f"torchrun: process with LOCAL_RANK {world.local_rank} has no GPU "
            f"(only {torch.cuda.device_count()} here); use --nproc_per_node <= {torch.cuda.device_count()}"
        )
    return torch.device("cuda", world.local_rank)


def _checked_options(options: RunOptions) -> RunOptions:
    """``options`` checked again (a :class:`RunOptions` may have been changed after it was built)."""
    if not isinstance(options, RunOptions):
        raise TypeError(f"execute: expected RunOptions, got {type(options).__name__}")
    try:
        return dataclasses.replace(options)
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None


def _version() -> str:
    from hyperdnn import __version__

    return __version__


def run_option_fields() -> list[str]:
    """Names of the :class:`RunOptions` fields."""
    return [f.name for f in dataclasses.fields(RunOptions)]
