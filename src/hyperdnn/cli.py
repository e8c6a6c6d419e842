"""The ``hyperdnn`` command line.

hyperdnn demo [--dynamic] [--out DIR] [--epochs N] [--seed S]
hyperdnn run <recipe> [--key value ...] [--config file.yaml]   (see ``hyperdnn run --list``)
"""

from __future__ import annotations

import argparse
import sys


def _demo(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="hyperdnn demo", description="The review's HyperDNN example on scikit-learn digits."
    )
    p.add_argument("--dynamic", action="store_true", help="one hypernet for MLPs of several widths (dynamic outputs)")
    p.add_argument("--out", default=None, help="output folder (default: runs/demo or runs/demo-dynamic)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the demo's own)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default 1: the demo's matrices are small and more threads only add overhead)",
    )
    args = p.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.dynamic:
        from hyperdnn.apps.dynamic import main as dynamic_main

        return dynamic_main(out=args.out, epochs=args.epochs, seed=args.seed, threads=args.threads)
    from hyperdnn.apps.demo import main as demo_main

    return demo_main(out=args.out, epochs=args.epochs, seed=args.seed, threads=args.threads)


def _run(argv: list[str]) -> int:
    from hyperdnn.engine.cli import run_command

    return run_command(argv)


COMMANDS = {"demo": _demo, "run": _run}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"hyperdnn: unknown command {cmd!r}; expected one of {sorted(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[cmd](rest) or 0
    except BrokenPipeError:  # output piped into e.g. `head`: not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
