"""Implicit neural representations (``hyperdnn run inr``) and its pieces: SIREN and its
initialisation statistics, generated SIRENs against loaded ones, coordinates and pixels,
per-image fitting, Reptile and shift modulation against plain PyTorch, PSNR and FLOPs, the
image grid, bad input, and the recipe's quick run with resume."""

from __future__ import annotations

import copy
import io
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn import MLP, DataEncoder, HyperModel, HyperNetwork, Once, Target, WeightSpec
from hyperdnn.baselines.inr_fitting import INRFitter, stacked_inits
from hyperdnn.baselines.learned_init import Reptile
from hyperdnn.baselines.modulation import hidden_biases, shift_modulation
from hyperdnn.engine import Checkpointer, load_model, run_command
from hyperdnn.engine.report import image_grid_figure
from hyperdnn.methods.inr import coordinate_grid, image_values, pixels_at
from hyperdnn.metrics.reconstruction import count_flops, psnr
from hyperdnn.recipes.inr import (
    Images,
    InrConfig,
    build_hypernetwork,
    build_model,
    build_modulation,
    hypernetwork_parameters,
    modulation_parameters,
)
from hyperdnn.siren import Sine, SirenLinear, siren, siren_parameters
from tests.helpers import one_set, run_doctests

pytestmark = pytest.mark.usefixtures("one_thread")


def plain_siren(x: torch.Tensor, w: dict[str, torch.Tensor], omega: float = 30.0) -> torch.Tensor:
    """A SIREN written out in plain PyTorch: sin(omega (h W^T + b)) per hidden layer, then linear."""
    layers = [(w[f"{i}.weight"], w[f"{i}.bias"]) for i in range(0, 2 * len(w), 2) if f"{i}.weight" in w]
    h = x
    for weight, bias in layers[:-1]:
        h = torch.sin(omega * F.linear(h, weight, bias))
    return F.linear(h, *layers[-1])


# ---------------------------------------------------------------------- SIREN and its statistics
def test_siren_layers_and_their_initialisation() -> None:
    torch.manual_seed(0)
    net = siren(2, (32, 32), 1, omega_0=30.0, omega=20.0)
    assert [type(m) for m in net] == [SirenLinear, Sine, SirenLinear, Sine, SirenLinear]
    assert (net[1].omega, net[3].omega) == (30.0, 20.0) and net[0].first and not net[2].first
    assert siren_parameters(2, (32, 32), 1) == sum(p.numel() for p in net.parameters()) == 1185
    assert float(net[0].weight.abs().max()) <= 1 / 2  # U(-1/fan_in, 1/fan_in)
    assert float(net[2].weight.abs().max()) <= math.sqrt(6 / 32) / 20.0
    big = SirenLinear(400, 300, omega=30.0)  # the empirical spread of a large layer is the formula's
    assert abs(float(big.weight.std()) - math.sqrt(6 / 400) / 30.0 / math.sqrt(3)) < 0.02 * math.sqrt(6 / 400) / 30.0
    assert abs(float(big.bias.std()) - 1 / math.sqrt(400) / math.sqrt(3)) < 0.15 / math.sqrt(400)
    x = torch.rand(5, 7, 2) * 2 - 1
    h = torch.sin(30.0 * net[0](x))
    h = torch.sin(20.0 * net[2](h))
    torch.testing.assert_close(net(x), net[4](h))


def test_siren_refuses_bad_sizes_and_frequencies() -> None:
    with pytest.raises(ValueError, match=r"siren: widths must be ints >= 1, got in_features=0, hidden\[1\]=-1"):
        siren(0, (4, -1), 1)
    with pytest.raises(ValueError, match=r"siren: hidden must name at least one hidden width"):
        siren(2, (), 1)
    with pytest.raises(ValueError, match=r"siren: omega must be a finite number > 0, got 0.0"):
        siren(2, (4,), 1, omega=0.0)
    with pytest.raises(ValueError, match=r"SirenLinear: omega must be a finite number > 0, got -1.0"):
        SirenLinear(2, 3, omega=-1.0)
    with pytest.raises(TypeError, match=r"Sine: omega must be a number"):
        Sine("30")  # type: ignore[arg-type]


