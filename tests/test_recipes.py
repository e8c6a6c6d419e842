"""Recipes: the built-in ones are the files of hyperdnn/recipes, other packages add theirs (and
data sets) through entry points, the example of docs/recipes.md runs and resumes, and the
dynamic recipe as shipped reaches its stated accuracy."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hyperdnn.engine.registry as registry_module
from hyperdnn.engine import Checkpointer, Recipe, UsageError, get_recipe, list_recipes, register_recipe, run_command
from hyperdnn.registry import Registry

ROOT = Path(__file__).resolve().parents[1]


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_command(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------------- the registry
def test_the_builtin_recipes_are_the_public_files_of_the_recipes_package() -> None:
    files = sorted(p.stem for p in (ROOT / "src" / "hyperdnn" / "recipes").glob("[!_]*.py"))
    assert {"continual", "demo", "dynamic"} <= set(files)
    # every recipe file has its own end-to-end tests
    for name in set(files) - {"demo"}:
        assert (ROOT / "tests" / f"test_{name}.py").is_file(), name
    assert set(files) <= set(list_recipes()) and list_recipes("d*") == [f for f in files if f.startswith("d")]
    for name in files:
        assert get_recipe(name).name == name
    with pytest.raises(UsageError, match=r"unknown recipe 'contnual'; did you mean 'continual'\?.*hyperdnn run --list"):
        get_recipe("contnual")


def test_a_recipes_help_is_the_run_part_of_its_module_docstring() -> None:
    for name in ("continual", "demo", "dynamic"):
        description = get_recipe(name).description
        assert description.lstrip().startswith("hyperdnn ") and "Expected" in description, name
    assert "Run::" not in get_recipe("demo").description


def test_recipe_and_registration_errors_name_what_is_wrong() -> None:
    cfg = get_recipe("demo").config
    with pytest.raises(ValueError, match=r"Recipe 'x': threads must be an int >= 0, got -1"):
        Recipe("x", "x", cfg, lambda c, ctx: None, threads=-1)
    with pytest.raises(TypeError, match="a recipe must be a hyperdnn.engine.Recipe, got str"):
        register_recipe("continual")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- the example of docs/recipes.md
def _docs_recipe(tmp_path: Path, monkeypatch):
    """The complete recipe of docs/recipes.md, imported as a module into a fresh registry."""
    text = (ROOT / "docs" / "recipes.md").read_text(encoding="utf-8")
    block = re.search(r"## A complete recipe.*?```python\n(.*?)```", text, re.S)
    assert block is not None
    path = tmp_path / "waves_recipe.py"
    path.write_text(block.group(1), encoding="utf-8")
    monkeypatch.setattr(registry_module, "RECIPES", Registry("recipe", check=registry_module._check_recipe))
    spec = importlib.util.spec_from_file_location("waves_recipe", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "waves_recipe", module)
    spec.loader.exec_module(module)
    return module


def test_the_docs_recipe_runs_resumes_and_draws_the_waves(tmp_path: Path, monkeypatch) -> None:
    module = _docs_recipe(tmp_path, monkeypatch)
    assert list_recipes() == ["waves"] and get_recipe("waves") is module.RECIPE
    argv = ["waves", "--epochs", "6", "--progress", "false"]
    code, out, err = _run([*argv, "--out", str(tmp_path / "full")])
    assert code == 0, err
    full = json.loads((tmp_path / "full" / "results.json").read_text())
    assert full["metrics"]["mse"] < 0.05 and len(full["metrics"]["curves"]) == 3  # it learns every wave
    assert (tmp_path / "full" / "waves.png").stat().st_size > 0
    assert "| 1.0, 2.0, 3.0 |" in (tmp_path / "full" / "summary.md").read_text()

    original, saves = Checkpointer.save, []

    def save_then_stop(self, tensors, state):
        original(self, tensors, state)
        saves.append(state["epoch"])
        if len(saves) == 2:  # inside the unit, after epoch 4, with the optimizer saved
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpointer, "save", save_then_stop)
    code, _, err = _run([*argv, "--out", str(tmp_path / "cut")])
    assert code == 130 and saves == [2, 4]
    monkeypatch.setattr(Checkpointer, "save", original)
    code, _, err = _run(["waves", "--out", str(tmp_path / "cut"), "--resume", "--progress", "false"])
    assert code == 0, err
    resumed = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert resumed["resumed"] is True and resumed["metrics"] == full["metrics"]
    code, _, err = _run(["waves", "--epochs", "0", "--out", str(tmp_path / "bad")])
    assert code == 2 and "--epochs: expected an int >= 1, got 0" in err


# ---------------------------------------------------------------------- other packages
PLUGIN = '''
"""A package that ships a data set and a recipe of its own."""
from dataclasses import dataclass

import torch

from hyperdnn.data import Dataset, Split
from hyperdnn.engine import Outcome, Recipe, option


def _load(seed: int, root: str) -> Split:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(200) % 10
    x = torch.nn.functional.one_hot(y, 10).float() + 0.1 * torch.rand(200, 10, generator=g)
    return Split(x[:150], y[:150], x[150:], y[150:], (1, 1, 10), 10)


TOY = Dataset("toy10", "ten separable classes", _load, (1, 1, 10), 10, 200)


@dataclass
class Cfg:
    steps: int = option(2, "steps", low=1)


RECIPE = Recipe("toyrun", "a recipe from another package", Cfg, lambda cfg, ctx: Outcome({"steps": cfg.steps}, "ok"))
'''

DRIVER = """
import io, json, sys
from hyperdnn.data import list_datasets
from hyperdnn.engine import list_recipes, run_command

