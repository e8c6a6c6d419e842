"""Typed dataclass configs: ``--key value`` overrides, YAML files, type checks and ``--help``.

A recipe's config is a dataclass whose fields are declared with :func:`option`, which records
the help text (and optional choices) next to the default::

    @dataclass
    class MyConfig:
        epochs: int = option(10, "training epochs per task")
        scenarios: tuple[str, ...] = option(("CL1",), "scenarios to evaluate", choices=("CL1", "CL2", "CL3"))

Supported field types: ``int``, ``float``, ``str``, ``bool``, ``X | None`` and ``tuple[X, ...]``
of those scalars. On the command line a tuple is written comma-separated (``--hidden 100,100``),
``none`` gives ``None``, and a bool may be written bare (``--resume``) or as
``true``/``false``. In a YAML file values keep their YAML types. Values are checked against the
field's type and choices; a config's own ``__post_init__`` may raise ``ValueError`` for range
checks. Every problem is a :class:`~hyperdnn.engine.errors.ConfigError` that names the option,
what was expected and what was given.

Two checks hold for every field of every config: a ``float`` is finite (``inf`` and ``nan``
are refused unless the field is declared with ``option(..., finite=False)``), and an ``int``
fits in 64 bits (what torch accepts as a size or a count). A field may declare its range
(``option(64, "minibatch size", low=1)``, ``option(0.2, "dropout", low=0, below=1)``; for a
tuple, of every element): a value outside is an error such as ``--batch_size: expected an
int >= 1, got 0``, and ``--help`` shows the range; a tuple field may ask for at least one value
(``nonempty=True``) and for distinct values (``distinct=True``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hyperdnn.engine.errors import ConfigError

__all__ = [
    "option",
    "apply_preset",
    "Bounds",
    "FieldInfo",
    "describe",
    "parse_argv",
    "load_config_file",
    "build_config",
    "config_to_dict",
    "format_fields",
]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"none", "null"}
#: the range of an ``int`` option (a signed 64-bit integer, what torch takes for sizes and counts)
INT_RANGE = (-(2**63), 2**63 - 1)


def option(
    default: Any,
    help: str,
    *,
    choices: Sequence[Any] | None = None,
    finite: bool = True,
    low: float | None = None,
    high: float | None = None,
    above: float | None = None,
    below: float | None = None,
    nonempty: bool = False,
    distinct: bool = False,
) -> Any:
    """A config field with its default, a one-line ``help``, optional ``choices`` and range.

    Args:
        default: the value when none is given; must be immutable (a tuple, not a list).
        help: one line for ``--help``.
        choices: the allowed values (for a tuple field: of each element).
        finite: for a ``float`` field, refuse ``inf`` and ``nan`` (the default). Declare
            ``finite=False`` only where the field gives them a meaning (e.g. ``inf``: no limit).
        low, high: the smallest and largest allowed value (inclusive), for an ``int`` or
            ``float`` field or each element of a tuple of them.
        above, below: exclusive bounds instead (``above=0``: ``> 0``); at most one of ``low``
            and ``above``, and of ``high`` and ``below``.
        nonempty, distinct: for a tuple field, refuse an empty tuple, and one that repeats a
            value.

    Example::

        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class C:
        ...     lr: float = option(1e-3, "learning rate")
        ...     clip: float = option(float("inf"), "gradient norm limit (inf: none)", finite=False)
        >>> build_config(C, {"clip": "inf"}).clip
        inf
    """
    if isinstance(default, (list, dict, set)):
        raise TypeError(f"option: the default must be immutable (use a tuple), got {type(default).__name__}")
    if (low is not None and above is not None) or (high is not None and below is not None):
        raise TypeError(
            f"option: give low or above, and high or below, not both; got {low=}, {above=}, {high=}, {below=}"
        )
    bounds = Bounds(low, high, above, below)
    return dataclasses.field(
        default=default,
        metadata={
            "help": help,
            "choices": None if choices is None else tuple(choices),
            "finite": bool(finite),
            "bounds": bounds if bounds.text else None,
            "nonempty": bool(nonempty),
            "distinct": bool(distinct),
        },
    )


def apply_preset(config: Any, preset: Mapping[str, Any], *, keep_given: bool = True) -> None:
    """Set a preset's values (a recipe's ``--quick``) on a config dataclass, in place.

    Args:
        config: the config, a dataclass instance (called from its ``__post_init__``).
        preset: option name -> value.
        keep_given: set only the options still at their defaults, so an option given on the
            command line keeps its value; ``False``: every preset value wins.

    Raises:
        KeyError: a preset name that is not a field of the config.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    unknown = [key for key in preset if key not in defaults]
    if unknown:  # checked first: nothing is set
        raise KeyError(f"{type(config).__name__}: expected field names in the preset, got {unknown}")
    for key, value in preset.items():
        if not keep_given or getattr(config, key) == defaults[key]:
            setattr(config, key, value)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The range of an ``int``/``float`` option: inclusive ``low``/``high``, exclusive
    ``above``/``below`` (``None``: unbounded on that side)."""

    low: float | None = None
    high: float | None = None
    above: float | None = None
    below: float | None = None

    def holds(self, value: float) -> bool:
        """Whether ``value`` lies in the range."""
        return not (
            (self.low is not None and value < self.low)
            or (self.above is not None and value <= self.above)
            or (self.high is not None and value > self.high)
            or (self.below is not None and value >= self.below)
        )

    @property
    def text(self) -> str:
        """The range for messages: ``>= 1``, ``> 0``, ``in [0, 1)``; ``""`` when unbounded."""
        lo = ("[", self.low) if self.low is not None else ("(", self.above) if self.above is not None else None
        hi = ("]", self.high) if self.high is not None else (")", self.below) if self.below is not None else None
        if lo and hi:
            return f"in {lo[0]}{_number(lo[1])}, {_number(hi[1])}{hi[0]}"
        if lo:
            return f"{'>=' if lo[0] == '[' else '>'} {_number(lo[1])}"
        if hi:
            return f"{'<=' if hi[0] == ']' else '<'} {_number(hi[1])}"
        return ""


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """One config field: name, resolved type, default, help text, choices, and whether a float
    must be finite."""

    name: str
    type: Any
    default: Any
    help: str
    choices: tuple[Any, ...] | None
    finite: bool = True
    bounds: Bounds | None = None
    nonempty: bool = False
    distinct: bool = False

    @property
    def flag(self) -> str:
        """The command-line spelling, ``--name``."""
        return "--" + self.name

    @property
    def type_name(self) -> str:
        """A short name of the type for help and error messages (``int``, ``tuple[int, ...]``)."""
        return _type_name(self.type)

    @property
    def metavar(self) -> str:
        """The value placeholder in help (``INT``, ``INT,...``, ``FLOAT|NONE``)."""
        inner, optional = _strip_optional(self.type)
        item = _tuple_item(inner)
        name = item.__name__.upper() + ",..." if item is not None else inner.__name__.upper()
        return name + "|NONE" if optional else name

    @property
    def is_bool(self) -> bool:
        return _strip_optional(self.type)[0] is bool


def describe(cls: type) -> list[FieldInfo]:
    """The fields of a config dataclass, in declaration order."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"describe: expected a dataclass type, got {cls!r}")
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{f.name}: config fields need a default (declare them with option())")
        tp = hints[f.name]
        _check_supported(tp, f"{cls.__name__}.{f.name}")
        inner = _strip_optional(tp)[0]
        if f.metadata.get("bounds") is not None and (_tuple_item(inner) or inner) not in (int, float):
            raise TypeError(f"{cls.__name__}.{f.name}: a range (low, high, above, below) needs an int or float field")
        if (f.metadata.get("nonempty") or f.metadata.get("distinct")) and _tuple_item(inner) is None:
            raise TypeError(f"{cls.__name__}.{f.name}: nonempty and distinct need a tuple field")
        out.append(
            FieldInfo(
                f.name,
                tp,
                f.default,
                f.metadata.get("help", ""),
                f.metadata.get("choices"),
                f.metadata.get("finite", True),
                f.metadata.get("bounds"),
                f.metadata.get("nonempty", False),
                f.metadata.get("distinct", False),
            )
        )
    return out


