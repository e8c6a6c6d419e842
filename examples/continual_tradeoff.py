"""Continual learning: final average accuracy against trained parameters, for hypernetworks of
several sizes and separate networks (the accuracy/parameter trade-off of docs/continual.md).

Each point is one ``hyperdnn run continual`` on the default benchmark (PermutedMNIST-10 from the
5,000-image MNIST subset, CL1) with the recipe's defaults except what the point changes: chunked
hypernetworks with a smaller or larger shared chunk generator (``--chunk_size``,
``--chunk_hidden``), the generate-once head (``--head once --trunk 100,50 --hnet_lr 1e-3``, the
default before the chunked one) and separate networks. The parameters are what the run's optimizers trained (results.json's ``parameters``).

    .venv/bin/python examples/continual_tradeoff.py [--seed 0] [--threads 1] [--out runs/continual_tradeoff]

Writes ``<out>/<point>/`` (each run's folder; a finished run is not run again), ``<out>/tradeoff.md``
(the table) and ``<out>/tradeoff.png`` (the plot). Needs the apps extra (matplotlib).

Runtime: about 12 minutes of CPU time with one thread (each chunked point 1.5 to 2 minutes, the
generate-once head about 3). The measured points are in docs/continual.md.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

from hyperdnn.engine import run_command

#: point name -> the options it passes to ``hyperdnn run continual`` (the rest: the defaults)
POINTS: dict[str, list[str]] = {
    "chunked 4000x50": ["--methods", "hnet", "--chunk_size", "4000", "--chunk_hidden", "50"],
    "chunked 4000x100": ["--methods", "hnet", "--chunk_size", "4000", "--chunk_hidden", "100"],
    "chunked 4000x150": ["--methods", "hnet", "--chunk_size", "4000", "--chunk_hidden", "150"],
    "chunked 3000x200": ["--methods", "hnet", "--chunk_size", "3000", "--chunk_hidden", "200"],
    "generate-once": ["--methods", "hnet", "--head", "once", "--trunk", "100,50", "--hnet_lr", "1e-3"],
    "separate networks": ["--methods", "separate"],
}


def run_point(name: str, options: list[str], out: Path, seed: int, threads: int) -> dict:
    """The metrics of one point's run (run now unless its results.json exists)."""
    folder = out / name.replace(" ", "_")
    results = folder / "results.json"
    if not results.exists():
        argv = ["continual", *options, "--seed", str(seed), "--threads", str(threads), "--progress", "false"]
        err = io.StringIO()
        code = run_command([*argv, "--out", str(folder)], stdout=io.StringIO(), stderr=err)
        if code != 0:
            sys.exit(f"{name}: hyperdnn run {' '.join(argv)} failed ({code}): {err.getvalue().strip()}")
    metrics = json.loads(results.read_text())["metrics"]
    method = "separate" if "separate" in metrics["methods"] else "hnet"
    entry = metrics["methods"][method]["CL1"]
    return {
        "point": name,
        "parameters": metrics["parameters"][method],
        "compression": metrics["compression"][method],
        "final_avg": entry["final_avg"],
        "bwt": entry["bwt"],
        "time_s": metrics["time_s"][method],
    }


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Final average accuracy against trained parameters, one marker per point."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    separate = next(r for r in rows if r["point"] == "separate networks")
    ax.axvline(separate["parameters"], color="0.6", linestyle=":", label="parameters of separate networks")
    ax.axhline(100 * separate["final_avg"] - 2, color="0.8", linestyle="--", label="2 points below separate networks")
    for r in rows:
        style = {"separate networks": ("s", "C3"), "generate-once": ("^", "C1")}.get(r["point"], ("o", "C0"))
        ax.scatter(r["parameters"], 100 * r["final_avg"], marker=style[0], color=style[1], zorder=3)
        ax.annotate(
            r["point"], (r["parameters"], 100 * r["final_avg"]), textcoords="offset points", xytext=(5, 4), fontsize=8
        )
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1e6:g} M"))
    ax.set_xticks([0.2e6, 0.5e6, 1e6, 2e6, 5e6])
    ax.set_xlim(min(r["parameters"] for r in rows) / 1.5, max(r["parameters"] for r in rows) * 2.5)
    ax.set_xlabel("trained parameters (log scale)")
    ax.set_ylabel("final average accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="the runs' seed (train/test split, permutations, init)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run")
    parser.add_argument("--out", type=Path, default=Path("runs/continual_tradeoff"), help="output folder")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, options in POINTS.items():
        rows.append(run_point(name, options, args.out, args.seed, args.threads))
        r = rows[-1]
        print(
            f"{name}: {100 * r['final_avg']:.1f}% (BWT {100 * r['bwt']:+.1f}), {r['parameters']:,} parameters",
            flush=True,
        )
    lines = [
        f"PermutedMNIST-10 (mnist5k), CL1, seed {args.seed}",
        "",
        "| point | parameters | params / separate | final avg acc (%) | BWT (points) | time (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['point']} | {r['parameters']:,} | {r['compression']:.2f} | {100 * r['final_avg']:.1f} "
            f"| {'n/a' if r['bwt'] is None else format(100 * r['bwt'], '+.1f')} | {r['time_s']:.0f} |"
        )
    (args.out / "tradeoff.md").write_text("\n".join(lines) + "\n")
    plot(rows, args.out / "tradeoff.png", f"PermutedMNIST-10 (mnist5k), CL1, seed {args.seed}: accuracy vs size")
    print(f"wrote {args.out / 'tradeoff.md'} and {args.out / 'tradeoff.png'}")


if __name__ == "__main__":
    main()
