"""The hyper-parameter-conditioned hypernetwork (methods.hyperparameter) and the hyperparams recipe:
the penalty, the range warning, the separate models as plain training, and the recipe end to end
with resume."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn import MLP, Target
from hyperdnn.engine import derive_seed, load_model
from hyperdnn.methods.hyperparameter import HyperparameterNetwork, l2_penalty
from hyperdnn.networks import mlp
from hyperdnn.recipes.hyperparams import HyperparamsConfig, load_splits, plan, separate_values, sweep_values
from tests.helpers import interrupt_then_resume, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------- the pieces
def test_l2_penalty_against_plain_sums() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    plain = net[0].weight.pow(2).sum() + net[2].weight.pow(2).sum()
    assert torch.equal(l2_penalty(dict(net.named_parameters()), batched=False), plain)
    batched = {name: torch.stack([p, 2 * p]) for name, p in net.named_parameters()}
    torch.testing.assert_close(l2_penalty(batched), torch.stack([plain, 4 * plain]))
    everything = l2_penalty(dict(net.named_parameters()), batched=False, select=lambda name: True)
    torch.testing.assert_close(everything, sum(p.pow(2).sum() for p in net.parameters()))
    with pytest.raises(ValueError, match="no tensor selected among"):
        l2_penalty({"bias": torch.ones(2)}, batched=False)


def test_generated_networks_start_at_the_targets_weights_and_equal_plain_pytorch() -> None:
    """theta(lambda) = theta_0 + delta(lambda): at construction theta_0 is the target's own
    weights, and each generated network runs like a plain copy of the module holding them."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    net = HyperparameterNetwork(Target(module), 1e-4, 1e-1, MLP((8,)), residual_scale=0.0)
    values = torch.tensor([1e-4, 3e-3, 1e-1])
    weights = net.generate(values)
    for name, p in module.named_parameters():
        torch.testing.assert_close(weights[name], p.detach().expand_as(weights[name]))
    x = torch.randn(5, 4)
    out = net(x, values)
    for k in range(3):
        plain = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
        plain.load_state_dict({n: w[k] for n, w in weights.items()})
        torch.testing.assert_close(out[k], plain(x))


