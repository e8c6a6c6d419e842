"""One registry type for every named family: heads, trunks, conditioners, data sets, recipes.

A :class:`Registry` maps names to objects (factories, classes, recipe records). It is filled
three ways:

* by the :meth:`Registry.register` decorator (or a direct call) where the object is defined;
* lazily, for built-in entries declared by ``{name: "module.path"}``: the module is imported on
  first use and registers its own entries (so ``import hyperdnn`` stays cheap);
* from installed packages, through an entry-point group (``[project.entry-points."<group>"]``
  in their ``pyproject.toml``, ``name = "package.module:object"``): a user ships a recipe or a
  head without editing hyperdnn.

Lookups of an unknown name raise :class:`LookupError` (a ``KeyError`` subclass would quote the
message) naming the family, the close matches and every registered name. Registering a name a
second time warns, naming both modules, and keeps the newer entry.

Example::

    >>> from hyperdnn.registry import Registry
    >>> colours = Registry("colour")
    >>> @colours.register("red")
    ... def make_red():
    ...     return (255, 0, 0)
    >>> colours.get("red")()
    (255, 0, 0)
    >>> colours.list("r*")
    ['red']
    >>> colours.get("rde")
    Traceback (most recent call last):
    ...
    hyperdnn.registry.RegistryError: unknown colour 'rde'; did you mean 'red'? Registered: ['red']
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar, overload

__all__ = ["Registry", "RegistryError"]

T = TypeVar("T")


class RegistryError(LookupError):
    """An unknown name was looked up in a :class:`Registry`."""


def _module_of(obj: Any) -> str:
    return getattr(obj, "__module__", None) or type(obj).__module__


class Registry(Generic[T]):
    """Named objects of one family.

    Args:
        kind: what the entries are, for messages (``"head"``, ``"recipe"``...).
        builtin: ``{name: module}`` of entries that register themselves when ``module`` is
            imported; imported on first lookup of that name or on :meth:`list`.
        entry_point_group: the ``importlib.metadata`` entry-point group scanned once, on
            first use, for entries of installed packages (``None``: none).
        check: called on every registered object; raises ``TypeError`` for a wrong kind.
    """

    def __init__(
        self,
        kind: str,
        *,
        builtin: Mapping[str, str] | None = None,
        entry_point_group: str | None = None,
        check: Callable[[Any], None] | None = None,
    ):
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"Registry: kind must be a non-empty string, got {kind!r}")
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._builtin = dict(builtin or {})
        self._group = entry_point_group
        self._check = check
        self._scanned = entry_point_group is None

    # ------------------------------------------------------------------ filling
    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: Any = None) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, a decorator that does so.

        Raises:
            ValueError: ``name`` is not a non-empty string of letters, digits, ``-`` or ``_``.
            TypeError: ``obj`` is not of this registry's kind (when the registry checks).
        """
        if not isinstance(name, str) or not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"{self.kind} registry: a name must be letters, digits, '-' or '_', got {name!r}")

        def add(value: T) -> T:
            if self._check is not None:
                self._check(value)
            if name in self._entries and self._entries[name] is not value:
                old = _module_of(self._entries[name])
                warnings.warn(
                    f"{self.kind} {name!r} registered again by {_module_of(value)} (was {old}); the new entry wins",
                    UserWarning,
                    stacklevel=3,
                )
            self._entries[name] = value
            return value

        if obj is None:
            return add
        return add(obj)

    def _load_builtin(self, name: str) -> None:
        module = self._builtin.get(name)
        if module is not None and name not in self._entries:
            importlib.import_module(module)

    def _scan_entry_points(self) -> None:
        if self._scanned:
            return
        self._scanned = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=self._group):
            if ep.name in self._entries or ep.name in self._builtin:
                continue
            try:
                obj = ep.load()
            except Exception as e:  # a broken third-party package must not break the CLI
                warnings.warn(
                    f"{self.kind} {ep.name!r} from entry point {ep.value!r} failed to load: {e}",
                    UserWarning,
                    stacklevel=3,
                )
                continue
            if ep.name not in self._entries:
                self.register(ep.name, obj)

    # ------------------------------------------------------------------ lookup
    def get(self, name: str) -> T:
        """The entry called ``name``.

        Raises:
            RegistryError: no entry has that name; the message lists close matches and every
                registered name.
        """
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name: expected a string, got {type(name).__name__}")
        self._load_builtin(name)
        if name not in self._entries:
            self._scan_entry_points()
        if name not in self._entries:
            names = self.list()
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
            raise RegistryError(f"unknown {self.kind} {name!r}; {hint}Registered: {names}")
        return self._entries[name]

    def list(self, pattern: str | None = None) -> list[str]:
        """Sorted names of every entry (built-in and installed ones included), optionally
        only those matching the glob ``pattern`` (``"hyper*"``)."""
        for name in self._builtin:
            self._load_builtin(name)
        self._scan_entry_points()
        names = sorted(self._entries)
        if pattern is not None:
            names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        return names

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.get(name)
        except RegistryError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self.list())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} loaded)"
