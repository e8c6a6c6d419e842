"""The ``hyperdnn`` command line.

usage:
  hyperdnn demo [--dynamic] [--out DIR] [--epochs N] [--seed S] [--threads T]
  hyperdnn run --list
  hyperdnn run <recipe> [--key value ...] [--config file.yaml]   (hyperdnn run <recipe> --help)

The core install (torch, numpy) is enough for --help, hyperdnn run --list and
hyperdnn run <recipe> --help; the demos and recipe runs need pip install 'hyperdnn[apps]' and
say so, in one line, before they write anything. Bad input is one line on stderr and exit
status 2.
"""

from __future__ import annotations

import argparse
import sys

from hyperdnn.engine.errors import UsageError

__all__ = ["main", "COMMANDS"]

#: the options of ``hyperdnn demo`` besides ``--help``
DEMO_OPTIONS = ("--dynamic", "--out", "--epochs", "--seed", "--threads")


def _int_value(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None


def _argument_error(e: argparse.ArgumentError) -> str:
    """argparse's message in the form ``--option: expected ..., got ...``."""
    message = e.message
    if message == "expected one argument":
        message = "expected a value, got none"
    elif message.startswith("ignored explicit argument "):
        message = f"expected no value, got {message[len('ignored explicit argument ') :]}"
    return f"{e.argument_name}: {message}" if e.argument_name else message


def _demo_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hyperdnn demo",
        description="The review's HyperDNN example on scikit-learn digits (needs pip install 'hyperdnn[apps]').",
        exit_on_error=False,
        allow_abbrev=False,
    )
    p.add_argument("--dynamic", action="store_true", help="one hypernet for MLPs of several widths (dynamic outputs)")
    p.add_argument(
        "--out",
        default=None,
        help="output folder, absent, empty or from an earlier run of the same demo "
        "(default: runs/demo or runs/demo-dynamic)",
    )
    p.add_argument("--epochs", type=_int_value, default=None, help="training epochs, >= 1 (default: the demo's own)")
    p.add_argument("--seed", type=_int_value, default=0, help="random seed, 0 to 2**32 - 1 (default 0)")
    p.add_argument(
        "--threads",
        type=_int_value,
        default=None,
        help="torch threads, >= 1 (default 1: the demo's matrices are small and more threads only add overhead)",
    )
    return p


def _demo(argv: list[str]) -> int:
    p = _demo_parser()
    prog = "hyperdnn demo --dynamic" if "--dynamic" in argv else "hyperdnn demo"
    try:
        args, rest = p.parse_known_args(argv)
    except argparse.ArgumentError as e:
        print(f"{prog}: {_argument_error(e)} (see hyperdnn demo --help)", file=sys.stderr)
        return 2
    if rest:
        print(f"{prog}: unexpected arguments {rest}; the options are {', '.join(DEMO_OPTIONS)}", file=sys.stderr)
        return 2
    if args.dynamic:
        from hyperdnn.apps.dynamic import main as run_demo
    else:
        from hyperdnn.apps.demo import main as run_demo
    try:
        return run_demo(out=args.out, epochs=args.epochs, seed=args.seed, threads=args.threads)
    except UsageError as e:
        print(f"{prog}: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


def _run(argv: list[str]) -> int:
    from hyperdnn.engine.cli import run_command

    return run_command(argv)


#: command name -> handler(argv) -> exit status
COMMANDS = {"demo": _demo, "run": _run}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hyperdnn``; returns the exit status (0 ok, 2 bad input).

    Args:
        argv: the arguments after the program name (default ``sys.argv[1:]``).

    Example::

        >>> from hyperdnn.cli import main
        >>> main(["run", "--list"])  # doctest: +ELLIPSIS
        recipes (hyperdnn run <recipe> --help for options):
        ...
        0
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stdout if argv else sys.stderr)
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