def test_values_outside_the_trained_range_warn_naming_the_range() -> None:
    net = HyperparameterNetwork(Target(nn.Linear(2, 2)), 1e-4, 1e-1, MLP((4,)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net.generate([1e-4, 1e-1])  # the ends are inside
        net.generate(torch.tensor([1e-4, 1e-1]))  # also rounded to float32 (1e-4 becomes 0.99999997e-4)
    with pytest.warns(UserWarning, match=r"values \[1e-05, 0.5\] lie outside the trained range \[0.0001, 0.1\]"):
        net.generate([1e-5, 1e-2, 0.5])
    with pytest.raises(ValueError, match="values must be finite numbers > 0"):
        net.generate([0.0])
    with pytest.raises(ValueError, match="expected finite 0 < low < high"):
        HyperparameterNetwork(Target(nn.Linear(2, 2)), 0.0, 1.0)
    draws = net.sample(1000, torch.Generator().manual_seed(0))
    assert float(draws.min()) >= 1e-4 and float(draws.max()) <= 1e-1
    logs = torch.log10(draws)  # log-uniform: each decade holds about a third
    assert abs(float(((logs > -3) & (logs < -2)).double().mean()) - 1 / 3) < 0.05


def test_sweep_values_are_log_spaced_with_exact_ends() -> None:
    v = sweep_values(1e-6, 1e-2, 5)
    assert v[0] == 1e-6 and v[-1] == 1e-2
    assert [round(math.log10(x), 9) for x in v] == [-6, -5, -4, -3, -2]


def test_the_default_hypernetwork_trains_on_under_a_third_of_the_sweeps_work() -> None:
    """By default the hypernetwork's (step, value) pairs are well under a third of the sweep's
    steps (a hypernetwork step costs more than a separate model's: it also generates the
    weights), and one value per step gives one network's outputs."""
    cfg = HyperparamsConfig()
    assert cfg.hnet_steps * cfg.values_per_step * 3 <= cfg.steps * cfg.values / 2
    net = HyperparameterNetwork(Target(mlp(8, (16,), 3)), cfg.low, cfg.high, MLP(cfg.trunk))
    values = net.sample(cfg.values_per_step, torch.Generator().manual_seed(0))
    assert net(torch.randn(5, 8), values).shape == (cfg.values_per_step, 5, 3)


# ---------------------------------------------------------------------- the degenerate case
def test_a_separate_model_is_ordinary_training(tmp_path: Path) -> None:
    """A separate model of the sweep is a plain PyTorch loop: the same initial weights, Adam,
    cross-entropy plus lambda times the sum of squared weights."""
    out = tmp_path / "run"
    argv = ["hyperparams", "--values", "2", "--steps", "30", "--hnet_steps", "10", "--sweep", "3", "--steps_per_epoch",
            "10", "--hidden", "16", "--trunk", "8,4", "--batch_size", "64", "--seed", "4", "--progress", "false"]  # fmt: skip
    code, err = run_cli([*argv, "--out", str(out)])
    assert code == 0, err
    cfg = HyperparamsConfig(values=2, steps=30, hidden=(16,), batch_size=64, steps_per_epoch=10)
    key = list(separate_values(cfg))[1]  # lambda = high = 1e-2
    measured = json.loads((out / "results.json").read_text())["metrics"]["separate"][key]
    data = load_splits(cfg, 4)
    (x, y), (xv, yv) = data["train"], data["val"]
    torch.manual_seed(derive_seed(4, "init"))
    net = mlp(64, (16,), 10)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
    for epoch in range(3):
        g = torch.Generator().manual_seed(derive_seed(4, "batches", epoch))
        for _ in range(10):
            idx = torch.randperm(len(x), generator=g)[:64]
            loss = F.cross_entropy(net(x[idx]), y[idx]) + 1e-2 * (
                net[0].weight.pow(2).sum() + net[2].weight.pow(2).sum()
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        assert measured["val_loss"] == pytest.approx(F.cross_entropy(net(xv), yv).item(), rel=1e-6)
        assert measured["val_acc"] == pytest.approx(float((net(xv).argmax(1) == yv).double().mean()))


# ---------------------------------------------------------------------- the recipe
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    cases = [
        (["--low", "1e-2", "--high", "1e-4"], "--low/--high: expected low < high"),
        (["--low", "0"], "--low: expected a float > 0"),
        (["--train_size", "1500", "--val_size", "500"], "digits has 1,797 images"),
        (["--encoding", "sine"], "--encoding"),
        (["--data", "nodata"], "--data: expected a registered data set"),
    ]
    for argv, message in cases:
        out = tmp_path / "run"
        code, err = run_cli(["hyperparams", *argv, "--out", str(out)])
        assert code == 2 and message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1 and not out.exists()


_QUICK = ["--quick", "--progress", "false", "--checkpoint_every", "1"]


def _numbers(metrics: dict) -> dict:
    """The measured numbers without the times (which differ between runs)."""
    strip = lambda d: {k: v for k, v in d.items() if k not in ("train_seconds", "wall_seconds")}  # noqa: E731
    return {
        "hypernetwork": strip(metrics["hypernetwork"]),
        "separate": {k: strip(v) for k, v in metrics["separate"].items()},
        "per_value": metrics["per_value"],
    }


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("hyperparams") / "quick"
    code, err = run_cli(["hyperparams", *_QUICK, "--out", str(out)])
    assert code == 0, err
    return out, json.loads((out / "results.json").read_text())


def test_quick_run_reports_both_methods(quick_run) -> None:
    out, results = quick_run
    m = results["metrics"]
    cfg = HyperparamsConfig(quick=True)
    assert [r["value"] for r in m["per_value"]] == pytest.approx(cfg.grid)
    assert len(m["separate"]) == len(cfg.grid) + 1 and m["hypernetwork"]["train_seconds"] > 0
    picked = m["hypernetwork"]["pick"]
    assert cfg.low <= picked <= cfg.high and m["separate"]["separate at the pick"]["value"] == picked
    assert [u.key for u in plan(cfg)][-1] == "separate at the pick"
    assert (out / "hyperparams.png").stat().st_size > 0 and "| hypernetwork |" in (out / "summary.md").read_text()
    # the saved hypernetwork gives the validation losses it was measured with
    model = load_model(out, "model")
    data = load_splits(cfg, 0)
    xv, yv = data["val"]
    with torch.no_grad():
        logits = model(xv, m["hypernetwork"]["values"])
    losses = [F.cross_entropy(lg, yv).item() for lg in logits]
    assert losses == pytest.approx(m["hypernetwork"]["val_loss"], rel=1e-5)
    with pytest.warns(UserWarning, match="outside the trained range"):
        model(xv, [10 * cfg.high])


@pytest.mark.parametrize("stop_after", [2, 6])
def test_resume_ends_with_the_same_numbers(tmp_path: Path, monkeypatch, quick_run, stop_after: int) -> None:
    """Stopped inside the hypernetwork (2) and inside the sweep (6), a resumed run ends with the
    numbers of an uninterrupted one; the model at the pick reads the pick from the checkpoint."""
    out = tmp_path / "run"
    resumed = interrupt_then_resume(monkeypatch, "hyperparams", _QUICK, out, stop_after)
    assert _numbers(resumed) == _numbers(quick_run[1]["metrics"])