def test_weight_spec_records_sirens_own_initialisation_statistics() -> None:
    spec = WeightSpec.from_module(siren(2, (32, 32), 1, omega=30.0))
    stats = {t.name: (t.module_type, t.init_mean, t.init_std, t.fan_in) for t in spec}
    third = 1 / math.sqrt(3)  # the std of U(-b, b) is b / sqrt(3)
    assert stats["0.weight"] == ("SirenLinear", 0.0, pytest.approx(0.5 * third), 2)
    assert stats["2.weight"] == ("SirenLinear", 0.0, pytest.approx(math.sqrt(6 / 32) / 30 * third), 32)
    assert stats["4.weight"] == ("SirenLinear", 0.0, pytest.approx(math.sqrt(6 / 32) / 30 * third), 32)
    assert stats["0.bias"][2] == pytest.approx(third / math.sqrt(2))
    assert stats["2.bias"][2] == pytest.approx(third / math.sqrt(32))
    linear = WeightSpec.from_module(nn.Linear(32, 32))["weight"].init_std  # a plain Linear is 12x wider
    assert linear == pytest.approx(third / math.sqrt(32)) and linear > 10 * stats["2.weight"][2]


def test_hyperfan_init_generates_sirens_initialisation_statistics() -> None:
    """At initialisation a hypernetwork writes every SIREN tensor with the spread SIREN's own
    initialisation gives it (over images and elements), not nn.Linear's."""
    torch.manual_seed(0)
    target = Target(siren(2, (64, 64), 1))
    images = torch.rand(256, 64)
    hnet = HyperNetwork(target, DataEncoder(nn.Sequential(nn.Linear(64, 32), nn.ReLU()), 32, images), MLP((64,)))
    with torch.no_grad():
        weights = hnet(images)
    for t in (t for t in target.spec if t.numel >= 32):  # the one output bias is a single draw: no spread to test
        got = float(weights[t.name].std())
        assert abs(got - t.init_std) < 0.25 * t.init_std, (t.name, got, t.init_std)


# ---------------------------------------------------------------------- generated SIRENs
def test_a_siren_with_generated_weights_equals_one_with_the_same_weights_loaded() -> None:
    torch.manual_seed(0)
    cfg = InrConfig(hidden=(16, 16), encoder=(32,), features=16, trunk=(16,))
    images = Images(torch.rand(64, 64), torch.rand(5, 64), (1, 8, 8))
    model = build_hypernetwork(cfg, images).eval()
    x = images.test
    grid = coordinate_grid(8, 8).expand(len(x), -1, -1)
    with torch.no_grad():
        out = model(grid, x)  # one per-sample pass: (5, 64, 1)
        weights = model.hypernet(x)
    assert out.shape == (5, 64, 1)
    for b in range(len(x)):
        loaded = model.target.materialize(one_set(weights, b))  # a plain nn.Sequential with the weights as its own
        assert all(type(m) is type(n) for m, n in zip(loaded, model.target.module))
        with torch.no_grad():
            torch.testing.assert_close(out[b], loaded(grid[b]))
            torch.testing.assert_close(out[b], plain_siren(grid[b], one_set(weights, b)))


