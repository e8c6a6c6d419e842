"""Dynamic outputs on scikit-learn digits (``hyperdnn demo --dynamic``).

One :class:`~hyperdnn.dynamic.DynamicHyperNetwork` is trained jointly to generate the weights
of MLPs 64-w-10 of hidden width w = 32, 64 and 128 (every step sums the three losses on the
same batch), and is then also asked for width 96, which it never saw. For reference, a
standard MLP of each width is trained alone with the same optimiser and schedule.

Prints a table (test accuracy per width, for the hypernet and the standard MLP; generated and
trainable parameters) and writes ``results.json``, ``results.md`` and ``dynamic_widths.png``
(test accuracy per epoch and width) to the output folder (default ``runs/demo-dynamic``).

    hyperdnn demo --dynamic [--out DIR] [--epochs N] [--seed S] [--threads T]

Needs the ``apps`` extra (scikit-learn, matplotlib); options, output folder and extras are
checked before anything is written, as for ``hyperdnn demo`` (:mod:`hyperdnn.apps.demo`).

Runtime: about 15 seconds on one CPU core. Without ``--threads`` the demo runs on one thread:
its matrices are tiny (64 x 128 at most), and extra threads only add overhead (ten times
slower on a busy 2-core machine). Expected: every width, the unseen 96 included,
above 90% test accuracy (about 95%), a few points below a standard MLP trained for that one
width alone; a width above 128 is refused with an error naming the limit.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from hyperdnn.apps.demo import check_demo_run, learning_curves_figure, make_output_folder, save_png
from hyperdnn.conditioners import LearnedLatent
from hyperdnn.data import Split, load_digits
from hyperdnn.dynamic import DynamicHyperNetwork
from hyperdnn.engine.checkpoint import atomic_write_text
from hyperdnn.engine.progress import ProgressBar
from hyperdnn.target import Target
from hyperdnn.trunks import MLP

__all__ = ["DynamicConfig", "OUTPUTS", "make_target", "build_hypernet", "train_dynamic", "train_standard", "main"]

#: the files ``hyperdnn demo --dynamic`` writes; a folder holding only these (an earlier run) is reused
OUTPUTS = ("results.json", "results.md", "dynamic_widths.png")


@dataclass
class DynamicConfig:
    train_widths: tuple[int, ...] = (32, 64, 128)  # hidden widths the hypernet is trained on, jointly
    eval_widths: tuple[int, ...] = (32, 64, 96, 128)  # widths evaluated (96: never trained)
    refused_width: int = 256  # a width beyond the limit, to show the error
    epochs: int = 40  # passes over the 1,348 training digits
    batch_size: int = 64
    lr: float = 1e-2  # peak learning rate of the one-cycle schedule (Adam)
    clip: float = 1.0  # gradient-norm clipping
    max_component_size: int = 128  # numbers per generated row: the widest hidden layer served
    latent_dim: int = 16  # the learned code (LearnedLatent) the hypernet reads
    trunk_hidden: tuple[int, ...] = (64,)  # the MLP trunk
    embed_dim: int = 64  # component embedding width
    descriptor_hidden: tuple[int, ...] = (128,)  # MLP from component description to embedding


def make_target(width: int) -> Target:
    """The target network for hidden ``width``: an MLP 64-width-10."""
    return Target(nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10)))


def build_hypernet(cfg: DynamicConfig) -> DynamicHyperNetwork:
    """The dynamic hypernet, calibrated on the training widths' specs."""
    return DynamicHyperNetwork(
        LearnedLatent(cfg.latent_dim),
        MLP(cfg.trunk_hidden),
        max_component_size=cfg.max_component_size,
        embed_dim=cfg.embed_dim,
        descriptor_hidden=cfg.descriptor_hidden,
        example=[make_target(w) for w in cfg.train_widths],
    )


@torch.no_grad()
def _accuracy(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
    return float((forward(x).argmax(1) == y).float().mean())


def _optimiser(params: list[nn.Parameter], cfg: DynamicConfig, steps: int):
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.1)
    return opt, sched


def train_dynamic(
    hnet: DynamicHyperNetwork,
    data: Split,
    cfg: DynamicConfig,
    seed: int,
    on_epoch: Callable[[], None] | None = None,
) -> dict:
    """Train ``hnet`` on every width of ``cfg.train_widths`` at once.

    Returns per-width final test accuracy and per-epoch curves (all of ``cfg.eval_widths``),
    and the seconds spent.
    """
    targets = {w: make_target(w) for w in sorted(set(cfg.train_widths) | set(cfg.eval_widths))}
    n = len(data.x_train)
    steps_per_epoch = -(-n // cfg.batch_size)
    params = [p for p in hnet.parameters() if p.requires_grad]
    opt, sched = _optimiser(params, cfg, cfg.epochs * steps_per_epoch)
    g = torch.Generator().manual_seed(seed)
    curves: dict[int, list[float]] = {w: [] for w in cfg.eval_widths}
    start = time.perf_counter()
    for _ in range(cfg.epochs):
        hnet.train()
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            x, y = data.x_train[idx], data.y_train[idx]
            loss = sum(nn.functional.cross_entropy(targets[w](hnet(None, targets[w]), x), y) for w in cfg.train_widths)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, cfg.clip)
            opt.step()
            sched.step()
        hnet.eval()
        with torch.no_grad():
            for w in cfg.eval_widths:
                weights = hnet(None, targets[w])
                curves[w].append(_accuracy(lambda x, t=targets[w], wt=weights: t(wt, x), data.x_test, data.y_test))
        if on_epoch is not None:
            on_epoch()
    return {
        "test_accuracy": {w: c[-1] for w, c in curves.items()},
        "curves": curves,
        "seconds": time.perf_counter() - start,
    }


