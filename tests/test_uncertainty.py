"""The uncertainty recipe end to end: --quick writes its results, tables, figures and models;
resume after an interruption gives the same numbers; bad input is one line and exit status 2
with nothing written; the full-MNIST loader runs through it on tiny idx files."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch

from hyperdnn.engine import Checkpointer, load_model, run_command
from hyperdnn.methods import ImplicitHypernet
from hyperdnn.recipes.uncertainty import METHODS, UncertaintyConfig, plan
from tests.test_continual import _write_mnist

#: --quick on scikit-learn's digits with small networks (every method, both tasks)
TINY = [
    "--quick", "--data", "digits", "--hidden", "16", "--reg_hidden", "16", "--trunk", "16", "--chunk_size", "128",
    "--chunk_embed", "4", "--chunk_hidden", "16", "--flow_hidden", "8", "--noise_dim", "8", "--samples", "4",
    "--reg_points", "64", "--reg_epochs", "3", "--progress", "false", "--threads", "1",
]  # fmt: skip


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    code = run_command(argv, stdout=io.StringIO(), stderr=err)
    return code, err.getvalue()


def _numbers(results: dict) -> dict:
    """What a run measured (everything but the wall times)."""
    m = results["metrics"]
    return {k: m[k] for k in ("classification", "regression", "parameters")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("uncertainty") / "full"
    code, err = _run(["uncertainty", *TINY, "--checkpoint_every", "1", "--out", str(out)])
    assert code == 0, err
    return out, json.loads((out / "results.json").read_text())


def test_quick_run_writes_every_method_figure_and_model(uninterrupted) -> None:
    out, results = uninterrupted
    m = results["metrics"]
    assert set(m["classification"]) == set(METHODS) | {"criteria"} and set(m["regression"]) >= set(METHODS)
    for method in METHODS:
        r = m["classification"][method]
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["ece"] <= 1.0 and r["nll"] > 0
        assert set(r["ood"]) == {"classes", "rotated", "noise"}
        mi = r["ood"]["classes"]["mutual_information"]
        assert (mi is None) == (method == "single")  # a single network's MI is zero everywhere
        assert m["regression"][method]["band_ratio"] > 0
    counted = {sum(m["classification"][method]["reliability"]["count"]) for method in METHODS}
    assert len(counted) == 1 and counted.pop() > 0  # every method binned every test image
    params = m["parameters"]
    assert params["classification/ensemble"] == 5 * params["classification/single"]
    assert set(m["classification"]["criteria"]["checks"]) >= {"within 0.03 of the ensemble", "above MC dropout"}
    for name in ("reliability.png", "entropy.png", "regression.png"):
        assert (out / name).stat().st_size > 0
    summary = (out / "summary.md").read_text()
    assert "| deep ensemble (5) |" in summary and "Held-out classes, best hypernetwork" in summary
    model = load_model(out, "classification-implicit")
    assert isinstance(model, ImplicitHypernet) and not model.training
    assert model(torch.rand(3, 64)).shape == (4, 3, 5)


def test_plan_and_presets() -> None:
    cfg = UncertaintyConfig(quick=True)
    assert [u.epochs for u in plan(cfg)] == [2] * 6 + [20] * 6
    assert UncertaintyConfig().task_epochs("classification") == 20
    assert UncertaintyConfig(epochs=7, quick=True).task_epochs("classification") == 7


# classification units save after each of their 2 epochs, regression units after each of 3:
# 7 is inside the implicit hypernetwork's classification unit, 22 inside its regression unit
@pytest.mark.parametrize("stop_after", [7, 22])
def test_resume_ends_with_the_same_results(tmp_path: Path, monkeypatch, uninterrupted, stop_after: int) -> None:
    out = tmp_path / "run"
    original = Checkpointer.save
    saves = []

    def save_then_stop(self, tensors, state):
        original(self, tensors, state)
        saves.append(state.get("unit"))
        if len(saves) == stop_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpointer, "save", save_then_stop)
    code, err = _run(["uncertainty", *TINY, "--checkpoint_every", "1", "--out", str(out)])
    assert code == 130 and "--resume" in err
    monkeypatch.setattr(Checkpointer, "save", original)
    code, err = _run(["uncertainty", "--out", str(out), "--resume", "--progress", "false"])
    assert code == 0, err
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["resumed"] is True
    assert _numbers(resumed) == _numbers(uninterrupted[1])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--samples", "0"], "--samples: expected an int >= 1, got 0"),
        (["--ood_sets", "classes,moon"], "--ood_sets"),
        (["--classes", "10"], "--classes: digits has 10 classes and some must be held out"),
        (["--diversity", "1", "--train_samples", "1"], "--train_samples: the diversity term compares weight sets"),
        (["--methods", "single,bogus"], "--methods"),
    ],
)
def test_bad_input_is_one_line_and_nothing_written(tmp_path: Path, argv: list[str], message: str) -> None:
    out = tmp_path / "run"
    code, err = _run(["uncertainty", "--data", "digits", *argv, "--out", str(out)])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_missing_extra_is_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torchmetrics", None)  # import torchmetrics now fails
    out = tmp_path / "run"
    code, err = _run(["uncertainty", *TINY, "--out", str(out)])
    assert code == 2 and "needs torchmetrics: pip install 'hyperdnn[uncertainty]'" in err, err
    assert not out.exists()


def test_recipe_runs_on_local_mnist_files(tmp_path: Path) -> None:
    _write_mnist(tmp_path / "data")
    out = tmp_path / "run"
    tiny = ["mnist" if a == "digits" else a for a in TINY]
    argv = ["uncertainty", *tiny, "--data_root", str(tmp_path / "data"), "--tasks", "classification"]
    code, err = _run(argv + ["--methods", "single,implicit", "--ood_sets", "classes,rotated", "--out", str(out)])
    assert code == 0, err
    m = json.loads((out / "results.json").read_text())["metrics"]["classification"]
    assert set(m["implicit"]["ood"]) == {"classes", "rotated"}