def test_generating_the_first_layer_and_the_biases_shares_and_trains_the_other_weights() -> None:
    torch.manual_seed(0)
    cfg = InrConfig(hidden=(16, 12, 8), encoder=(32,), features=16, trunk=(16,), generate="first")
    images = Images(torch.rand(64, 64), torch.rand(4, 64), (1, 8, 8))
    model = build_hypernetwork(cfg, images)
    assert model.target.spec.names == ("0.weight", "0.bias", "2.bias", "4.bias", "6.bias")
    assert model.parameter_counts()["trainable"] == hypernetwork_parameters(cfg, 64, 1)
    x, grid = images.test, coordinate_grid(8, 8).expand(4, -1, -1)
    out = model(grid, x)
    weights = model.hypernet(x)
    shared = {k: v for k, v in model.target.module.named_parameters() if k not in weights}
    assert sorted(shared) == ["2.weight", "4.weight", "6.weight"]
    for b in range(len(x)):  # image b's SIREN: its own first layer and biases, the shared hidden weights
        torch.testing.assert_close(out[b], plain_siren(grid[b], {**shared, **one_set(weights, b)}))
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in shared.values())  # trained, not frozen
    assert all(p.grad is None for k, p in model.target.module.named_parameters() if k in weights)
    rebuilt = build_model(cfg, "hypernetwork", {"features": 64, "shape": [1, 8, 8]})  # what load_model builds
    assert rebuilt.target.spec.names == model.target.spec.names
    mod = build_modulation(cfg, images)  # the modulation keeps the depth and matches the count
    assert len(mod.target.module) == len(model.target.module)
    assert abs(mod.parameter_counts()["trainable"] - hypernetwork_parameters(cfg, 64, 1)) < 0.02 * hypernetwork_parameters(cfg, 64, 1)  # fmt: skip


def test_shift_modulation_is_a_shared_siren_with_shifted_hidden_biases() -> None:
    torch.manual_seed(0)
    net = siren(2, (16, 16), 1)
    encoder = DataEncoder(nn.Linear(64, 8), 8)
    model = shift_modulation(net, encoder, latent=4)
    assert hidden_biases(net) == ["0.bias", "2.bias"] and model.target.spec.names == ("0.bias", "2.bias")
    x, coords = torch.rand(3, 64), torch.rand(3, 10, 2) * 2 - 1
    with torch.no_grad():
        out, biases = model(coords, x), model.hypernet(x)
    for b in range(3):
        w = {**{k: v.detach() for k, v in net.named_parameters()}, **one_set(biases, b)}
        torch.testing.assert_close(out[b], plain_siren(coords[b], w))
    theta0 = model.hypernet.theta_mean
    assert isinstance(theta0, nn.Parameter) and any(p is theta0 for p in model.trainable_parameters())
    assert sum(p.numel() for p in model.trainable_parameters()) == model.parameter_counts()["trainable"]
    with pytest.raises(ValueError, match=r"hidden_biases: expected at least two linear layers with a bias"):
        hidden_biases(nn.Linear(2, 3))


def test_the_modulation_has_as_many_trainable_parameters_as_the_hypernetwork() -> None:
    cfg = InrConfig(hidden=(16, 16), encoder=(32,), features=16, trunk=(24, 16))
    images = Images(torch.rand(64, 64), torch.rand(2, 64), (1, 8, 8))
    hyper, mod = build_hypernetwork(cfg, images), build_modulation(cfg, images)
    width = mod.target.module[0].out_features
    assert hyper.parameter_counts()["trainable"] == hypernetwork_parameters(cfg, 64, 1)
    assert mod.parameter_counts()["trainable"] == modulation_parameters(cfg, 64, 1, width)
    budget = hypernetwork_parameters(cfg, 64, 1)
    gap = abs(modulation_parameters(cfg, 64, 1, width) - budget)
    assert all(gap <= abs(modulation_parameters(cfg, 64, 1, w) - budget) for w in (width - 1, width + 1))
    assert gap < 0.02 * budget


# ---------------------------------------------------------------------- coordinates and pixels
def test_coordinates_and_pixel_values_follow_the_flattened_image() -> None:
    images = torch.rand(2, 3 * 4 * 5)
    grid = coordinate_grid(4, 5)
    values = image_values(images, (3, 4, 5))
    assert values.shape == (2, 20, 3)
    assert torch.equal(values, images.reshape(2, 3, 4, 5).permute(0, 2, 3, 1).reshape(2, 20, 3))
    assert torch.equal(image_values(images.reshape(2, 3, 4, 5), (3, 4, 5)), values)
    idx = torch.tensor([[0, 7, 19], [3, 3, 12]])
    torch.testing.assert_close(pixels_at(images, grid[idx], (3, 4, 5)), values.gather(1, idx.unsqueeze(-1).expand(-1, -1, 3)))  # fmt: skip
    torch.testing.assert_close(grid[7], torch.tensor([-1 + 2 / 3, 0.0]))  # row 1 of 4, column 2 of 5


