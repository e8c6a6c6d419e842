"""The ``hyperdnn`` command line.

usage:

    hyperdnn demo [--dynamic] [--key value ...]   (the short form of hyperdnn run demo / run dynamic)
    hyperdnn run --list
    hyperdnn run <recipe> [--key value ...] [--config file.yaml]   (hyperdnn run <recipe> --help)

hyperdnn demo is hyperdnn run demo, and hyperdnn demo --dynamic is hyperdnn run dynamic, with
one difference: without --out, a new run goes to runs/<recipe>, or runs/<recipe>-2, -3 ...
when that is taken (so make demo can run again), and --resume continues the last of them.

The core install (torch, numpy) is enough for --help, hyperdnn run --list and
hyperdnn run <recipe> --help; the runs need pip install 'hyperdnn[apps]' and say so, in one
line, before they write anything. Bad input is one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["main", "COMMANDS", "demo_folder"]


def demo_folder(recipe: str, resume: bool, root: str | Path = "runs") -> Path:
    """The run folder of ``hyperdnn demo`` without ``--out``.

    Args:
        recipe: ``"demo"`` or ``"dynamic"``.
        resume: find the folder to continue instead of a new one.
        root: where run folders live.

    Returns:
        For a new run, the first of ``root/recipe``, ``root/recipe-2``, ``root/recipe-3`` ...
        that is absent or empty; for ``resume``, of those folders the unfinished run (no
        ``results.json``) whose checkpoint was written last, else the last existing folder
        (``root/recipe`` when there is none: the engine then says there is no run to resume).
    """
    root = Path(root)

    def candidate(i: int) -> Path:
        return root / (recipe if i == 1 else f"{recipe}-{i}")

    i = 1
    if resume:
        numbered = [(1, root / recipe)] if (root / recipe).exists() else []
        for p in root.glob(f"{recipe}-*") if root.is_dir() else ():
            suffix = p.name[len(recipe) + 1 :]
            if suffix.isdigit() and int(suffix) >= 2:
                numbered.append((int(suffix), p))
        numbered.sort()
        # a new run fills the first gap, so the run to continue is not always the last folder
        unfinished = [
            (latest.stat().st_mtime, n, p)
            for n, p in numbered
            if not (p / "results.json").exists() and (latest := p / "checkpoints" / "latest.json").is_file()
        ]
        if unfinished:
            return max(unfinished)[2]
        return numbered[-1][1] if numbered else candidate(1)
    while candidate(i).exists() and (not candidate(i).is_dir() or any(candidate(i).iterdir())):
        i += 1
    return candidate(i)


def _wants_resume(recipe: str, argv: list[str]) -> bool | None:
    """Whether ``argv`` asks to resume (``None``: it cannot be parsed; ``run`` will say why)."""
    from hyperdnn.engine.config import coerce, describe, parse_argv
    from hyperdnn.engine.errors import UsageError
    from hyperdnn.engine.registry import get_recipe
    from hyperdnn.engine.run import RunOptions

    try:
        fields = describe(get_recipe(recipe).config) + describe(RunOptions)
        values, _ = parse_argv(argv, fields)
        return bool(coerce(values.get("resume", False), next(f for f in fields if f.name == "resume"), "--resume"))
    except UsageError:
        return None


def _demo(argv: list[str]) -> int:
    from hyperdnn.engine.cli import run_command

    bad = [a for a in argv if a.startswith("--dynamic=")]
    prog = "hyperdnn demo --dynamic" if "--dynamic" in argv or bad else "hyperdnn demo"
    if bad:
        print(f"{prog}: error: --dynamic: expected no value, got {bad[0].split('=', 1)[1]!r}", file=sys.stderr)
        return 2
    recipe = "dynamic" if "--dynamic" in argv else "demo"
    rest = [a for a in argv if a != "--dynamic"]
    named = {a.split("=", 1)[0].replace("_", "-") for a in rest}
    if not named & {"-h", "--help", "--out", "--config"}:
        resume = _wants_resume(recipe, rest)
        if resume is not None:
            rest += ["--out", str(demo_folder(recipe, resume))]
    return run_command([recipe, *rest], prog=prog)


def _run(argv: list[str]) -> int:
    from hyperdnn.engine.cli import run_command

    return run_command(argv)


#: command name -> handler(argv) -> exit status
COMMANDS = {"demo": _demo, "run": _run}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hyperdnn``; returns the exit status (0 ok, 2 bad input, 130 interrupted).

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
    except BrokenPipeError:  # output piped into e.g. `hyperdnn run --list | head`: not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