out = sys.argv[1]
print(list_recipes("toy*"), list_datasets("toy*"))
print(run_command(["toyrun", "--steps", "3", "--out", out + "/toy"], stdout=io.StringIO()))
print(json.load(open(out + "/toy/results.json"))["metrics"])
tiny = ["--benchmark", "split", "--num_tasks", "2", "--methods", "finetune,separate", "--hidden", "8",
        "--epochs", "1", "--progress", "false", "--threads", "1"]
print(run_command(["continual", "--data", "toy10", *tiny, "--out", out + "/cl"], stdout=io.StringIO()))
print(json.load(open(out + "/cl/results.json"))["metrics"]["stream"])
err = io.StringIO()
print(run_command(["wrongname"], stdout=io.StringIO(), stderr=err), err.getvalue().strip())
"""


def test_a_recipe_and_a_data_set_from_another_installed_package(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "toyplugin-0.1.dist-info").mkdir(parents=True)
    (site / "toyplugin.py").write_text(PLUGIN)
    (site / "toyplugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: toyplugin\nVersion: 0.1\n")
    (site / "toyplugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[hyperdnn.recipes]\ntoyrun = toyplugin:RECIPE\nwrongname = toyplugin:RECIPE\n\n"
        "[hyperdnn.datasets]\ntoy10 = toyplugin:TOY\n"
    )
    env = {"PYTHONPATH": f"{site}:{ROOT / 'src'}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(DRIVER), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "['toyrun'] ['toy10']"
    assert lines[1:3] == ["0", "{'steps': 3}"]
    assert lines[3:5] == ["0", "split-toy10"]
    assert lines[5] == (
        "2 hyperdnn run wrongname: error: the recipe registered as 'wrongname' is named 'toyrun'; the two must agree"
    )


# ---------------------------------------------------------------------- the dynamic recipe as shipped
def test_the_dynamic_recipe_trains_every_width_to_90_percent_and_serves_an_unseen_one(tmp_path: Path) -> None:
    """``hyperdnn run dynamic`` with its defaults: widths 32, 64, 128 trained jointly, 96 unseen."""
    out = tmp_path / "dyn"
    code, _, err = _run(["dynamic", "--out", str(out), "--progress", "false"])
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["threads"] == 1  # the recipe's default
    rows = {r["width"]: r for r in results["metrics"]["widths"]}
    assert sorted(rows) == [32, 64, 96, 128] and not rows[96]["trained"]
    for w in (32, 64, 128):
        assert rows[w]["trained"] and rows[w]["hypernet_accuracy"] >= 0.90, rows[w]
    assert rows[96]["hypernet_accuracy"] >= 0.80, rows[96]
    assert "max_component_size=128" in results["metrics"]["refused_width"]["error"]
    assert (out / "dynamic_widths.png").stat().st_size > 0
    assert "| hidden width |" in (out / "summary.md").read_text()
