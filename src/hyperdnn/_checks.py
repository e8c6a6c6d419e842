"""Argument checks shared by the public constructors.

Each check raises one error that names the API, the argument, what was expected and what was
given: ``TypeError`` for a value of the wrong type, ``ValueError`` for a value of the right type
out of range. A wrong-type message also names the given type.

Example::

    >>> from hyperdnn._checks import check_int
    >>> check_int("Chunked", "chunk_size", 16)
    16
    >>> check_int("Chunked", "chunk_size", "16")
    Traceback (most recent call last):
    ...
    TypeError: Chunked: chunk_size must be an int >= 1, got '16' (str)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = [
    "check_bool",
    "check_choice",
    "check_float",
    "check_int",
    "check_optional_int",
    "check_widths",
    "describe_choices",
    "set_frozen",
]


def _typed(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(where: str, name: str, value: Any, low: int = 1) -> int:
    """``value`` as an int ``>= low`` (bools are refused)."""
    if not _is_int(value):
        raise TypeError(f"{where}: {name} must be an int >= {low}, got {_typed(value)}")
    if value < low:
        raise ValueError(f"{where}: {name} must be an int >= {low}, got {value!r}")
    return value


def check_optional_int(where: str, name: str, value: Any, low: int = 1) -> int | None:
    """``value`` as ``None`` or an int ``>= low``."""
    if value is None:
        return None
    if not _is_int(value):
        raise TypeError(f"{where}: {name} must be None or an int >= {low}, got {_typed(value)}")
    if value < low:
        raise ValueError(f"{where}: {name} must be None or an int >= {low}, got {value!r}")
    return value


def _interval(low: float | None, high: float | None, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in [{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"a finite number >= {low:g}"
    return "a finite number"


def check_float(
    where: str, name: str, value: Any, low: float | None = None, high: float | None = None, *, high_open: bool = False
) -> float:
    """``value`` (an int or a float, not a bool) as a finite float in ``[low, high]`` (or
    ``[low, high)`` with ``high_open``); a bound of ``None`` is not checked."""
    expected = _interval(low, high, high_open)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{where}: {name} must be a number {expected}, got {_typed(value)}")
    value = float(value)
    bad = (
        not math.isfinite(value)
        or (low is not None and value < low)
        or (high is not None and (value >= high if high_open else value > high))
    )
    if bad:
        raise ValueError(f"{where}: {name} must be {expected}, got {value!r}")
    return value


def check_bool(where: str, name: str, value: Any) -> bool:
    """``value`` as a bool (``0``/``1`` are refused: they usually mean a misplaced argument)."""
    if not isinstance(value, bool):
        raise TypeError(f"{where}: {name} must be a bool (True or False), got {_typed(value)}")
    return value


def describe_choices(choices: Sequence[str]) -> str:
    """``'a'``, ``'a' or 'b'``, ``'a', 'b' or 'c'``."""
    quoted = [repr(c) for c in choices]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def check_choice(where: str, name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` as one of the strings ``choices``."""
    if not isinstance(value, str):
        raise TypeError(f"{where}: {name} must be {describe_choices(choices)} (a string), got {_typed(value)}")
    if value not in choices:
        raise ValueError(f"{where}: {name} must be {describe_choices(choices)}, got {value!r}")
    return value


def check_widths(where: str, name: str, value: Any, *, allow_empty: bool = True) -> tuple[int, ...]:
    """``value`` (a sequence of ints ``>= 1``, not a string) as a tuple."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{where}: {name} must be a sequence of positive ints, got {_typed(value)}")
    widths = tuple(value)
    if not all(_is_int(w) for w in widths):
        raise TypeError(f"{where}: {name} must be a sequence of positive ints, got {widths!r}")
    if not all(w > 0 for w in widths):
        raise ValueError(f"{where}: {name} must be positive ints, got {widths!r}")
    if not widths and not allow_empty:
        raise ValueError(f"{where}: {name} must name at least one width, got ()")
    return widths


def set_frozen(obj: Any, **values: Any) -> None:
    """Store checked (normalised) values on a frozen dataclass from its ``__post_init__``."""
    for name, value in values.items():
        object.__setattr__(obj, name, value)
