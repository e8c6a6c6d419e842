"""The advertised public surface imports, and the CLI answers bad arguments clearly."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import hyperdnn
from hyperdnn._version import package_version
from hyperdnn.cli import main
from hyperdnn.registry import RegistryError
from tests.helpers import run_doctests


def test_every_advertised_name_imports():
    for name in hyperdnn.__all__:
        assert hasattr(hyperdnn, name), name
    for mod in [
        "adapters",
        "spec",
        "target",
        "target.kernels",
        "target.plan",
        "target.reparam",
        "target.structure",
        "target.swap",
        "target.target",
        "target.vmap",
        "conditioners",
        "trunks",
        "heads",
        "init",
        "hypernet",
        "data",
        "cli",
        "recipes.demo",
        "recipes.dynamic",
        "recipes.continual",
        "recipes.uncertainty",
        "methods.flow",
        "methods.bayesian_hypernet",
        "methods.implicit_hypernet",
        "methods.hypernet_dropout",
        "baselines.deep_ensemble",
        "baselines.mc_dropout",
        "metrics.calibration",
        "metrics.ood",
        "data.shift",
        "data.toy",
        "recipes.causal",
        "methods.treatment_effect",
        "methods.hyperite",
        "baselines.meta_learners",
        "baselines.econml_learners",
        "metrics.causal",
        "data.causal",
        "data.ihdp",
        "data.nie_wager",
        "recipes.inr",
        "methods",
        "baselines",
        "metrics",
        "networks",
        "siren",
        "optim",
        "dynamic",
        "layers",
        "norm_stats",
    ]:
        importlib.import_module(f"hyperdnn.{mod}")


CORE_MODULES = [
    "hyperdnn._checks",
    "hyperdnn.adapters",
    "hyperdnn._factories",
    "hyperdnn._version",
    "hyperdnn.conditioners",
    "hyperdnn.dynamic",
    "hyperdnn.heads",
    "hyperdnn.hypernet",
    "hyperdnn.init",
    "hyperdnn.layers",
    "hyperdnn.norm_stats",
    "hyperdnn.target",
    "hyperdnn.target.kernels",
    "hyperdnn.target.target",
    "hyperdnn.trunks",
]


@pytest.mark.parametrize("module", CORE_MODULES)
def test_docstring_examples_run(module):
    run_doctests(module)


def test_registries_list_the_builtins():
    assert {"once", "multihead", "componentwise", "chunked", "lowrank"} <= set(hyperdnn.list_heads())
    assert "mlp" in hyperdnn.list_trunks()
    assert {"task_embedding", "data_encoder", "noise", "continuous", "learned_latent"} <= set(
        hyperdnn.list_conditioners()
    )
    with pytest.raises(RegistryError, match="unknown head 'chunk'; did you mean 'chunked'"):
        hyperdnn.create_head("chunk")
    with pytest.raises(RegistryError, match="unknown conditioner 'nope'"):
        hyperdnn.create_conditioner("nope")


PLUGINS = """
import importlib.metadata as md

real = md.entry_points
fake = {
    "hyperdnn.heads": "hyperdnn.heads:Once",
    "hyperdnn.trunks": "hyperdnn.trunks:MLP",
    "hyperdnn.conditioners": "hyperdnn.conditioners:Noise",
}


def entry_points(**kw):
    if kw.get("group") in fake:
        return [md.EntryPoint(name="plugin", value=fake[kw["group"]], group=kw["group"])]
    return real(**kw)


md.entry_points = entry_points
import hyperdnn

print(hyperdnn.list_heads("p*"), hyperdnn.list_trunks("p*"), hyperdnn.list_conditioners("p*"))
print(type(hyperdnn.create_conditioner("plugin", dim=3)).__name__)
"""


def test_installed_packages_add_heads_trunks_and_conditioners_through_entry_points():
    # a fresh interpreter: the registries scan their entry-point groups once, on first use
    done = subprocess.run([sys.executable, "-c", PLUGINS], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["['plugin'] ['plugin'] ['plugin']", "Noise"]


def test_version_is_stated_once_in_pyproject(monkeypatch, tmp_path):
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    stated = re.search(r'(?m)^version = "([^"]+)"', pyproject.read_text()).group(1)
    assert hyperdnn.__version__ == stated == importlib.metadata.version("hyperdnn")
    assert not re.search(r"__version__\s*=\s*[\"']", (Path(hyperdnn.__file__)).read_text())

    # a source tree without package metadata reads pyproject.toml
    def no_metadata(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", no_metadata)
    assert package_version() == stated
    other = tmp_path / "pyproject.toml"
    other.write_text('[build-system]\nrequires = ["x"]\n\n[project]\nname = "hyperdnn"\nversion = "9.8.7"\n')
    assert package_version(other) == "9.8.7"
    assert package_version(tmp_path / "missing.toml") == "0+unknown"


def test_cli_unknown_command(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_demo_bad_arguments(capsys):
    # one line each, exit 2 (tests/test_cli_demo.py sweeps every option)
    assert main(["demo", "--epochs", "0"]) == 2
    assert capsys.readouterr().err == "hyperdnn demo: error: --epochs: expected an int >= 1, got 0\n"
    assert main(["demo", "--epochs", "many"]) == 2
    assert "--epochs: expected int, got 'many'" in capsys.readouterr().err


def test_demo_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["demo", "--out", str(blocker / "sub"), "--epochs", "1"]) == 2
    assert f"cannot create output folder {str(blocker / 'sub')!r}" in capsys.readouterr().err


def test_demo_runs_and_writes_results(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "2", "--threads", "1", "--progress", "false"]) == 0
    models = json.loads((out / "results.json").read_text())["metrics"]["models"]
    names = [m["model"] for m in models]
    assert names == ["standard DNN", "hypernet, generate once", "hypernet, chunked"]
    chunked = models[2]
    assert chunked["trainable"] < chunked["target_params"]
    assert all(0.0 <= a <= 1.0 for m in models for a in m["accuracies"])
    assert (out / "learning_curves.png").stat().st_size > 0
    assert "| model |" in (out / "summary.md").read_text()
