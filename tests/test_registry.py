"""The one Registry type: decorator, lazy built-ins, globs, close matches, duplicates, entry points."""

from __future__ import annotations

import doctest
import sys
import types
import warnings

import pytest

import hyperdnn.registry as registry_module
from hyperdnn.registry import Registry, RegistryError


def test_register_get_list_and_glob() -> None:
    reg: Registry = Registry("thing")

    @reg.register("alpha")
    def alpha():
        return 1

    reg.register("beta-2", 2)
    assert reg.get("alpha") is alpha
    assert reg.get("beta-2") == 2
    assert reg.list() == ["alpha", "beta-2"]
    assert reg.list("b*") == ["beta-2"]
    assert "alpha" in reg and "gamma" not in reg and 3 not in reg
    assert list(reg) == ["alpha", "beta-2"] and len(reg) == 2


def test_unknown_name_lists_close_matches_and_everything() -> None:
    reg: Registry = Registry("head")
    for n in ("chunked", "once", "multihead"):
        reg.register(n, object())
    with pytest.raises(RegistryError) as e:
        reg.get("chunkd")
    msg = str(e.value)
    assert "unknown head 'chunkd'" in msg and "did you mean 'chunked'" in msg and "'multihead'" in msg
    with pytest.raises(RegistryError, match="Registered"):
        reg.get("zzz")
    with pytest.raises(TypeError, match="expected a string"):
        reg.get(3)


def test_bad_names_and_kind_check() -> None:
    def only_ints(v):
        if not isinstance(v, int):
            raise TypeError(f"expected an int, got {type(v).__name__}")

    reg: Registry = Registry("number", check=only_ints)
    for bad in ("", "a b", "a/b", None, 3):
        with pytest.raises(ValueError, match="name must be"):
            reg.register(bad, 1)
    with pytest.raises(TypeError, match="expected an int"):
        reg.register("x", "not an int")
    assert "x" not in reg
    with pytest.raises(ValueError, match="kind"):
        Registry("")


def test_duplicate_registration_warns_naming_modules() -> None:
    reg: Registry = Registry("trunk")

    def first():
        pass

    def second():
        pass

    reg.register("mlp", first)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg.register("mlp", first)  # the same object again: silent
    with pytest.warns(UserWarning, match=r"trunk 'mlp' registered again by .*test_registry"):
        reg.register("mlp", second)
    assert reg.get("mlp") is second


def test_builtin_entries_import_lazily(monkeypatch) -> None:
    reg: Registry = Registry("dataset", builtin={"lazy": "hyperdnn_test_lazy_module"})
    mod = types.ModuleType("hyperdnn_test_lazy_module")
    imported = []

    def exec_module():
        imported.append(True)
        reg.register("lazy", "value")

    # emulate "importing registers": patch import_module to run the module body
    monkeypatch.setattr(
        registry_module.importlib,
        "import_module",
        lambda name: (exec_module(), sys.modules.setdefault(name, mod))[1],
    )
    assert imported == []
    assert reg.get("lazy") == "value"
    assert imported == [True]
    assert reg.list() == ["lazy"]
    assert imported == [True]  # not imported twice


def test_entry_points_are_found_and_broken_ones_warn(monkeypatch) -> None:
    class EP:
        def __init__(self, name, value, obj=None, error=None):
            self.name, self.value, self._obj, self._error = name, value, obj, error

        def load(self):
            if self._error:
                raise self._error
            return self._obj

    eps = [EP("theirs", "pkg.mod:obj", obj="their recipe"), EP("broken", "pkg.bad:obj", error=ImportError("no pkg"))]
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: eps if group == "g" else [])
    reg: Registry = Registry("recipe", entry_point_group="g")
    with pytest.warns(UserWarning, match="'broken' from entry point 'pkg.bad:obj' failed to load"):
        assert reg.list() == ["theirs"]
    assert reg.get("theirs") == "their recipe"


def test_docstring_example_runs() -> None:
    result = doctest.testmod(registry_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