def test_images_of_the_wrong_size_and_coordinates_off_the_grid_are_refused() -> None:
    with pytest.raises(ValueError, match=r"image_values: expected images of shape \(B, 784\) or \(B, 1, 28, 28\) for the image shape \(1, 28, 28\), got \(3, 64\)"):  # fmt: skip
        image_values(torch.rand(3, 64), (1, 28, 28))
    images = torch.rand(2, 16)
    with pytest.raises(ValueError, match=r"pixels_at: coordinates must lie on the grid \[-1, 1\]\^2, got \[0.0, 1.5\] at image 1, point 0 \(2 outside in all\)"):  # fmt: skip
        pixels_at(images, torch.tensor([[[0.0, 0.0], [0.1, 0.2]], [[0.0, 1.5], [float("nan"), 0.0]]]), (1, 4, 4))
    with pytest.raises(ValueError, match=r"pixels_at: expected coords of shape \(2, P, 2\) for 2 images, got \(2, 5, 3\)"):  # fmt: skip
        pixels_at(images, torch.zeros(2, 5, 3), (1, 4, 4))
    with pytest.raises(ValueError, match=r"coordinate_grid: sizes must be ints >= 1, got height=0"):
        coordinate_grid(0, 3)
    with pytest.raises(ValueError, match=r"shape must be \(C, H, W\) of ints >= 1, got \(4, 4\)"):
        image_values(images, (4, 4))


