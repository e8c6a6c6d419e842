"""Both install routes: the core (torch, numpy) alone and the extras.

The optional packages are made unimportable in a child process (a ``sitecustomize`` on
``PYTHONPATH`` puts ``None`` into ``sys.modules`` for them, which is what an absent package
looks like to ``import``). Commands that need nothing optional must work; the others must
exit with status 2 and one line naming what to install, before writing anything.
"""

from __future__ import annotations

import os
import pkgutil
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import hyperdnn
from hyperdnn.engine import Outcome, Recipe, RunOptions, UsageError, execute, option
from hyperdnn.extras import EXTRAS, import_optional, requirement_message

ROOT = Path(__file__).resolve().parent.parent
OPTIONAL = ("sklearn", "mlxtend", "yaml", "safetensors", "tqdm", "matplotlib", "tensorboard")
#: what ``pip install hyperdnn`` leaves out, and what ``pip install 'hyperdnn[data]'`` still leaves out
CORE_ONLY = OPTIONAL
DATA_ONLY = ("yaml", "safetensors", "tqdm", "matplotlib", "tensorboard")


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def _python(tmp_path: Path, blocked: tuple[str, ...], *args: str, cwd: Path | None = None) -> Result:
    """Run ``python args`` with the ``blocked`` modules unimportable; cwd defaults to an empty folder."""
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked), encoding="utf-8"
    )
    work = cwd or tmp_path / "work"
    work.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")]))}
    env.pop("PYTHONSTARTUP", None)
    proc = subprocess.run(
        [sys.executable, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def _hyperdnn(tmp_path: Path, blocked: tuple[str, ...], *argv: str) -> Result:
    return _python(tmp_path, blocked, "-m", "hyperdnn.cli", *argv)


def _one_line(result: Result) -> str:
    assert result.code == 2, result
    assert "Traceback" not in result.err, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    return lines[0]


def test_the_shim_makes_the_optional_modules_unimportable(tmp_path):
    probe = "import importlib\nfor m in {!r}:\n    try:\n        importlib.import_module(m)\n        print('imported', m)\n    except ImportError:\n        pass\n"
    result = _python(tmp_path, CORE_ONLY, "-c", probe.format(OPTIONAL))
    assert result.code == 0 and result.out == "", result


def test_importing_hyperdnn_imports_no_optional_package():
    """Every module of the package imports, and none pulls in an extra (beyond what torch imports
    itself: torch.hub imports tqdm when it is installed)."""
    names = [m.name for m in pkgutil.walk_packages(hyperdnn.__path__, "hyperdnn.")]
    assert {"hyperdnn.cli", "hyperdnn.recipes.demo", "hyperdnn.recipes.continual", "hyperdnn.data.streams"} <= set(
        names
    )
    code = (
        "import importlib, sys\n"
        "import numpy, torch\n"
        f"before = {{m for m in {OPTIONAL!r} if sys.modules.get(m) is not None}}\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in {OPTIONAL!r} if sys.modules.get(m) is not None and m not in before))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "argv, expect",
    [
        (("--help",), "hyperdnn demo [--dynamic]"),
        (("run", "--list"), "continual"),
        (("run", "continual", "--help"), "--benchmark"),
        (("demo", "--help"), "--threads"),
    ],
)
def test_core_only_help_and_listing_work(tmp_path, argv, expect):
    result = _hyperdnn(tmp_path, CORE_ONLY, *argv)
    assert result.code == 0, result
    assert expect in result.out
    assert list((tmp_path / "work").iterdir()) == []


def test_core_only_import_and_public_names(tmp_path):
    result = _python(tmp_path, CORE_ONLY, "-c", "import hyperdnn; print(len(hyperdnn.__all__) > 10)")
    assert (result.code, result.out.strip()) == (0, "True"), result


@pytest.mark.parametrize(
    "blocked, demo_line, run_line",
    [
        (
            CORE_ONLY,
            "needs pyyaml, safetensors, scikit-learn, matplotlib: pip install 'hyperdnn[apps]'",
            "needs pyyaml, safetensors, matplotlib: pip install 'hyperdnn[apps]'",
        ),
        (
            DATA_ONLY,
            "needs pyyaml, safetensors, matplotlib: pip install 'hyperdnn[apps]'",
            "needs pyyaml, safetensors, matplotlib: pip install 'hyperdnn[apps]'",
        ),
    ],
    ids=["core", "core+data"],
)
def test_commands_name_the_extra_before_writing_anything(tmp_path, blocked, demo_line, run_line):
    assert _one_line(_hyperdnn(tmp_path, blocked, "demo")) == f"hyperdnn demo: error: {demo_line}"
    dynamic = _hyperdnn(tmp_path, blocked, "demo", "--dynamic", "--epochs", "1")
    assert _one_line(dynamic) == f"hyperdnn demo --dynamic: error: {demo_line}"
    assert _one_line(_hyperdnn(tmp_path, blocked, "run", "continual")) == f"hyperdnn run continual: error: {run_line}"
    assert list((tmp_path / "work").iterdir()) == []  # no runs/ folder, nothing at all


def test_a_yaml_config_without_pyyaml_is_one_line(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "c.yaml").write_text("epochs: 1\n")
    line = _one_line(_hyperdnn(tmp_path, DATA_ONLY, "run", "continual", "--config", "c.yaml"))
    assert "pyyaml" in line and "pip install 'hyperdnn[apps]'" in line, line
    assert sorted(p.name for p in work.iterdir()) == ["c.yaml"]


# ------------------------------------------------------------------ in process
@dataclass
class _Config:
    steps: int = option(1, "steps")


def _written(cfg: _Config, ctx) -> Outcome:  # pragma: no cover - must never run
    raise AssertionError("the run started although a required module is missing")


def test_a_recipe_declares_its_extras_and_execute_checks_them_first(tmp_path):
    recipe = Recipe("needy", "needs a module", _Config, _written, requires={"hyperdnn_no_such_module": "apps"})
    assert dict(recipe.requires) == {"hyperdnn_no_such_module": "apps"}
    out = tmp_path / "run"
    with pytest.raises(UsageError) as e:
        execute(recipe, _Config(), RunOptions(out=str(out)), stream=None)
    assert str(e.value) == "needs hyperdnn_no_such_module: pip install 'hyperdnn[apps]'"
    assert not out.exists()


def test_execute_checks_the_engines_own_extras(tmp_path, monkeypatch):
    _block(monkeypatch, "yaml", "safetensors")
    recipe = Recipe("plain", "needs only the engine", _Config, _written)
    out = tmp_path / "run"
    with pytest.raises(UsageError, match=re.escape("needs pyyaml, safetensors: pip install 'hyperdnn[apps]'")):
        execute(recipe, _Config(), RunOptions(out=str(out)), stream=None)
    assert not out.exists()


def test_recipe_requires_is_validated():
    with pytest.raises(ValueError, match=r"unknown extras \{'x': 'nope'\}"):
        Recipe("bad", "bad extras", _Config, _written, requires={"x": "nope"})
    with pytest.raises(TypeError, match="requires must map module names to extras, got list"):
        Recipe("bad", "bad extras", _Config, _written, requires=["x"])
    with pytest.raises(TypeError, match=r"got \{'x': 3\}"):
        Recipe("bad", "bad extras", _Config, _written, requires={"x": 3})


def _block(monkeypatch, *packages: str) -> None:
    """Make ``packages`` unimportable in this process, submodules already imported included."""
    for name in list(sys.modules):
        if name.split(".")[0] in packages:
            monkeypatch.setitem(sys.modules, name, None)
    for package in packages:
        monkeypatch.setitem(sys.modules, package, None)


def test_requirement_message_names_pip_names_and_every_extra(monkeypatch):
    _block(monkeypatch, "sklearn", "yaml")
    assert requirement_message({"torch": "apps"}) is None
    assert requirement_message({"sklearn.datasets": "data", "torch": "apps", "yaml": "apps"}) == (
        "needs scikit-learn, pyyaml: pip install 'hyperdnn[data,apps]'"
    )


def test_load_digits_without_the_extra_names_it(monkeypatch):
    from hyperdnn.data import load_digits

    _block(monkeypatch, "sklearn")

    with pytest.raises(ImportError, match=re.escape("load_digits needs scikit-learn: pip install 'hyperdnn[data]'")):
        load_digits()
    with pytest.raises(ImportError, match=re.escape("x needs pyyaml: pip install 'hyperdnn[apps]'")):
        _block(monkeypatch, "yaml")
        import_optional("yaml", "apps", "x")


def test_the_extras_are_those_of_pyproject():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = project["optional-dependencies"]
    assert set(groups) == set(EXTRAS)
    assert {d.split(">")[0].split("=")[0] for d in project["dependencies"]} == {"torch", "numpy"}
    pip = {"sklearn": "scikit-learn", "yaml": "pyyaml"}
    apps = {d.split(">")[0].split("=")[0] for d in groups["apps"]}
    data = {d.split(">")[0].split("=")[0] for d in groups["data"]}
    assert data <= apps  # apps is everything a run needs, the data sets included
    assert {pip.get(m, m) for m in OPTIONAL if m != "tensorboard"} == apps


def test_the_readme_quickstart_is_examples_quickstart():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Twenty lines.*?```python\n(.*?)```", readme, re.S)
    assert block is not None
    example = (ROOT / "examples" / "quickstart.py").read_text(encoding="utf-8")
    body = example.split('"""', 2)[2].lstrip("\n")
    assert block.group(1) == body
    assert "[data]" in readme.split("## Twenty lines", 1)[1].split("```python", 1)[0]  # says which extra
    assert "hyperdnn[data]" in example.split('"""', 2)[1]
