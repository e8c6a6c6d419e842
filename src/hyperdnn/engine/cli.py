"""``hyperdnn run``: list, describe and run recipes.

    hyperdnn run --list
    hyperdnn run <recipe> --help
    hyperdnn run <recipe> [--key value ...] [--config file.yaml] [--out DIR] [--resume]

Values come from the recipe's defaults, then the ``--config`` YAML file, then the command
line. Bad input (an unknown recipe or option, a wrong type or a value out of range, data or
memory that cannot supply the request, a corrupt or tampered checkpoint, an unusable output
folder or one in use by another run) prints one line and exits with status 2, and nothing is
written.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from hyperdnn.engine.config import (
    FieldInfo,
    build_config,
    coerce,
    describe,
    format_fields,
    load_config_file,
    parse_argv,
    unknown_key_error,
)
from hyperdnn.engine.errors import ConfigError, UsageError
from hyperdnn.engine.registry import Recipe, get_recipe, list_recipes
from hyperdnn.engine.run import RUN_KEYS_FIXED_ON_RESUME, RunOptions, execute
from hyperdnn.engine.seeding import check_seed, max_threads

__all__ = ["run_command", "parse_run_args", "recipe_help"]

USAGE = "usage: hyperdnn run --list | hyperdnn run <recipe> [--key value ...] [--config file.yaml] [--help]"


def recipe_help(recipe: Recipe) -> str:
    """The ``--help`` text of a recipe: its description and every option with type, default and help."""
    parts = [
        f"usage: hyperdnn run {recipe.name} [--key value ...] [--config file.yaml]",
        "",
        recipe.summary,
    ]
    if recipe.description:
        parts += ["", recipe.description.strip("\n")]
    parts += [
        "",
        f"{recipe.name} options (option TYPE default help):",
        format_fields(describe(recipe.config)),
        "",
        "run options:",
        format_fields(describe(RunOptions)),
        "  --config PATH  a YAML file of option: value (command-line values take precedence)",
    ]
    return "\n".join(parts)


def parse_run_args(recipe: Recipe, argv: Sequence[str]) -> tuple[Any, RunOptions]:
    """Resolve a recipe's config and the run options from defaults, ``--config`` and ``argv``.

    With ``--resume`` the config saved in the run folder is used; options given now must agree
    with it (run options such as ``--threads`` may change; not given, the threads and device
    are the saved run's).

    Raises:
        ConfigError: unknown keys, wrong types or choices, a conflict with the saved config.
        UsageError: a resumed run's folder has no saved config.
    """
    recipe_fields = describe(recipe.config)
    run_fields = describe(RunOptions)
    clash = {f.name for f in recipe_fields} & {f.name for f in run_fields}
    if clash:
        raise TypeError(f"recipe {recipe.name!r}: config fields {sorted(clash)} clash with the run options")
    every: list[FieldInfo] = recipe_fields + run_fields
    cli_values, config_path = parse_argv(argv, every)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if config_path is not None:
        file_values = load_config_file(config_path)
        named = file_values.pop("recipe", recipe.name)
        if named != recipe.name:
            raise ConfigError(f"--config: {config_path!r} is for recipe {named!r}, not {recipe.name!r}")
        known = {f.name for f in every}
        for key in file_values:
            if key not in known:
                raise unknown_key_error(key, sorted(known), "", where=f"{config_path}: ")
        values.update(file_values)
        sources.update({k: f"{config_path}: {k}" for k in file_values})
    values.update(cli_values)
    sources.update({k: f"--{k}" for k in cli_values})
    run_names = {f.name for f in run_fields}
    run_values = {k: v for k, v in values.items() if k in run_names}
    options = build_config(RunOptions, run_values, sources)
    recipe_values = {k: v for k, v in values.items() if k not in run_names}
    if options.resume:
        recipe_values, saved_run = _reconcile_with_saved(recipe, options, recipe_values, run_values, sources)
        options = dataclasses.replace(options, **saved_run)
    config = build_config(recipe.config, recipe_values, sources)
    return config, options


def _reconcile_with_saved(
    recipe: Recipe,
    options: RunOptions,
    given: dict[str, Any],
    given_run: dict[str, Any],
    sources: dict[str, str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The saved config's recipe options, and the run options the resumed run takes from it: the
    seed, and the threads and device unless given again (the threads only where this machine
    has that many CPUs)."""
    out = Path(options.out or f"runs/{recipe.name}")
    saved_path = out / "config.yaml"
    if not saved_path.is_file():
        raise UsageError(f"--resume: {str(out)!r} holds no run to resume (no config.yaml)")
    saved = load_config_file(saved_path, what="--resume")
    if saved.pop("recipe", recipe.name) != recipe.name:
        raise UsageError(f"--resume: the run in {str(out)!r} is not a {recipe.name!r} run")
    infos = {f.name: f for f in describe(recipe.config) + describe(RunOptions)}
    fixed = {f.name for f in describe(recipe.config)} | set(RUN_KEYS_FIXED_ON_RESUME)
    unknown = sorted(k for k in saved if k not in infos)
    if unknown:
        raise ConfigError(
            f"--resume: {str(saved_path)!r} has options this version of {recipe.name!r} lacks: "
            f"{', '.join(unknown)} (see hyperdnn run {recipe.name} --help)"
        )
    saved_fixed = {k: v for k, v in saved.items() if k in fixed}
    for key, raw in {**given, **{k: v for k, v in given_run.items() if k in fixed}}.items():
        if key not in saved_fixed:
            continue
        want = coerce(saved_fixed[key], infos[key], f"{saved_path}: {key}")
        have = coerce(raw, infos[key], sources.get(key, "--" + key))
        if want != have:
            raise ConfigError(
                f"{sources.get(key, '--' + key)}: the run in {str(out)!r} used {want!r}; "
                f"a resumed run cannot change it (given {have!r})"
            )
    seed = coerce(saved_fixed.get("seed", options.seed), infos["seed"], f"{saved_path}: seed")
    check_seed(seed, f"{saved_path}: seed")
    run = {"seed": seed}
    for key in ("threads", "device"):
        if key in saved and key not in given_run:
            run[key] = coerce(saved[key], infos[key], f"{saved_path}: {key}")
    if not 0 <= run.get("threads", 0) <= max_threads():
        del run["threads"]  # a run from a larger machine: torch's default here (the log says how many)
    recipe_values = {k: v for k, v in saved_fixed.items() if k in {f.name for f in describe(recipe.config)}}
    for k in recipe_values:
        sources[k] = f"{saved_path}: {k}"
    return recipe_values, run


def _list(stream: TextIO) -> None:
    names = list_recipes()
    width = max((len(n) for n in names), default=0)
    print("recipes (hyperdnn run <recipe> --help for options):", file=stream)
    for name in names:
        print(f"  {name:<{width}}  {get_recipe(name).summary}", file=stream)


def run_command(
    argv: Sequence[str], stdout: TextIO | None = None, stderr: TextIO | None = None, prog: str | None = None
) -> int:
    """Entry point of ``hyperdnn run``; returns the exit status (0 ok, 2 bad input, 130 interrupted).

    Args:
        argv: the arguments after ``run``: ``--list``, or a recipe name and its options.
        stdout, stderr: where output and errors go (default the process's).
        prog: how error lines name the command (default ``hyperdnn run <recipe>``; the short
            form ``hyperdnn demo`` passes its own).
    """
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=stdout if argv else stderr)
        return 0 if argv else 2
    name = argv[0]
    prog = prog or ("hyperdnn run" if name.startswith("-") else f"hyperdnn run {name}")
    try:
        if name == "--list":
            if len(argv) > 1:
                raise UsageError(f"--list takes no arguments, got {argv[1:]}")
            _list(stdout)
            return 0
        if name.startswith("-"):
            raise UsageError(f"expected a recipe name or --list first, got {name!r}")
        recipe = get_recipe(name)
        if "-h" in argv[1:] or "--help" in argv[1:]:
            print(recipe_help(recipe), file=stdout)
            return 0
        config, options = parse_run_args(recipe, argv[1:])
        execute(recipe, config, options, stream=stdout)
        return 0
    except UsageError as e:
        message = " ".join(str(e).split())
        print(f"{prog}: error: {message}", file=stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; continue with --resume (and the same --out)", file=stderr)
        return 130