# ---------------------------------------------------------------------- fitting, Reptile, metrics
def _signals(B: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return coordinate_grid(6, 6), torch.rand(B, 36, 1, generator=g)


def test_batched_fitting_equals_fitting_each_image_alone_in_plain_pytorch() -> None:
    coords, values = _signals()
    make = lambda: siren(2, (8, 8), 1)  # noqa: E731
    torch.manual_seed(0)
    init = stacked_inits(make, 3)
    torch.manual_seed(0)
    nets = [make() for _ in range(3)]  # the same initialisations, as plain modules
    fitter = INRFitter(Target(make()), init, coords, values, lr=1e-3)
    for _ in range(5):
        fitter.step()
    for b, net in enumerate(nets):
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        for _ in range(5):
            opt.zero_grad()
            (net(coords) - values[b]).pow(2).mean().backward()
            opt.step()
        for name, p in net.named_parameters():
            torch.testing.assert_close(fitter.weights[name][b], p, rtol=1e-4, atol=1e-6)
    assert fitter.steps == 5
    torch.testing.assert_close(fitter.psnr()[0], 10 * torch.log10(1 / (nets[0](coords) - values[0]).pow(2).mean()).detach())  # fmt: skip


def test_fitting_refuses_what_does_not_fit() -> None:
    coords, values = _signals()
    target = Target(siren(2, (8,), 1))
    with pytest.raises(ValueError, match=r"INRFitter init: weight names do not match the spec. Missing: \['2.bias'\]"):
        INRFitter(target, {k: v for k, v in target.default_weights().items() if k != "2.bias"}, coords, values, 1e-3)
    with pytest.raises(ValueError, match=r"INRFitter: init must be unbatched or of batch \(3,\) for 3 signals, got \(2,\)"):  # fmt: skip
        INRFitter(target, {k: v.expand(2, *v.shape) for k, v in target.default_weights().items()}, coords, values, 1e-3)
    with pytest.raises(ValueError, match=r"INRFitter: coords \(3, 5, 2\) do not fit values \(3, 36, 1\)"):
        INRFitter(target, target.default_weights(), torch.zeros(3, 5, 2), values, 1e-3)
    with pytest.raises(ValueError, match=r"INRFitter: lr must be a number > 0, got 0"):
        INRFitter(target, target.default_weights(), coords, values, 0)


def test_a_reptile_step_equals_the_plain_rule() -> None:
    coords, values = _signals(2)
    torch.manual_seed(0)
    target = Target(siren(2, (8,), 1))
    theta = {k: v.clone() for k, v in target.default_weights().items()}
    reptile = Reptile(target, theta, inner_steps=3, inner_lr=1e-3, outer_lr=1e-2)
    reptile.step(coords, values)
    fitted = []  # the plain rule: fit a copy per signal, then Adam on theta0 - mean(fitted)
    for b in range(2):
        net = copy.deepcopy(target.module)
        with torch.no_grad():
            for name, p in net.named_parameters():
                p.copy_(theta[name])
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        for _ in range(3):
            opt.zero_grad()
            (net(coords) - values[b]).pow(2).mean().backward()
            opt.step()
        fitted.append(dict(net.named_parameters()))
    plain = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    outer = torch.optim.Adam(list(plain.values()), lr=1e-2)
    for k, p in plain.items():
        p.grad = p.detach() - torch.stack([f[k].detach() for f in fitted]).mean(0)
    outer.step()
    for k in plain:
        torch.testing.assert_close(reptile.theta0[k], plain[k], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match=r"Reptile: inner_steps must be an int >= 1, got 0"):
        Reptile(target, theta, inner_steps=0, inner_lr=1e-3, outer_lr=1e-3)


def test_psnr_and_flops_against_plain_formulas() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(4, 3, 5, generator=g), torch.rand(4, 3, 5, generator=g)
    mse = ((a - b) ** 2).reshape(4, -1).mean(1)
    torch.testing.assert_close(psnr(a, b), 10 * torch.log10(1 / mse))
    torch.testing.assert_close(psnr(2 * a, 2 * b, peak=2.0), 10 * torch.log10(1 / mse))
    assert count_flops(lambda: nn.Linear(8, 3)(torch.rand(5, 8))) == 2 * 5 * 8 * 3
    with pytest.raises(ValueError, match=r"psnr: expected prediction and target of one shape \(B, ...\), got \(4, 3, 5\) and \(4, 15\)"):  # fmt: skip
        psnr(a, b.reshape(4, 15))
    with pytest.raises(ValueError, match=r"psnr: peak must be a number > 0, got 0"):
        psnr(a, b, peak=0)
    # one value per sample: (B,) is B samples
    torch.testing.assert_close(psnr(a[:, 0, 0], b[:, 0, 0]), 10 * torch.log10(1 / (a[:, 0, 0] - b[:, 0, 0]) ** 2))


def test_image_grid_figure_draws_a_row_per_method_and_refuses_mixed_shapes() -> None:
    fig = image_grid_figure({"a": torch.rand(3, 1, 4, 4), "b": torch.rand(3, 1, 4, 4)}, "t")
    assert len(fig.axes) == 6 and fig.axes[0].get_ylabel() == "a"
    with pytest.raises(
        ValueError, match=r"image_grid_figure: expected rows of one shape .* got rows 'b' \(2, 1, 4, 4\)"
    ):
        image_grid_figure({"a": torch.rand(3, 1, 4, 4), "b": torch.rand(2, 1, 4, 4)}, "t")


@pytest.mark.parametrize(
    "module",
    ["hyperdnn.siren", "hyperdnn.methods.inr", "hyperdnn.baselines.inr_fitting", "hyperdnn.baselines.learned_init",
     "hyperdnn.baselines.modulation", "hyperdnn.metrics.reconstruction"],
)  # fmt: skip
def test_docstring_examples_run(module: str) -> None:
    run_doctests(module)


# ---------------------------------------------------------------------- the recipe
#: the quick preset, smaller still: every method and stage, checkpoints inside each unit
TINY = ["--quick", "--train_images", "96", "--test_images", "4", "--epochs", "2", "--batch_size", "48",
        "--fit_steps", "2,4", "--meta_steps", "2", "--meta_batch", "4", "--meta_inner", "2", "--progress", "false",
        "--threads", "1"]  # fmt: skip


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    code = run_command(argv, stdout=io.StringIO(), stderr=err)
    return code, err.getvalue()


def _numbers(results: dict) -> dict:
    """A run's measurements without the seconds they took."""
    rows = [{k: v for k, v in r.items() if k != "seconds"} for r in results["metrics"]["rows"]]
    return {"rows": rows, "comparisons": results["metrics"]["comparisons"]}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("inr") / "full"
    code, err = _run(["inr", *TINY, "--out", str(out)])
    assert code == 0, err
    return out, json.loads((out / "results.json").read_text())


def test_the_quick_run_reports_every_method(uninterrupted) -> None:
    out, results = uninterrupted
    rows = results["metrics"]["rows"]
    assert [(r["key"], r["steps"]) for r in rows] == [
        ("hypernetwork", 0), ("modulation", 0), ("random init", 2), ("random init", 4), ("meta init", 2), ("meta init", 4)
    ]  # fmt: skip
    assert all(math.isfinite(r["psnr"]) and r["flops"] > 0 for r in rows)
    assert rows[3]["flops"] == pytest.approx(2 * rows[2]["flops"])  # fitting: FLOPs grow with the steps
    assert rows[0]["params"] == rows[1]["params"] or abs(rows[0]["params"] - rows[1]["params"]) < 0.02 * rows[0]["params"]  # fmt: skip
    assert {p.name for p in out.iterdir()} >= {"results.json", "summary.md", "psnr_vs_compute.png", "reconstructions.png", "hypernetwork.safetensors"}  # fmt: skip
    summary = (out / "summary.md").read_text()
    assert "| method | steps per image | PSNR (dB) |" in summary and "vs shift modulation" in summary


def test_the_saved_hypernetwork_loads_and_writes_the_same_sirens(uninterrupted) -> None:
    out, _ = uninterrupted
    model = load_model(out, "hypernetwork")
    assert isinstance(model, HyperModel) and isinstance(model.hypernet.head_config, Once)
    x = torch.rand(2, 784)
    grid = coordinate_grid(28, 28).expand(2, -1, -1)
    with torch.no_grad():
        torch.testing.assert_close(model(grid, x), load_model(out, "hypernetwork")(grid, x))


# checkpoints: 2 per unit of one stage (inside it, after it), 4 for meta init: 1 is inside the
# hypernetwork's training, 7 inside Reptile's meta-learning, 9 inside the fitting from its initialisation
@pytest.mark.parametrize("stop_after", [1, 7, 9])
def test_resume_ends_with_the_same_results(tmp_path: Path, monkeypatch, uninterrupted, stop_after: int) -> None:
    out = tmp_path / "run"
    original, saves = Checkpointer.save, []

    def save_then_stop(self, tensors, state):
        original(self, tensors, state)
        saves.append(state.get("unit"))
        if len(saves) == stop_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpointer, "save", save_then_stop)
    code, err = _run(["inr", *TINY, "--out", str(out)])
    assert code == 130 and "--resume" in err
    monkeypatch.setattr(Checkpointer, "save", original)
    code, err = _run(["inr", "--out", str(out), "--resume", "--progress", "false"])
    assert code == 0, err
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["resumed"] is True and _numbers(resumed) == _numbers(uninterrupted[1])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--show", "9", "--test_images", "4"], "--show: expected at most --test_images = 4 images, got 9"),
        (["--data", "mnist6k"], "--data: expected a registered data set"),
        (["--fit_steps", "0,10"], "--fit_steps: expected"),
        (["--methods", "hypernet"], "--methods: expected"),
        (["--omega", "0"], "--omega: expected a float > 0, got 0.0"),
        (
            ["--test_images", "4000", "--train_images", "2000"],
            "--test_images and --train_images: 4000 test and at least 2000",
        ),  # fmt: skip
        (["--data", "mnist", "--data_root", "/nonexistent"], "--data mnist:"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, argv: list[str], message: str) -> None:
    out = tmp_path / "run"
    code, err = _run(["inr", *argv, "--out", str(out)])
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not out.exists()