# ---------------------------------------------------------------------- types
def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """(inner type, whether None is allowed)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _tuple_item(tp: Any) -> Any | None:
    """The element type of ``tuple[X, ...]``, else ``None``."""
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0]
    return None


def _check_supported(tp: Any, where: str) -> None:
    inner, _ = _strip_optional(tp)
    item = _tuple_item(inner)
    scalar = item if item is not None else inner
    if scalar not in (int, float, str, bool):
        raise TypeError(
            f"{where}: unsupported config type {tp!r}; use int, float, str, bool, X | None or tuple[X, ...]"
        )


def _type_name(tp: Any) -> str:
    inner, optional = _strip_optional(tp)
    item = _tuple_item(inner)
    name = f"tuple[{item.__name__}, ...]" if item is not None else inner.__name__
    return name + " | None" if optional else name


def _describe_value(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})" if not isinstance(value, str) else repr(value)


def _scalar(value: Any, tp: type, where: str, finite: bool = True, int_range: bool = True) -> Any:
    """Coerce one scalar (a command-line string or a YAML value) to ``tp`` and check the ranges
    every config shares (finite floats unless ``finite`` is false, 64-bit ints unless
    ``int_range`` is false)."""
    out = _scalar_type(value, tp, where)
    if tp is float and finite and not math.isfinite(out):
        raise ConfigError(f"{where}: expected a finite float, got {out}")
    if tp is int and int_range and not INT_RANGE[0] <= out <= INT_RANGE[1]:
        raise ConfigError(f"{where}: expected an int in [-2**63, 2**63), got {out}")
    return out


def _scalar_type(value: Any, tp: type, where: str) -> Any:
    if isinstance(value, str) and tp is not str:
        text = value.strip()
        if tp is bool:
            low = text.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
        elif tp is int:
            try:
                return int(text)
            except ValueError:
                pass
        elif tp is float:
            try:
                return float(text)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{where}: expected {tp.__name__}, got {_describe_value(value)}")


def coerce(value: Any, info: FieldInfo, where: str, int_range: bool = True) -> Any:
    """Coerce ``value`` (a command-line string or a YAML value) to the field's type and check
    its choices, that a float is finite (unless the field allows otherwise) and, with
    ``int_range``, that an int fits in 64 bits. ``where`` names the source in error messages
    (``--epochs``, ``run.yaml: epochs``)."""
    inner, optional = _strip_optional(info.type)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in _NONE):
        if optional:
            return None
        raise ConfigError(f"{where}: expected {info.type_name}, got None")
    item = _tuple_item(inner)
    if item is not None:
        if isinstance(value, str):
            parts = [p for p in (s.strip() for s in value.split(",")) if p]
        elif isinstance(value, (list, tuple)):
            parts = list(value)
        else:
            parts = [value]
        out = tuple(_scalar(p, item, where, info.finite, int_range) for p in parts)
        bad = [v for v in out if info.choices is not None and v not in info.choices]
    else:
        out = _scalar(value, inner, where, info.finite, int_range)
        bad = [out] if info.choices is not None and out not in info.choices else []
    if bad:
        choices = ", ".join(str(c) for c in info.choices or ())
        raise ConfigError(f"{where}: expected one of {{{choices}}}, got {', '.join(repr(b) for b in bad)}")
    values = out if item is not None else (out,)
    if info.bounds is not None and not all(info.bounds.holds(v) for v in values):
        scalar = item if item is not None else inner
        kind = (
            ("ints" if scalar is int else "floats") if item is not None else ("an int" if scalar is int else "a float")
        )
        given = ",".join(str(v) for v in values)
        raise ConfigError(f"{where}: expected {kind} {info.bounds.text}, got {given}")
    if info.nonempty and not values:
        raise ConfigError(f"{where}: expected at least one value, got none")
    if info.distinct and len(set(values)) != len(values):
        raise ConfigError(f"{where}: expected distinct values, got {','.join(str(v) for v in values)}")
    return out


# ---------------------------------------------------------------------- sources
def _normalise_key(key: str) -> str:
    return key.replace("-", "_")


def parse_argv(argv: Sequence[str], fields: Sequence[FieldInfo]) -> tuple[dict[str, str | bool], str | None]:
    """Split ``--key value`` / ``--key=value`` pairs and ``--config FILE``.

    Args:
        argv: the tokens after the recipe name.
        fields: every field that may be set (used to allow bare boolean flags and to name
            unknown keys).

    Returns:
        (raw values by field name, the ``--config`` path or ``None``).

    Raises:
        ConfigError: a stray token, a missing value, a repeated or unknown key.
    """
    by_name = {f.name: f for f in fields}
    values: dict[str, str | bool] = {}
    config_path: str | None = None
    i = 0
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("--") or tok == "--":
            raise ConfigError(f"expected --key value pairs, got {tok!r}")
        key, eq, inline = tok[2:].partition("=")
        key = _normalise_key(key)
        if key == "config":
            value: str | bool | None = inline if eq else None
            if value is None:
                if i + 1 >= len(argv):
                    raise ConfigError("--config: expected a YAML file path, got nothing")
                value = argv[i + 1]
                i += 1
            if config_path is not None:
                raise ConfigError("--config given twice")
            config_path = str(value)
            i += 1
            continue
        if key not in by_name:
            raise unknown_key_error(key, [f.name for f in fields], "--")
        if key in values:
            raise ConfigError(f"--{key} given twice")
        if eq:
            values[key] = inline
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            values[key] = argv[i + 1]
            i += 1
        elif by_name[key].is_bool:
            values[key] = True
        else:
            raise ConfigError(f"--{key}: expected a value ({by_name[key].type_name}), got nothing")
        i += 1
    return values, config_path


def unknown_key_error(key: str, known: Sequence[str], prefix: str, where: str = "") -> ConfigError:
    """A :class:`ConfigError` for an unknown key, suggesting the closest known one."""
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean {prefix}{close[0]}?" if close else f"; expected one of {', '.join(sorted(known))}"
    return ConfigError(f"{where}unknown option {prefix}{key}{hint}")


def load_config_file(path: str | Path, what: str = "--config") -> dict[str, Any]:
    """Read a YAML (or JSON) mapping of option name -> value.

    Args:
        path: the file.
        what: how messages introduce the file (``--config``, ``--resume``).

    Raises:
        ConfigError: the file is missing, a folder, unreadable, not UTF-8, not YAML, or not a
            mapping; the message names the file.
    """
    p = Path(path)
    where = f"{what}: {str(p)!r}"
    if not p.exists():
        raise ConfigError(f"{where} does not exist; expected a YAML file of option: value")
    if p.is_dir():
        raise ConfigError(f"{where} is a folder; expected a YAML file of option: value")
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"{where} cannot be read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{where} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
            "expected a YAML file of option: value"
        ) from None
    try:
        import yaml
    except ImportError:  # pragma: no cover - pyyaml is in the apps extra
        raise ConfigError(f"{what}: reading YAML needs pyyaml: pip install 'hyperdnn[apps]'") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{where} is not valid YAML: {problem}{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a mapping of option: value, got a YAML {type(data).__name__}")
    return {_normalise_key(str(k)): v for k, v in data.items()}


def build_config(cls: type, values: Mapping[str, Any], sources: Mapping[str, str] | None = None) -> Any:
    """Instantiate config dataclass ``cls`` from raw ``values`` (strings or YAML values).

    Args:
        cls: the config dataclass.
        values: field name -> raw value; fields not given keep their defaults.
        sources: field name -> how the value was given (for messages; default ``--name``).

    Raises:
        ConfigError: an unknown key, a wrong type or choice, a non-finite float, a range check
            of the config's ``__post_init__`` (which speaks first, with the field's own range),
            or an int beyond 64 bits.
    """
    infos = {f.name: f for f in describe(cls)}
    sources = sources or {}
    kwargs = {}
    for key, raw in values.items():
        if key not in infos:
            raise unknown_key_error(key, list(infos), "--")
        kwargs[key] = coerce(raw, infos[key], sources.get(key, "--" + key), int_range=False)
    try:
        cfg = cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None
    for key, raw in values.items():
        coerce(raw, infos[key], sources.get(key, "--" + key))
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A config as a plain dict (tuples become lists), ready for YAML or JSON."""

    def plain(v: Any) -> Any:
        return [plain(x) for x in v] if isinstance(v, (tuple, list)) else v

    return {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _format_default(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) if value else '""'
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return '""'
    return str(value)


def format_fields(fields: Sequence[FieldInfo], width: int = 100) -> str:
    """Help lines for ``fields``: flag, type, default, help text and choices."""
    rows = [(f.flag + " " + f.metavar, _format_default(f.default), f) for f in fields]
    w1 = max((len(r[0]) for r in rows), default=0)
    w2 = max((len(r[1]) for r in rows), default=0)
    lines = []
    for left, default, f in rows:
        text = f.help
        if f.choices is not None:
            text += " {" + ", ".join(str(c) for c in f.choices) + "}"
        notes = [f.bounds.text] if f.bounds is not None else []
        notes += [w for w, on in (("at least one", f.nonempty), ("distinct", f.distinct)) if on]
        if notes:
            text += " (" + ", ".join(notes) + ")"
        lines.append(f"  {left:<{w1}}  {default:<{w2}}  {text}")
    return "\n".join(lines)
