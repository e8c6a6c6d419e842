"""The review's HyperDNN example on scikit-learn digits (``hyperdnn demo`` / ``make demo``).

Three models with the same target network F(x; theta), an MLP 64-128-64-10:

1. the standard DNN, theta trained directly;
2. theta from a generate-once hypernetwork H(c; phi) (a learned code c, an MLP trunk, one
   linear output head), trained end to end through theta;
3. theta from a chunked hypernetwork with fewer trainable parameters than the target itself
   (parameter efficiency).

Each is trained with the same optimiser, epochs and batches over several seeds. Prints a table
(test accuracy, trainable parameters, seconds) and writes ``results.json``, ``results.md`` and
``learning_curves.png`` (every epoch, and the second half zoomed; the axes follow the data) to
the output folder (default ``runs/demo``)::

    hyperdnn demo [--out DIR] [--epochs N] [--seed S] [--threads T]

Needs the ``apps`` extra (scikit-learn, matplotlib; ``pip install 'hyperdnn[apps]'``). Every
option, the output folder and the extras are checked before anything is written; bad input is
one line naming the option, what was expected and what was given (:class:`UsageError`, exit
status 2 from the command line). The output folder may be absent, empty, or hold only an
earlier demo run's files, which are replaced; files are written atomically with the user's umask.

Runtime: about a minute on 2 CPU cores. Expected: all three above 90% test accuracy; the
generate-once hypernet within about a point of the standard DNN.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from hyperdnn.conditioners import LearnedLatent
from hyperdnn.data import Split, load_digits
from hyperdnn.engine.checkpoint import atomic_write_bytes, atomic_write_text
from hyperdnn.engine.errors import UsageError
from hyperdnn.engine.progress import ProgressBar
from hyperdnn.extras import requirement_message
from hyperdnn.heads import Chunked, Once
from hyperdnn.hypernet import HyperModel, HyperNetwork
from hyperdnn.target import Target
from hyperdnn.trunks import MLP

if TYPE_CHECKING:  # matplotlib is optional and imported where a figure is drawn
    from matplotlib.figure import Figure

__all__ = [
    "DemoConfig",
    "DEMO_REQUIRES",
    "OUTPUTS",
    "MAX_SEED",
    "make_target",
    "build_models",
    "train_model",
    "learning_curves_figure",
    "save_png",
    "check_demo_run",
    "make_output_folder",
    "main",
]

#: optional modules the demos need -> the extra that installs them (checked before anything is written)
DEMO_REQUIRES = {"sklearn": "apps", "matplotlib": "apps"}
#: the files ``hyperdnn demo`` writes; a folder holding only these (an earlier run) is reused
OUTPUTS = ("results.json", "results.md", "learning_curves.png")
#: the largest ``--seed``
MAX_SEED = 2**32 - 1


@dataclass
class DemoConfig:
    epochs: int = 40  # passes over the 1,348 training digits
    batch_size: int = 64
    lr: float = 3e-3  # Adam learning rate, the same for every model
    seeds: tuple[int, ...] = (0, 1, 2)  # every model is trained once per seed
    chunk_size: int = 128  # numbers per chunk of the chunked hypernet
    chunk_embed: int = 24  # chunk embedding width


def make_target() -> nn.Module:
    """The target network F: an MLP 64-128-64-10 (17,226 parameters)."""
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


class _Standard(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = make_target()

    def forward(self, x):
        return self.net(x)


def build_models(cfg: DemoConfig) -> dict[str, Callable[[], nn.Module]]:
    """Model name -> factory (call under a fixed seed)."""

    def once() -> nn.Module:
        target = Target(make_target())
        return HyperModel(HyperNetwork(target, LearnedLatent(32), MLP((64,)), Once()), target)

    def chunked() -> nn.Module:
        target = Target(make_target())
        head = Chunked(cfg.chunk_size, cfg.chunk_embed)
        return HyperModel(HyperNetwork(target, LearnedLatent(8), MLP((16,)), head), target)

    return {
        "standard DNN": _Standard,
        "hypernet, generate once": once,
        "hypernet, chunked": chunked,
    }


def trainable(model: nn.Module) -> list[nn.Parameter]:
    if isinstance(model, HyperModel):
        return model.trainable_parameters()
    return [p for p in model.parameters() if p.requires_grad]


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    try:
        return float((model(x).argmax(1) == y).float().mean())
    finally:
        model.train()


def train_model(
    model: nn.Module, data: Split, cfg: DemoConfig, seed: int, on_epoch: Callable[[], None] | None = None
) -> dict:
    """Train with Adam and cross-entropy; returns final accuracy, per-epoch curve, seconds."""
    g = torch.Generator().manual_seed(seed)
    params = trainable(model)
    try:  # the fused kernel is about 2x faster on CPU for large hypernet heads
        opt = torch.optim.Adam(params, lr=cfg.lr, fused=True)
    except (RuntimeError, TypeError):  # pragma: no cover - older torch or unsupported device
        opt = torch.optim.Adam(params, lr=cfg.lr)
    n = len(data.x_train)
    curve = []
    start = time.perf_counter()
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            loss = nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        curve.append(accuracy(model, data.x_test, data.y_test))
        if on_epoch is not None:
            on_epoch()
    seconds = time.perf_counter() - start
    return {"test_accuracy": curve[-1], "curve": curve, "seconds": seconds}


def _table(rows: list[dict]) -> str:
    head = (
        "| model | test accuracy (mean ± std over seeds) | trainable parameters | target parameters | seconds per run |"
    )
    lines = [head, "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {100 * r['acc_mean']:.2f}% ± {100 * r['acc_std']:.2f} | {r['trainable']:,} | "
            f"{r['target_params']:,} | {r['seconds_mean']:.1f} |"
        )
    return "\n".join(lines)


def learning_curves_figure(
    curves: Mapping[str, Sequence[Sequence[float]]], title: str, dashed: Collection[str] = ()
) -> Figure:
    """Test accuracy per epoch, one line per model: the mean over runs and the min-max band.

    The data set the axes: the left panel shows every epoch from the lowest to the highest
    accuracy reached (the first epochs included), the right one zooms into the second half of
    training, where the models differ by a point or two (only with 4 or more epochs).

    Args:
        curves: label -> runs -> test accuracy in [0, 1] per epoch; every run of a label has
            the same number of epochs.
        title: the figure's title.
        dashed: labels drawn with a dashed line (e.g. a width the model never saw).

    Returns:
        The matplotlib figure (Agg backend); the caller saves and closes it.

    Example::

        >>> from hyperdnn.apps.demo import learning_curves_figure
        >>> fig = learning_curves_figure({"a": [[0.2, 0.8, 0.9, 0.95]]}, "toy")
        >>> [round(v) for v in fig.axes[0].get_ylim()]  # the first epoch's 20% is in view
        [16, 99]
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = max(len(run) for runs in curves.values() for run in runs)
    zoom = epochs >= 4
    fig, axes = plt.subplots(1, 2 if zoom else 1, figsize=(11 if zoom else 6.5, 4), squeeze=False)
    first_zoomed = epochs // 2 + 1  # epochs are numbered from 1
    for label, runs in curves.items():
        acc = 100 * torch.tensor(runs, dtype=torch.float64)  # (runs, epochs)
        mean, lo, hi = acc.mean(0), acc.min(0).values, acc.max(0).values
        x = torch.arange(1, acc.shape[1] + 1)
        style = "--" if label in dashed else "-"
        for ax, keep in zip(axes[0], (slice(None), slice(first_zoomed - 1, None))):
            (line,) = ax.plot(x[keep], mean[keep], style, label=label)
            if acc.shape[0] > 1:
                ax.fill_between(x[keep], lo[keep], hi[keep], alpha=0.2, color=line.get_color())
    for ax in axes[0]:
        lo, hi = ax.get_ylim()  # matplotlib's limits around the data, kept inside 0-100%
        ax.set_ylim(max(lo, -0.5), min(hi, 100.5))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][0].set_title("every epoch")
    axes[0][0].legend(loc="lower right", fontsize=8)
    if zoom:
        axes[0][1].set_title(f"epochs {first_zoomed}-{epochs}, zoomed")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_png(figure: Figure, path: Path) -> None:
    """Save ``figure`` as a PNG at ``path`` atomically (with the user's umask) and close it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=120)
    finally:
        plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def check_demo_run(out: Path, outputs: Sequence[str], *, epochs: int | None, seed: int, threads: int | None) -> None:
    """Everything a demo checks before it writes anything: options, output folder, extras.

    Args:
        out: the output folder. It may be absent (it is created), empty, or hold only the
            files ``outputs`` of an earlier run of the same demo (they are replaced).
        outputs: the names of the files the demo writes.
        epochs: ``None`` (the demo's default) or an int >= 1.
        seed: an int from 0 to :data:`MAX_SEED`.
        threads: ``None`` (one thread) or an int >= 1.

    Raises:
        UsageError: one line naming the option, what was expected and what was given, or the
            packages to install (``"needs scikit-learn, matplotlib: pip install 'hyperdnn[apps]'"``).
    """
    for name, value, lowest in (("--epochs", epochs, 1), ("--threads", threads, 1)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < lowest):
            raise UsageError(f"{name}: expected an int >= {lowest}, got {value!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise UsageError(f"--seed: expected an int from 0 to {MAX_SEED}, got {seed!r}")
    _check_output_folder(out, outputs)
    missing = requirement_message(DEMO_REQUIRES)
    if missing is not None:
        raise UsageError(missing)


def _is_output(entry: Path, outputs: Sequence[str]) -> bool:
    name = entry.name
    # a finished output, or the temporary file of an interrupted atomic write of one
    leftover = any(name.startswith(f".{o}.") and name.endswith(".tmp") for o in outputs)
    return entry.is_file() and (name in outputs or leftover)


def _check_output_folder(out: Path, outputs: Sequence[str]) -> None:
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"--out: expected a folder, got {str(out)!r}, an existing file")
        foreign = sorted(p.name for p in out.iterdir() if not _is_output(p, outputs))
        if foreign:
            shown = ", ".join(repr(n) for n in foreign[:5]) + (
                f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
            )
            raise UsageError(
                f"--out: expected an absent or empty folder, or one holding only an earlier run's "
                f"{', '.join(outputs)}; {str(out)!r} also holds {shown} (choose another --out)"
            )
        if not os.access(out, os.W_OK | os.X_OK):
            raise UsageError(f"--out: expected a writable folder, {str(out)!r} is not writable")
        return
    ancestor = next(p for p in out.parents if p.exists())  # the root or "." at the latest
    if not ancestor.is_dir():
        raise UsageError(f"--out: cannot create the folder {str(out)!r}: {str(ancestor)!r} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"--out: cannot create the folder {str(out)!r}: {str(ancestor)!r} is not writable")


def make_output_folder(out: Path) -> None:
    """Create ``out`` (after :func:`check_demo_run`).

    Raises:
        UsageError: the folder cannot be created after all.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out: cannot create the folder {str(out)!r}: {e.strerror or e}") from None


def main(out: str | None = None, epochs: int | None = None, seed: int = 0, threads: int | None = None) -> int:
    """Run the demo (``hyperdnn demo``); returns the exit status, 0.

    Every argument and the extras are checked before anything is written.

    Args:
        out: output folder (default ``runs/demo``): absent, empty, or from an earlier demo run.
        epochs: training epochs, >= 1 (default ``DemoConfig.epochs``).
        seed: first seed, 0 to :data:`MAX_SEED`; each model trains on seeds ``seed``,
            ``seed + 1``, ``seed + 2``.
        threads: torch threads, >= 1 (default 1; the caller's count is restored afterwards).

    Raises:
        UsageError: bad arguments, an unusable output folder or a missing extra, in one line.
    """
    out_dir = Path(out or "runs/demo")
    check_demo_run(out_dir, OUTPUTS, epochs=epochs, seed=seed, threads=threads)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads is None else threads)
        return _main(out_dir, epochs, seed)
    finally:
        torch.set_num_threads(previous)


