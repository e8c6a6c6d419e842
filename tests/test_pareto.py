"""Pareto hypernetworks: rays, the solvers (PHN-LS, PHN-EPO's exact two-objective programme), the
hypervolume, Multi-MNIST, and the pareto recipe end to end with resume."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn import MLP, Target
from hyperdnn.baselines.scalarized import ScalarizedNetwork
from hyperdnn.data import get_dataset, list_datasets
from hyperdnn.data.multimnist import digit_labels, load_multimnist_idx, overlay_pairs
from hyperdnn.engine import load_model
from hyperdnn.methods.pareto import (
    ExactParetoOptimal,
    LinearScalarization,
    ParetoHyperNetwork,
    check_rays,
    epo_coefficients,
    sample_rays,
    spread_rays,
    toy_front,
    toy_losses,
)
from hyperdnn.metrics.pareto import hypervolume, non_dominated
from hyperdnn.optim import adam
from tests.helpers import interrupt_then_resume, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------- the degenerate case
@pytest.mark.parametrize("solver", [LinearScalarization(), ExactParetoOptimal()], ids=["LS", "EPO"])
def test_one_objective_phn_is_ordinary_hypernetwork_training(solver) -> None:
    """With one objective every ray is (1,): PHN-LS and PHN-EPO train the hypernetwork exactly as
    a plain loop over its one context with the plain loss does."""
    torch.manual_seed(0)
    phn = ParetoHyperNetwork(Target(nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))), 1, MLP((16,)))
    plain_hnet, target = copy.deepcopy(phn.hypernet), phn.target
    opt, plain_opt = adam(phn.parameters(), lr=1e-2), adam(plain_hnet.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        x, y = torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g)
        rays = sample_rays(2, 1, 0.2, g)
        assert torch.equal(rays, torch.ones(2, 1))
        weights = phn.generate(rays)
        out = phn.apply(weights, x)  # (2, 16, 3)
        losses = torch.stack([F.cross_entropy(o, y) for o in out]).unsqueeze(1)  # (K, 1)
        opt.zero_grad()
        solver.loss(losses, rays, weights).backward()
        opt.step()
        # the plain loop: the hypernetwork at its one context, cross-entropy, Adam
        plain_opt.zero_grad()
        F.cross_entropy(target(plain_hnet(torch.ones(1)), x), y).backward()
        plain_opt.step()
    for (name, a), b in zip(phn.hypernet.named_parameters(), plain_hnet.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_a_separate_model_with_one_objective_is_ordinary_training() -> None:
    torch.manual_seed(0)
    net = ScalarizedNetwork(nn.Linear(4, 3), [1.0])
    plain = copy.deepcopy(net.module)
    opt, plain_opt = adam(net.parameters(), lr=1e-2), adam(plain.parameters(), lr=1e-2)
    for _ in range(4):
        x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
        opt.zero_grad()
        net.loss(F.cross_entropy(net(x)[0], y).reshape(1, 1)).backward()
        opt.step()
        plain_opt.zero_grad()
        F.cross_entropy(plain(x), y).backward()
        plain_opt.step()
    for a, b in zip(net.module.parameters(), plain.parameters()):
        assert torch.equal(a, b)


def test_the_default_phn_trains_on_the_pairs_of_one_separate_model() -> None:
    """The paper's budget: a PHN learns the whole front in about the training of one model.
    By default a hypernetwork step sees as many (image, ray) pairs as a separate model's step,
    for as many steps per epoch and epochs, so its work is that of one separate model (plus
    generating the weights), not of the 5."""
    from hyperdnn.recipes.pareto import ParetoConfig

    cfg = ParetoConfig()
    n = 12_000  # multimnist5k's training images
    images = cfg.batch_size // cfg.rays_per_step
    assert cfg.rays_per_step * images == cfg.batch_size
    phn_steps, separate_steps = cfg.phn_epochs * -(-n // images), cfg.epochs * -(-n // cfg.batch_size)
    assert phn_steps == separate_steps
    assert phn_steps * cfg.batch_size * len(cfg.rays) <= separate_steps * cfg.batch_size * 5


# ---------------------------------------------------------------------- hypervolume
@pytest.mark.parametrize(
    "points, reference, expected",
    [
        ([[0.5, 0.5]], (1.0, 1.0), 0.25),
        ([[0.0, 1.0], [1.0, 0.0]], (2.0, 2.0), 3.0),  # two 2x1 boxes overlapping in 1x1
        ([[0.2, 0.6], [0.6, 0.2], [0.5, 0.5]], (1.0, 1.0), 0.3 * 0.4 + 0.1 * 0.5 + 0.4 * 0.8),
        ([[0.2, 0.6], [0.3, 0.7], [0.6, 0.2]], (1.0, 1.0), 0.8 * 0.4 + 0.4 * 0.8 - 0.4 * 0.4),  # [0.3, 0.7] dominated
        ([[1.5, 0.1], [0.5, 0.5]], (1.0, 1.0), 0.25),  # a point beyond the reference adds nothing
        ([[1.0, 0.2]], (1.0, 1.0), 0.0),  # on the reference's boundary: no volume
        ([], (1.0, 1.0), 0.0),
        ([[0.5, 0.5, 0.5]], (1.0, 1.0, 1.0), 0.125),
        ([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5]], (1.0, 1.0, 1.0), 0.25 + 0.25 - 0.125),
    ],
)
def test_hypervolume_matches_hand_computed_values(points, reference, expected) -> None:
    p = torch.tensor(points, dtype=torch.float64).reshape(-1, len(reference))
    assert hypervolume(p, reference) == pytest.approx(expected, abs=1e-12)


def test_hypervolume_of_the_known_toy_front_is_its_integral() -> None:
    """The dense front's hypervolume approaches the area under the staircase, computed here by
    numerical integration of the front as a curve."""
    s = torch.linspace(1.0, -1.0, 200_001, dtype=torch.float64)
    f1, f2 = 1 - torch.exp(-((1 - s) ** 2)), 1 - torch.exp(-((1 + s) ** 2))
    # f1 rises as f2 falls: between consecutive points the best f2 so far bounds the strip; ref (1, 1)
    area = float(((f1[1:] - f1[:-1]) * (1 - f2[:-1])).sum() + (1 - f1[-1]) * (1 - f2[-1]))
    assert hypervolume(toy_front(20001), (1.0, 1.0)) == pytest.approx(area, rel=2e-4)


def test_non_dominated_and_bad_points() -> None:
    p = torch.tensor([[0.2, 0.6], [0.3, 0.7], [0.6, 0.2], [0.6, 0.2]])
    assert non_dominated(p).tolist() == [True, False, True, True]
    with pytest.raises(ValueError, match=r"rows \[1\] are not"):
        hypervolume([[0.1, 0.2], [float("nan"), 0.1]], (1, 1))
    with pytest.raises(ValueError, match="reference must be 2 finite numbers"):
        hypervolume([[0.1, 0.2]], (1, 1, 1))


# ---------------------------------------------------------------------- rays
def test_rays_are_checked_naming_every_bad_one() -> None:
    assert check_rays([0.25, 0.75]).shape == (1, 2)
    with pytest.raises(ValueError, match=r"ray 0 has a negative entry \(\[-0.1, 1.1\]\); ray 1 sums to 1.2"):
        check_rays([[-0.1, 1.1], [0.6, 0.6]], 2, "rays")
    with pytest.raises(ValueError, match=r"expected rays of 2 objectives, shape \(K, 2\); got shape \(1, 3\)"):
        check_rays([[0.2, 0.3, 0.5]], 2)
    with pytest.raises(ValueError, match="not finite"):
        check_rays([[float("nan"), 1.0]])
    phn = ParetoHyperNetwork(Target(nn.Linear(2, 2)), 2, MLP((4,)))
    with pytest.raises(ValueError, match="ParetoHyperNetwork: rays: .*ray 0 sums to 0.5"):
        phn(torch.randn(3, 2), [[0.2, 0.3]])
    with pytest.raises(ValueError, match="ScalarizedNetwork: ray: .*negative"):
        ScalarizedNetwork(nn.Linear(2, 2), [1.5, -0.5])
    with pytest.raises(ValueError, match="one ray per row of losses, 2 rays; got 1"):
        LinearScalarization().loss(torch.ones(2, 2), [[0.5, 0.5]])


def test_sampled_and_spread_rays_lie_on_the_simplex() -> None:
    rays = sample_rays(1000, 2, 0.2, torch.Generator().manual_seed(0))
    assert torch.allclose(rays.sum(1), torch.ones(1000)) and bool((rays >= 0).all())
    # Dirichlet(0.2): most of the mass near the corners
    assert float(((rays[:, 0] < 0.1) | (rays[:, 0] > 0.9)).float().mean()) > 0.5
    again = sample_rays(1000, 2, 0.2, torch.Generator().manual_seed(0))
    assert torch.equal(rays, again)
    spread = spread_rays(25)
    assert torch.allclose(spread.sum(1), torch.ones(25)) and bool((spread[1:, 0] < spread[:-1, 0]).all())
    assert spread[12].tolist() == pytest.approx([0.5, 0.5])


# ---------------------------------------------------------------------- EPO
def _brute_force_lp(objective, rows, extra=()):
    """max beta . objective over beta = (t, 1 - t) on a fine grid of t, with every (row, bound)."""
    t = torch.linspace(0, 1, 200_001, dtype=torch.float64)
    beta = torch.stack([t, 1 - t], 1)
    ok = torch.ones_like(t, dtype=torch.bool)
    for row, bound in [*rows, *extra]:
        ok &= beta @ row >= bound - 1e-9
    if not bool(ok.any()):
        return None
    return float((beta[ok] @ objective).max())


@pytest.mark.parametrize("seed", range(12))
def test_epo_coefficients_solve_the_linear_programme(seed) -> None:
    """The exact solution's objective equals a brute-force search over the simplex (balance mode:
    random losses off the ray)."""
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(2, 5, generator=g, dtype=torch.float64)
    C = G @ G.T
    losses = torch.rand(2, generator=g, dtype=torch.float64) + 0.1
    r = torch.rand(2, generator=g, dtype=torch.float64) + 0.05
    r = r / r.sum()
    beta = epo_coefficients(losses, C, r)
    assert beta.shape == (2,) and float(beta.min()) >= 0 and float(beta.sum()) == pytest.approx(1.0)
    rl = r * losses
    u = rl / rl.sum()
    mu = float((u * torch.log(2 * u)).sum())
    a = r * (torch.log(2 * u) - mu)
    Ca = C @ a
    worst = int(torch.argmax(rl))
    if bool((Ca > 0).any()):
        rows = [(C[j], float(Ca[j])) for j in range(2) if not Ca[j] > 0 and j != worst] + [(C[worst], 0.0)]
    else:
        rows = [(C[j], 0.0) for j in range(2)]
    best = _brute_force_lp(Ca, rows)
    if best is None:  # infeasible: the ray itself
        assert torch.allclose(beta, r)
    else:
        # the exact optimum is at least the grid's best, and above it by at most one grid step's worth
        step_gain = float(Ca.abs().sum()) / 200_000
        assert best - 1e-9 <= float(beta @ Ca) <= best + step_gain + 1e-9
        assert all(float(beta @ row) >= bound - 1e-9 for row, bound in rows)


def test_epo_balances_towards_the_ray_then_descends() -> None:
    eye = torch.eye(2, dtype=torch.float64)
    # off the ray: only the objective that is too large (relative to the ray) is decreased
    assert epo_coefficients(torch.tensor([2.0, 1.0]), eye, torch.tensor([0.5, 0.5])).tolist() == [1.0, 0.0]
    assert epo_coefficients(torch.tensor([1.0, 2.0]), eye, torch.tensor([0.5, 0.5])).tolist() == [0.0, 1.0]
    # on the ray r1 l1 = r2 l2: both decrease together
    beta = epo_coefficients(torch.tensor([1.0, 3.0]), eye, torch.tensor([0.75, 0.25]))
    assert float(beta.min()) > 0
    # a corner is that objective alone; one objective is itself
    assert epo_coefficients(torch.tensor([1.0, 3.0]), eye, torch.tensor([0.0, 1.0])).tolist() == [0.0, 1.0]
    assert epo_coefficients(torch.tensor([1.0]), torch.ones(1, 1), torch.ones(1)).tolist() == [1.0]
    with pytest.raises(ValueError, match="m = 1 or 2"):
        epo_coefficients(torch.ones(3), torch.eye(3), torch.ones(3) / 3)


def test_epo_loss_sends_the_weighted_gradient_into_the_hypernetwork() -> None:
    """The solver's loss has the value sum_k sum_j m beta_kj l_kj / K, and its gradient equals a
    plain backward of that weighted loss with beta held fixed."""
    torch.manual_seed(0)
    phn = ParetoHyperNetwork(Target(nn.Linear(1, 3, bias=False)), 2, MLP((8,)))
    rays = torch.tensor([[0.8, 0.2], [0.3, 0.7], [0.5, 0.5]])
    weights = phn.generate(rays)
    losses = toy_losses(phn.apply(weights, torch.ones(1, 1))[:, 0])
    loss = ExactParetoOptimal().loss(losses, rays, weights)
    grads = torch.autograd.grad(loss, list(phn.parameters()), retain_graph=True, allow_unused=True)
    # the reference: beta from the same Gram matrices, then a plain weighted loss
    theta = weights["weight"]
    G = torch.stack(
        [torch.autograd.grad(losses[:, j].sum(), theta, retain_graph=True)[0].flatten(1) for j in range(2)], 1
    )
    beta = torch.stack([epo_coefficients(losses[k].detach(), G[k] @ G[k].T, rays[k]) for k in range(3)]).float()
    reference = (2 * beta * losses).sum(1).mean()
    assert float(loss) == pytest.approx(float(reference), rel=1e-6)
    expected = torch.autograd.grad(reference, list(phn.parameters()), allow_unused=True)
    for a, b in zip(grads, expected):
        if b is None:
            assert a is None or float(a.abs().max()) == 0.0
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_epo_loss_trains_the_targets_own_tensors_and_refuses_negative_losses() -> None:
    # only the generated tensors got a gradient (the target's own were silently frozen), and a
    # negative loss was clamped to about zero by the solver
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    phn = ParetoHyperNetwork(Target(net, "2.*"), 2, MLP((8,)))
    rays = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
    x = torch.randn(5, 3)
    weights = phn.generate(rays)
    losses = phn.apply(weights, x).pow(2).mean(1)  # (K, 2)
    loss = ExactParetoOptimal().loss(losses, rays, weights)
    own = net[0].weight
    (got,) = torch.autograd.grad(loss, [own], retain_graph=True)
    theta = list(weights.values())
    G = torch.stack(
        [
            torch.cat([g.flatten(1) for g in torch.autograd.grad(losses[:, j].sum(), theta, retain_graph=True)], 1)
            for j in range(2)
        ],
        1,
    )
    beta = torch.stack([epo_coefficients(losses[k].detach(), G[k] @ G[k].T, rays[k]) for k in range(2)]).float()
    (want,) = torch.autograd.grad((2 * beta * losses).sum(1).mean(), [own])
    assert float(want.abs().max()) > 0
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="needs losses >= 0"):
        ExactParetoOptimal().loss(losses - 10.0, rays, weights)
    with pytest.raises(ValueError, match="expected losses >= 0"):
        epo_coefficients(torch.tensor([-0.5, 1.0]), torch.eye(2), torch.tensor([0.5, 0.5]))


# ---------------------------------------------------------------------- the toy problem
def _train_toy(solver, steps: int = 400, k: int = 8) -> ParetoHyperNetwork:
    torch.manual_seed(0)
    point = nn.Linear(1, 2, bias=False)
    nn.init.normal_(point.weight, std=0.1)
    phn = ParetoHyperNetwork(Target(point), 2, MLP((32, 32)), residual="target", learn_theta0=True, residual_scale=1.0)
    opt = adam(phn.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        rays = sample_rays(k, 2, 0.2, g)
        weights = phn.generate(rays)
        loss = solver.loss(toy_losses(phn.apply(weights, torch.ones(1, 1))[:, 0]), rays, weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return phn


@pytest.fixture(scope="module")
def toy_phns() -> dict[str, ParetoHyperNetwork]:
    return {"LS": _train_toy(LinearScalarization()), "EPO": _train_toy(ExactParetoOptimal())}


@pytest.mark.parametrize("solver", ["LS", "EPO"])
def test_rays_at_the_corners_recover_each_objectives_optimum(toy_phns, solver) -> None:
    """Ray (1, 0) gives the minimiser of f1 (x = c, f1 = 0) and ray (0, 1) that of f2 (x = -c)."""
    phn = toy_phns[solver]
    with torch.no_grad():
        x = phn(torch.ones(1, 1), torch.eye(2))[:, 0]  # (2, d)
    c = torch.full((2,), 1 / math.sqrt(2))
    assert torch.allclose(x[0], c, atol=0.1) and torch.allclose(x[1], -c, atol=0.1)
    losses = toy_losses(x)  # each objective at its optimum 0 (its range is [0, 0.98] on the front)
    assert float(losses[0, 0]) < 0.01 and float(losses[1, 1]) < 0.01


def test_phn_epo_reaches_the_rays_of_the_concave_front(toy_phns) -> None:
    """EPO puts each ray's losses on that ray (r1 l1 = r2 l2) and on the known front; its dense
    sweep's hypervolume is within 2% of the front's."""
    rays = spread_rays(7)
    with torch.no_grad():
        losses = toy_losses(toy_phns["EPO"](torch.ones(1, 1), rays)[:, 0]).double()
    rl = rays.double() * losses
    assert torch.allclose(rl[:, 0], rl[:, 1], rtol=0.1)
    front = toy_front(20001)
    nearest = torch.cdist(losses, front).min(1).values
    assert float(nearest.max()) < 0.02
    with torch.no_grad():
        dense = toy_losses(toy_phns["EPO"](torch.ones(1, 1), spread_rays(500, 0.01))[:, 0])
    assert hypervolume(dense, (1, 1)) >= 0.98 * hypervolume(front, (1, 1))


# ---------------------------------------------------------------------- Multi-MNIST
def test_overlay_pairs_against_a_plain_reference() -> None:
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(4, 784, generator=g), torch.tensor([3, 1, 4, 1])
    x, y = overlay_pairs(images, labels, 2, torch.Generator().manual_seed(5))
    right = torch.cat([torch.randperm(4, generator=torch.Generator().manual_seed(5)) for _ in range(1)])
    for i in range(4):  # the first copy: image i on the left, right[i] on the right
        canvas = torch.zeros(36, 36)
        canvas[:28, :28] = images[i].view(28, 28)
        canvas[8:, 8:] = torch.maximum(canvas[8:, 8:], images[right[i]].view(28, 28))
        expected = F.interpolate(canvas[None, None], size=(28, 28), mode="bilinear", antialias=True).flatten()
        torch.testing.assert_close(x[i], expected.clamp(0, 1))
        assert int(y[i]) == 10 * int(labels[i]) + int(labels[right[i]])
    left, right_digit = digit_labels(y)
    assert sorted(left.tolist()) == sorted(right_digit.tolist()) == [1, 1, 1, 1, 3, 3, 4, 4]
    with pytest.raises(ValueError, match="labels must be digits in"):
        overlay_pairs(images, torch.tensor([3, 1, 4, 12]), 1, g)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.tobytes())


def test_multimnist_from_full_mnist_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(30) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(10) % 10).astype(np.uint8),
    }
    for name, a in files.items():
        _write_idx(tmp_path / name, a)
    s = load_multimnist_idx(str(tmp_path), seed=0)
    assert s.x_train.shape == (30, 784) and s.x_test.shape == (10, 784) and s.num_classes == 100
    left, _ = digit_labels(s.y_train)
    assert left.tolist() == files["train-labels-idx1-ubyte"].tolist()  # every image is a left digit once
    assert {"multimnist", "multimnist5k"} <= set(list_datasets())
    d = get_dataset("multimnist")
    assert d.num_classes == 100 and "not found" in d.problem(str(tmp_path / "nowhere"))


# ---------------------------------------------------------------------- the recipe
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    cases = [
        (
            ["--baseline_rays", "0.9,0.2"],
            "--baseline_rays: each preference ray must have entries >= 0 that sum to 1; ray 0 sums to 1.1",
        ),  # fmt: skip
        (["--baseline_rays", "1.2,-0.2"], "ray 0 has a negative entry"),
        (["--baseline_rays", "0.5,0.5,1.0"], "an even count of numbers"),
        (["--problems", "toys"], "--problems"),
        (["--data", "digits"], "expected a two-digit data set"),
        (["--reference", "2,2,2"], "--reference: expected 2 numbers"),
    ]
    for argv, message in cases:
        out = tmp_path / "run"
        code, err = run_cli(["pareto", *argv, "--out", str(out)])
        assert code == 2 and message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1 and not out.exists()


_QUICK = ["--quick", "--progress", "false", "--checkpoint_every", "1"]


def _numbers(metrics: dict) -> dict:
    """The measured numbers without the times (which differ between runs)."""
    out = {}
    for problem in ("toy", "multimnist"):
        for method, entry in metrics[problem]["methods"].items():
            out[f"{problem}/{method}"] = {k: v for k, v in entry.items() if k not in ("train_seconds", "wall_seconds")}
    return out


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("pareto") / "quick"
    code, err = run_cli(["pareto", *_QUICK, "--out", str(out)])
    assert code == 0, err
    return out, json.loads((out / "results.json").read_text())


def test_quick_run_reports_every_method(quick_run) -> None:
    out, results = quick_run
    m = results["metrics"]
    for problem in ("toy", "multimnist"):
        methods = m[problem]["methods"]
        assert set(methods) == {"phn-ls", "phn-epo", "ls-1", "ls-2", "ls-3", "ls-4", "ls-5"}
        assert len(methods["phn-ls"]["front"]["losses"]) == 9
        assert all(e["train_seconds"] > 0 for e in methods.values())
    assert m["toy"]["known_front_hypervolume"] == pytest.approx(hypervolume(toy_front(20001), (1, 1)))
    assert (out / "fronts.png").stat().st_size > 0 and "| PHN-EPO |" in (out / "summary.md").read_text()
    # the saved hypernetwork gives the front it was measured with
    phn = load_model(out, "toy_phn_epo")
    with torch.no_grad():
        losses = toy_losses(phn(torch.ones(1, 1), spread_rays(9))[:, 0])
    torch.testing.assert_close(losses.tolist(), m["toy"]["methods"]["phn-epo"]["front"]["losses"])


@pytest.mark.parametrize("stop_after", [3, 12])
def test_resume_ends_with_the_same_numbers(tmp_path: Path, monkeypatch, quick_run, stop_after: int) -> None:
    out = tmp_path / "run"
    resumed = interrupt_then_resume(monkeypatch, "pareto", _QUICK, out, stop_after)
    assert _numbers(resumed) == _numbers(quick_run[1]["metrics"])
