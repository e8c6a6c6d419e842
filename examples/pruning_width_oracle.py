"""Which width allocations win after retraining: many width vectors at a finished ``hyperdnn run
pruning``'s smallest budget, each trained from scratch several times, against uniform width.

The recipe's criterion asks the searched network to beat uniform width by a point at the
smallest budget. This script asks what any allocation of that budget reaches when it is
retrained, so that the search's result can be read against the best that exists:

* the run's own networks at the smallest budget (uniform width, the evolution's, the random
  search's), the first training of each with exactly the run's seeds (so it reproduces the
  run's number), the others with new initialisations and batch orders;
* ``--candidates`` more width vectors drawn uniformly from the run's width grid among those
  between ``--low`` and the budget (a fraction of the full network's FLOPs), trained the same way.

Every network is trained as the recipe trains them (SGD, momentum 0.9, cosine learning rate,
``retrain_epochs`` epochs, the same data).

    .venv/bin/python examples/pruning_width_oracle.py RUN_FOLDER [--candidates 36] [--inits 3] [--low 0.10] [--threads 1]

Writes ``RUN_FOLDER/width_oracle.json`` and prints a table (best mean first). Runtime: about
4 seconds per training at 12% of the default run's FLOPs with one thread, so about 7 minutes
with the defaults. The measured rows are in docs/pruning.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from hyperdnn.engine.config import build_config, describe
from hyperdnn.engine.seeding import make_generator, seed_everything
from hyperdnn.metrics import accuracy
from hyperdnn.recipes._pruning_report import pct
from hyperdnn.recipes._pruning_train import load_data, sgd_epoch
from hyperdnn.recipes.pruning import PruningConfig

RUN_METHODS = {
    "uniform width": "uniform",
    "PruningNet + evolution": "evolution",
    "PruningNet + random search": "random",
}


def train(cfg: PruningConfig, data, widths: tuple[int, ...], seed: int, key: str, init: int) -> float:
    """Test accuracy of ``widths`` trained from scratch; ``init`` 0 uses the run's own seeds for ``key``."""
    extra = () if init == 0 else ("oracle", init)
    seed_everything(seed, "init", key, *extra)
    net = cfg.cnn.build(widths)
    opt = torch.optim.SGD(net.parameters(), cfg.lr, 0.9, weight_decay=cfg.weight_decay)
    for epoch in range(cfg.retrain_epochs):
        sgd_epoch(net, opt, data, cfg, cfg.lr, epoch, make_generator(seed, "batches", "train", epoch, *extra))
    net.eval()
    with torch.no_grad():
        return accuracy(net(data.x_test), data.y_test)


def fail(message: str) -> None:
    """Bad input: one line on standard error, exit status 2, nothing written."""
    print(message, file=sys.stderr)
    sys.exit(2)


def oracle(run: Path, candidates: int, inits: int, low: float) -> dict:
    """Every row for the finished pruning run in ``run``."""
    saved = json.loads((run / "results.json").read_text())
    if saved.get("recipe") != "pruning":
        fail(f"{run}: expected the folder of a finished 'hyperdnn run pruning', got recipe {saved.get('recipe')!r}")
    fields = {f.name for f in describe(PruningConfig)}
    cfg = build_config(PruningConfig, {k: v for k, v in saved["config"].items() if k in fields})
    seed, cnn, budget = saved["seed"], cfg.cnn, min(cfg.budgets)
    data, full = load_data(cfg, seed), cnn.flops()
    if low >= budget:
        fail(f"--low: expected a fraction below the run's smallest budget {budget:g}, got {low:g}")
    nets: dict[tuple[int, ...], tuple[str, str, float | None]] = {}  # widths -> (source, run key, run's accuracy)
    for r in saved["metrics"]["networks"]:
        if r["budget"] == pct(budget) and r["method"] in RUN_METHODS:
            widths = tuple(int(w) for w in r["widths"].split())
            nets.setdefault(widths, (r["method"], f"train {RUN_METHODS[r['method']]} {pct(budget)}", r["acc"]))
    draws, tries = torch.Generator().manual_seed(seed), 0
    while len(nets) < len(RUN_METHODS) + candidates and tries < 100_000:
        tries += 1
        widths = cnn.level_widths((torch.randint(cfg.levels, (cnn.layers,), generator=draws) + 1).tolist(), cfg.levels)
        if low * full <= cnn.flops(widths) <= budget * full and widths not in nets:
            nets[widths] = ("random width vector", "train candidate " + " ".join(map(str, widths)), None)
    rows = []
    for widths, (source, key, reported) in nets.items():
        accs = [train(cfg, data, widths, seed, key, i) for i in range(inits)]
        rows.append({"widths": list(widths), "source": source, "flops": cnn.flops(widths) / full, "accs": accs,
                     "mean": statistics.mean(accs), "run_acc": reported})  # fmt: skip
        print(
            f"{' '.join(map(str, widths)):>14}  {source:<27} {100 * rows[-1]['mean']:.2f}%", file=sys.stderr, flush=True
        )
    uniform = next(r["mean"] for r in rows if r["source"] == "uniform width")
    rows.sort(key=lambda r: -r["mean"])
    return {"run": str(run), "seed": seed, "budget": budget, "low": low, "inits": inits, "rows": rows,
            "best_minus_uniform": rows[0]["mean"] - uniform,
            "at_least_1_point_above_uniform": sum(r["mean"] >= uniform + 0.01 for r in rows)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the folder of a finished hyperdnn run pruning")
    parser.add_argument(
        "--candidates", type=int, default=36, help="random width vectors besides the run's (default 36)"
    )
    parser.add_argument("--inits", type=int, default=3, help="trainings per network (default 3)")
    parser.add_argument("--low", type=float, default=0.10, help="smallest FLOPs fraction of a candidate (default 0.10)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    if not (args.run / "results.json").is_file():
        parser.error(f"expected the folder of a finished hyperdnn run pruning, got {str(args.run)!r} (no results.json)")
    if args.candidates < 0 or args.inits < 1:
        parser.error(f"--candidates/--inits: expected >= 0 and >= 1, got {args.candidates} and {args.inits}")
    if not 0 <= args.low < 1:
        parser.error(f"--low: expected a fraction in [0, 1), got {args.low}")
    torch.set_num_threads(args.threads)
    result = oracle(args.run, args.candidates, args.inits, args.low)
    (args.run / "width_oracle.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"| widths (seed {result['seed']}, budget {pct(result['budget'])}) | source | FLOPs (% of full) | "
          f"test acc. per training (%) | mean (%) |\n|---|---|---:|---|---:|")  # fmt: skip
    for r in result["rows"]:
        accs = " ".join(f"{100 * a:.1f}" for a in r["accs"])
        print(f"| {' '.join(map(str, r['widths']))} | {r['source']} | {100 * r['flops']:.1f} | {accs} | {100 * r['mean']:.2f} |")  # fmt: skip
    print(f"\nbest mean minus uniform width: {100 * result['best_minus_uniform']:+.2f} points; "
          f"networks at least 1 point above uniform width: {result['at_least_1_point_above_uniform']}")  # fmt: skip


if __name__ == "__main__":
    main()