def _main(out_dir: Path, epochs: int | None, seed: int) -> int:
    cfg = DemoConfig()
    if epochs is not None:
        cfg.epochs = epochs
    cfg.seeds = tuple(seed + s for s in cfg.seeds)
    make_output_folder(out_dir)
    data = load_digits()
    factories = build_models(cfg)
    target_params = sum(p.numel() for p in make_target().parameters())
    print(
        f"HyperDNN demo: digits ({len(data.x_train)} train / {len(data.x_test)} test), target MLP 64-128-64-10, "
        f"{cfg.epochs} epochs x {len(cfg.seeds)} seeds per model"
    )
    bar = ProgressBar(len(factories) * len(cfg.seeds) * cfg.epochs, desc="training")
    rows = []
    total_start = time.perf_counter()
    for name, make in factories.items():
        runs = []
        for s in cfg.seeds:
            torch.manual_seed(s)
            model = make()
            bar.note(f"{name}, seed {s}")
            runs.append(train_model(model, data, cfg, s, on_epoch=bar.update))
        accs = [r["test_accuracy"] for r in runs]
        rows.append(
            {
                "model": name,
                "acc_mean": statistics.fmean(accs),
                "acc_std": statistics.pstdev(accs),
                "accuracies": accs,
                "seeds": list(cfg.seeds),
                "trainable": sum(p.numel() for p in trainable(model)),
                "target_params": target_params,
                "seconds_mean": statistics.fmean(r["seconds"] for r in runs),
                "curves": [r["curve"] for r in runs],
            }
        )
        if isinstance(model, HyperModel):
            rows[-1]["summary"] = model.summary()
    bar.close()
    table = _table(rows)
    print()
    print(table)
    std_acc = rows[0]["acc_mean"]
    for r in rows[1:]:
        print(
            f"{r['model']}: {100 * (r['acc_mean'] - std_acc):+.2f} points vs the standard DNN, "
            f"{r['trainable'] / target_params:.2f}x the target's parameters"
        )
    results = {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "total_seconds": time.perf_counter() - total_start,
        "models": rows,
    }
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2))
    atomic_write_text(out_dir / "results.md", table + "\n")
    figure = learning_curves_figure(
        {f"{r['model']} ({r['trainable']:,} params)": r["curves"] for r in rows},
        f"HyperDNN on scikit-learn digits: mean and min-max over {len(cfg.seeds)} seeds",
    )
    save_png(figure, out_dir / "learning_curves.png")
    print(f"\nwrote {out_dir}/results.json, results.md, learning_curves.png")
    return 0
