"""Running a recipe: run options, the output folder, the :class:`RunContext`, results.

A run folder holds::

    config.yaml       the resolved config (recipe options, seed, device, threads)
    log.txt           the log lines
    checkpoints/      latest.json + ckpt-NNNNNN.safetensors (see hyperdnn.engine.checkpoint)
    results.json      the recipe's metrics with the seed and config (written at the end)
    summary.md        the recipe's markdown tables
    *.png             the recipe's plots
    tensorboard/      only with --tensorboard

A new run refuses a folder that already holds files; ``--resume`` continues the run in the
folder from its last checkpoint with the config saved there.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from hyperdnn.engine.checkpoint import Checkpoint, Checkpointer, atomic_write_text
from hyperdnn.engine.config import config_to_dict, option
from hyperdnn.engine.errors import UsageError
from hyperdnn.engine.progress import ProgressBar, RunLogger, tensorboard_available
from hyperdnn.engine.registry import Recipe
from hyperdnn.engine.seeding import derive_seed, make_generator, resolve_device, seed_everything, set_threads
from hyperdnn.extras import requirement_message

__all__ = ["RunOptions", "RUN_KEYS_FIXED_ON_RESUME", "Outcome", "RunContext", "execute", "prepare_folder"]

#: what every run needs besides the core: config.yaml (pyyaml) and checkpoints (safetensors)
ENGINE_REQUIRES = {"yaml": "apps", "safetensors": "apps"}


@dataclass
class RunOptions:
    """Options every recipe shares (given on the same command line as the recipe's own)."""

    out: str = option("", "output folder (default: runs/<recipe>); a new run needs it empty or absent")
    resume: bool = option(False, "continue the run in --out from its last checkpoint, with its saved config")
    seed: int = option(0, "random seed; every random number of the run derives from it")
    device: str = option("cpu", "device: cpu, cuda or cuda:N")
    threads: int = option(0, "CPU threads for torch (0: torch's default)")
    progress: bool = option(True, "show progress bars (needs tqdm)")
    tensorboard: bool = option(False, "also write TensorBoard scalars to <out>/tensorboard (needs tensorboard)")

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ValueError(f"--threads: expected an int >= 0, got {self.threads}")


#: run options that a resumed run must keep (they change the numbers)
RUN_KEYS_FIXED_ON_RESUME = ("seed",)


@dataclass(frozen=True)
class Outcome:
    """What a recipe's ``run`` returns.

    Args:
        metrics: JSON-serialisable results (NaN becomes ``null`` in results.json).
        summary: markdown for summary.md (tables of the main numbers).
    """

    metrics: Mapping[str, Any]
    summary: str


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    return value


class RunContext:
    """Everything a recipe needs from the engine while it runs.

    Attributes:
        recipe: the recipe's name.
        out: the run folder.
        seed: the run's seed.
        device: the ``torch.device`` to compute on.
        options: the :class:`RunOptions`.
        resumed: the checkpoint to continue from, or ``None`` for a fresh run.
    """

    def __init__(
        self,
        recipe: str,
        out: Path,
        options: RunOptions,
        device: torch.device,
        logger: RunLogger,
        resumed: Checkpoint | None,
    ):
        self.recipe = recipe
        self.out = out
        self.options = options
        self.seed = options.seed
        self.device = device
        self.resumed = resumed
        self._logger = logger
        self._checkpointer = Checkpointer(out / "checkpoints")

    # -------------------------------------------------------------- logging
    def log(self, message: str) -> None:
        """One compact log line (stdout and log.txt)."""
        self._logger.log(message)

    def scalar(self, tag: str, value: float, step: int) -> None:
        """A TensorBoard scalar (no-op without ``--tensorboard``)."""
        self._logger.scalar(tag, value, step)

    def progress(self, total: int, desc: str) -> ProgressBar:
        """A progress bar over ``total`` steps (silent with ``--progress false``)."""
        return ProgressBar(total, desc, enabled=self.options.progress)

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
        """Atomically replace the run's checkpoint (see :class:`Checkpointer`)."""
        self._checkpointer.save(tensors, state)

    def path(self, name: str) -> Path:
        """A path inside the run folder."""
        return self.out / name

    def write_text(self, name: str, text: str) -> Path:
        """Write a text file in the run folder atomically."""
        p = self.path(name)
        atomic_write_text(p, text)
        return p

    def save_figure(self, figure: Any, name: str) -> Path:
        """Save a matplotlib figure as PNG in the run folder (atomically) and close it."""
        import io

        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        figure.savefig(buf, format="png", dpi=120, bbox_inches="tight")
        plt.close(figure)
        from hyperdnn.engine.checkpoint import atomic_write_bytes

        p = self.path(name)
        atomic_write_bytes(p, buf.getvalue())
        return p


def prepare_folder(out: Path, resume: bool) -> None:
    """Check (and for a new run create) the run folder.

    Raises:
        UsageError: a new run's folder already holds files, a resumed run's folder has no run,
            the run there already finished, or the folder is not writable.
    """
    if resume:
        if not (out / "config.yaml").is_file():
            raise UsageError(f"--resume: {str(out)!r} holds no run to resume (no config.yaml)")
        if (out / "results.json").exists():
            raise UsageError(f"--resume: the run in {str(out)!r} already finished (results.json exists)")
    else:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UsageError(
                f"output folder {str(out)!r} already holds files; pass --resume to continue the run there "
                "or choose another --out"
            )
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create output folder {str(out)!r}: {e.strerror or e}") from None
    try:
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise UsageError(f"output folder {str(out)!r} is not writable: {e.strerror or e}") from None


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

    Args:
        recipe: the :class:`Recipe`.
        config: an instance of ``recipe.config``.
        options: the :class:`RunOptions`.
        stream: where log lines are echoed (``None``: only log.txt).

    Returns:
        The content written to results.json.

    Raises:
        UsageError: bad input (checked before anything is written where possible), a module
            of :data:`ENGINE_REQUIRES` or ``recipe.requires`` that does not import.
    """
    missing = requirement_message({**ENGINE_REQUIRES, **recipe.requires})
    if missing is not None:
        raise UsageError(missing)
    if not isinstance(config, recipe.config):
        raise TypeError(f"execute: expected a {recipe.config.__name__} config, got {type(config).__name__}")
    if recipe.check is not None:
        recipe.check(config)
    device = resolve_device(options.device)
    if options.tensorboard and not tensorboard_available():
        raise UsageError("--tensorboard needs the tensorboard package: pip install 'hyperdnn[tensorboard]'")
    out = Path(options.out or f"runs/{recipe.name}")
    prepare_folder(out, options.resume)
    resumed = Checkpointer(out / "checkpoints").load() if options.resume else None
    set_threads(options.threads)
    resolved = resolved_config(recipe, config, options)
    if not options.resume:
        import yaml

        atomic_write_text(out / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    logger = RunLogger(
        out / "log.txt", stream=stream, tensorboard_dir=out / "tensorboard" if options.tensorboard else None
    )
    try:
        ctx = RunContext(recipe.name, out, options, device, logger, resumed)
        verb = "resuming" if resumed is not None else "starting"
        ctx.log(
            f"{verb} {recipe.name} in {out} (seed {options.seed}, device {device}, {torch.get_num_threads()} threads)"
        )
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
            "versions": {
                "hyperdnn": _version(),
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "metrics": _jsonable(dict(outcome.metrics)),
        }
        atomic_write_text(out / "summary.md", outcome.summary)
        atomic_write_text(out / "results.json", json.dumps(results, indent=1, allow_nan=False))
        ctx.log(f"done in {results['wall_time_s']:.1f}s: {out / 'results.json'}, {out / 'summary.md'}")
        return results
    finally:
        logger.close()


def _version() -> str:
    from hyperdnn import __version__

    return __version__


def run_option_fields() -> list[str]:
    """Names of the :class:`RunOptions` fields."""
    return [f.name for f in dataclasses.fields(RunOptions)]