def train_standard(width: int, data: Split, cfg: DynamicConfig, seed: int) -> dict:
    """Train a standard MLP 64-width-10 alone, with the same optimiser, schedule and batches."""
    torch.manual_seed(seed)
    net = make_target(width).module
    n = len(data.x_train)
    params = list(net.parameters())
    opt, sched = _optimiser(params, cfg, cfg.epochs * -(-n // cfg.batch_size))
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            loss = nn.functional.cross_entropy(net(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, cfg.clip)
            opt.step()
            sched.step()
    return {"test_accuracy": _accuracy(net, data.x_test, data.y_test), "seconds": time.perf_counter() - start}


def _table(rows: list[dict]) -> str:
    lines = [
        "| hidden width | trained on it | test accuracy, dynamic hypernet | test accuracy, standard MLP alone "
        "| generated parameters |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['width']} | {'yes' if r['trained'] else 'no (unseen)'} | {100 * r['hypernet_accuracy']:.2f}% "
            f"| {100 * r['standard_accuracy']:.2f}% | {r['generated']:,} |"
        )
    return "\n".join(lines)


def main(out: str | None = None, epochs: int | None = None, seed: int = 0, threads: int | None = None) -> int:
    """Run the dynamic-outputs demo (``hyperdnn demo --dynamic``); returns the exit status, 0.

    Every argument and the extras are checked before anything is written.

    Args:
        out: output folder (default ``runs/demo-dynamic``): absent, empty, or from an earlier
            run of this demo.
        epochs: training epochs, >= 1 (default ``DynamicConfig.epochs``).
        seed: random seed, 0 to :data:`hyperdnn.apps.demo.MAX_SEED`.
        threads: torch threads, >= 1 (default 1, see the module notes; the caller's count is
            restored afterwards).

    Raises:
        UsageError: bad arguments, an unusable output folder or a missing extra, in one line.
    """
    out_dir = Path(out or "runs/demo-dynamic")
    check_demo_run(out_dir, OUTPUTS, epochs=epochs, seed=seed, threads=threads)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads is None else threads)
        return _main(out_dir, epochs, seed)
    finally:
        torch.set_num_threads(previous)


def _main(out_dir: Path, epochs: int | None, seed: int) -> int:
    cfg = DynamicConfig()
    if epochs is not None:
        cfg.epochs = epochs
    make_output_folder(out_dir)
    data = load_digits()
    print(
        f"Dynamic outputs: one hypernet for MLPs 64-w-10, trained on w in {list(cfg.train_widths)}, "
        f"evaluated on {list(cfg.eval_widths)}; digits ({len(data.x_train)} train / {len(data.x_test)} test), "
        f"{cfg.epochs} epochs, seed {seed}, {torch.get_num_threads()} thread(s)"
    )
    total_start = time.perf_counter()
    torch.manual_seed(seed)
    hnet = build_hypernet(cfg)
    bar = ProgressBar(cfg.epochs, desc="training")
    run = train_dynamic(hnet, data, cfg, seed, on_epoch=bar.update)
    bar.close()
    standard = {w: train_standard(w, data, cfg, seed) for w in cfg.eval_widths}
    try:
        hnet(None, make_target(cfg.refused_width))
        refusal = None
    except ValueError as e:
        refusal = str(e)
    rows = [
        {
            "width": w,
            "trained": w in cfg.train_widths,
            "hypernet_accuracy": run["test_accuracy"][w],
            "standard_accuracy": standard[w]["test_accuracy"],
            "generated": make_target(w).spec.numel,
        }
        for w in cfg.eval_widths
    ]
    hyper_params = sum(p.numel() for p in hnet.parameters() if p.requires_grad)
    table = _table(rows)
    print()
    print(table)
    generated_trained = sum(make_target(w).spec.numel for w in cfg.train_widths)
    print(
        f"\nhypernet: {hyper_params:,} trainable parameters for {generated_trained:,} generated over the "
        f"{len(cfg.train_widths)} trained widths; {run['seconds']:.1f} s of training"
    )
    if refusal is not None:
        print(f"width {cfg.refused_width}: refused, as it should be: {refusal}")
    low = [r["width"] for r in rows if r["trained"] and r["hypernet_accuracy"] < 0.9]
    results = {
        "config": asdict(cfg),
        "seed": seed,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "hypernet_parameters": hyper_params,
        "widths": rows,
        "curves": {str(w): c for w, c in run["curves"].items()},
        "refused_width": {"width": cfg.refused_width, "error": refusal},
        "train_seconds": run["seconds"],
        "total_seconds": time.perf_counter() - total_start,
    }
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2))
    atomic_write_text(out_dir / "results.md", table + "\n")
    labels = {w: f"width {w}" + ("" if w in cfg.train_widths else " (never trained)") for w in cfg.eval_widths}
    figure = learning_curves_figure(
        {labels[w]: [c] for w, c in run["curves"].items()},
        "One dynamic hypernet, MLPs 64-w-10 on digits",
        dashed=[labels[w] for w in cfg.eval_widths if w not in cfg.train_widths],
    )
    save_png(figure, out_dir / "dynamic_widths.png")
    print(f"wrote {out_dir}/results.json, results.md, dynamic_widths.png")
    if low:
        print(f"note: trained widths {low} ended below 90% test accuracy", file=sys.stderr)
    return 0
