"""The causal recipe and its pieces: the IHDP rebuild and the Nie-Wager setups, the estimators
(parity with plain PyTorch, a known effect, save and load, bad input), the metrics, and the
recipe end to end with resume."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import econml.data.dgps as econml_dgps
import numpy as np
import pytest
import torch
from torch.nn.utils import parametrize

from hyperdnn.baselines.econml_learners import EconMLLearner
from hyperdnn.baselines.meta_learners import DRLearner, SLearner, TARNet, TLearner
from hyperdnn.data.causal import CausalSample, get_benchmark, split_units
from hyperdnn.data.ihdp import IHDP, ihdp_covariates, ihdp_surface_b, load_ihdp_npz
from hyperdnn.data.nie_wager import nie_wager
from hyperdnn.engine import Checkpointer, run_command
from hyperdnn.methods.hyperite import (
    HyperDRLearner,
    HypernetOptions,
    HyperSLearner,
    HyperTARNet,
    HyperTLearner,
    arm_spread,
    noise_variance,
)
from hyperdnn.methods.treatment_effect import (
    TrainOptions,
    TreatmentEffectEstimator,
    check_treatment_data,
    training_units,
    with_arms,
)
from hyperdnn.metrics.causal import ate_error, mean_se, paired_win_rate, sqrt_pehe
from hyperdnn.networks import mlp
from hyperdnn.recipes.causal import PAIRS, CausalConfig, make_estimator

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = HypernetOptions(embed_dim=4, hidden=(16,), dropout=0.0)


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    code = run_command(argv, stdout=io.StringIO(), stderr=err)
    return code, err.getvalue()


# ---------------------------------------------------------------------- data
@pytest.mark.parametrize("replication", [0, 7])
def test_ihdp_rebuild_is_econmls_response_surface_b(replication: int) -> None:
    y, t, x, tau = econml_dgps.ihdp_surface_B(random_state=replication)
    s = ihdp_surface_b(replication)
    assert (s.n, int(s.t.sum()), s.features) == (747, 139, 25)
    np.testing.assert_array_equal(s.t, t)
    np.testing.assert_array_equal(s.x, x[:, 1:])  # EconML's first column is the intercept
    np.testing.assert_allclose(s.y, y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.tau, tau, rtol=0, atol=1e-12)
    # the surface's defining property: the average effect on the treated is 4
    assert s.tau[s.t == 1].mean() == pytest.approx(4.0, abs=1e-9)
    # the factual outcome is the arm's true mean plus unit Gaussian noise
    noise = s.y - np.where(s.t == 1, s.mu1, s.mu0)
    assert abs(noise.mean()) < 0.15 and 0.9 < noise.std() < 1.1


def test_ihdp_covariates_are_the_standard_sample() -> None:
    t, x = ihdp_covariates()
    assert x.shape == (747, 25) and int(t.sum()) == 139
    np.testing.assert_allclose(x[:, :6].mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(x[:, :6].std(0), 1, atol=1e-12)
    assert set(np.unique(x[:, 6:])) <= {0.0, 1.0, 2.0}


def test_a_sample_larger_than_the_data_is_refused() -> None:
    with pytest.raises(ValueError, match="has 747 units; a sample of 1000 units is larger than the data"):
        IHDP.draw(0, 1000)
    assert IHDP.draw(3, 200).n == 200
    with pytest.raises(ValueError, match="replication must be an int >= 0, got -1"):
        IHDP.draw(-1)


def test_ihdp_npz_loader_reads_shalits_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n, f, reps = 12, 3, 2
    arrays = {
        "x": rng.normal(size=(n, f, reps)),
        "t": np.tile(np.arange(n) % 2, (reps, 1)).T.astype(float),
        "yf": rng.normal(size=(n, reps)),
        "mu0": rng.normal(size=(n, reps)),
        "mu1": rng.normal(size=(n, reps)),
    }
    path = tmp_path / "ihdp.npz"
    np.savez(path, **arrays)
    s = load_ihdp_npz(path, 1)
    np.testing.assert_array_equal(s.x, arrays["x"][:, :, 1])
    np.testing.assert_array_equal(s.tau, arrays["mu1"][:, 1] - arrays["mu0"][:, 1])
    assert s.t.dtype == np.int64 and s.t.tolist() == [i % 2 for i in range(n)]
    with pytest.raises(ValueError, match="has replications 0 to 1, got 2"):
        load_ihdp_npz(path, 2)
    np.savez(tmp_path / "bad.npz", x=arrays["x"], t=arrays["t"][:5])
    with pytest.raises(ValueError, match=r"lacks \['yf', 'mu0', 'mu1'\]"):
        load_ihdp_npz(tmp_path / "bad.npz", 0)
    with pytest.raises(FileNotFoundError, match="no IHDP file"):
        load_ihdp_npz(tmp_path / "none.npz", 0)
    np.savez(tmp_path / "soft.npz", **{**arrays, "t": np.full((n, reps), 0.75)})  # not an arm: refused, not cast to 0
    with pytest.raises(ValueError, match=r"t must hold arms 0 and 1, got values \[0.75\]"):
        load_ihdp_npz(tmp_path / "soft.npz", 0)


def test_nie_wager_setups_follow_their_formulas() -> None:
    a = nie_wager("A", 2000, seed=1)
    np.testing.assert_allclose(a.tau, (a.x[:, 0] + a.x[:, 1]) / 2)
    base = np.sin(np.pi * a.x[:, 0] * a.x[:, 1]) + 2 * (a.x[:, 2] - 0.5) ** 2 + a.x[:, 3] + 0.5 * a.x[:, 4]
    np.testing.assert_allclose((a.mu0 + a.mu1) / 2, base)
    assert ((0 <= a.x) & (a.x <= 1)).all()
    c = nie_wager("C", 2000, seed=1)
    np.testing.assert_allclose(c.tau, 1.0)
    d = nie_wager("D", 2000, seed=1)
    relu = lambda v: np.maximum(v, 0)
    np.testing.assert_allclose(d.tau, relu(d.x[:, :3].sum(1)) - relu(d.x[:, 3] + d.x[:, 4]))
    b = nie_wager("B", 4000, seed=2)
    assert abs(b.t.mean() - 0.5) < 0.03  # a randomised trial
    with pytest.raises(
        ValueError, match=r"setup must be one of \['A', 'B', 'C', 'D'\], got 'E'; p must be an int >= 5"
    ):
        nie_wager("E", 10, seed=0, p=3)
    assert get_benchmark("nw-a").draw(4, 50).n == 50


def test_split_units_is_stratified_and_disjoint() -> None:
    t = np.array([0] * 80 + [1] * 20)
    train, test = split_units(t, 0.25, seed=0)
    assert len(set(train) & set(test)) == 0 and len(train) + len(test) == 100
    assert (t[test] == 1).sum() == 5 and (t[test] == 0).sum() == 20


def test_training_units_are_the_per_arm_split_or_every_unit() -> None:
    t = torch.tensor([0] * 80 + [1] * 20)
    train, val = training_units(t, TrainOptions(val_fraction=0.25, seed=4))
    want_train, want_val = split_units(t.numpy(), 0.25, seed=4)
    assert train.tolist() == list(want_train) and val is not None and val.tolist() == list(want_val)
    train, val = training_units(t, TrainOptions(val_fraction=0.0))
    assert train.tolist() == list(range(100)) and val is None


def test_split_units_splits_every_arm_of_a_categorical_treatment() -> None:
    """Every arm 0 .. K-1 loses its share, none is dropped (a third arm once fell out of both
    parts, so no learner ever trained on it); a binary split is the same as before."""
    t = np.array([0] * 40 + [1] * 20 + [2] * 30 + [3] * 10)
    train, test = split_units(t, 0.25, seed=0)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(100))
    assert [int((t[test] == k).sum()) for k in range(4)] == [10, 5, 8, 2]
    binary = t[t < 2]
    np.testing.assert_array_equal(split_units(binary, 0.25, seed=0)[1], split_units(t, 0.25, seed=0)[1][:15])
    with pytest.raises(ValueError, match="arm 1 has 0 units"):
        split_units(np.zeros(10, dtype=np.int64), 0.25, seed=0)


# ---------------------------------------------------------------------- estimators
def _linear_effect_data(n: int = 600, seed: int = 0) -> CausalSample:
    """y = x b + t (1 + 2 x0) + noise: a known linear effect tau(x) = 1 + 2 x0."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    t = (rng.uniform(size=n) < 1 / (1 + np.exp(-x[:, 1]))).astype(np.int64)
    mu0 = x @ np.array([0.5, -1.0, 0.3])
    mu1 = mu0 + 1 + 2 * x[:, 0]
    y = np.where(t == 1, mu1, mu0) + 0.1 * rng.normal(size=n)
    return CausalSample(x, t, y, mu0, mu1)


FAST = TrainOptions(lr=1e-2, max_epochs=300, patience=30)
LEARNERS = {
    "HyperSLearner": lambda: HyperSLearner((32,), SMALL, FAST),
    "HyperTLearner": lambda: HyperTLearner((32,), SMALL, FAST),
    "HyperTARNet": lambda: HyperTARNet((32,), (16,), SMALL, FAST),
    "HyperDRLearner": lambda: HyperDRLearner((32,), SMALL, folds=2, training=FAST),
    "SLearner": lambda: SLearner((32,), FAST),
    "TLearner": lambda: TLearner((32,), FAST),
    "TARNet": lambda: TARNet((32,), (16,), FAST),
    "DRLearner": lambda: DRLearner((32,), folds=2, training=FAST),
}


@pytest.fixture(scope="module")
def fitted() -> dict[str, TreatmentEffectEstimator]:
    data = _linear_effect_data()
    return {name: make().fit(data.x, data.t, data.y) for name, make in LEARNERS.items()}


@pytest.mark.parametrize("name", list(LEARNERS))
def test_a_known_linear_effect_is_recovered(fitted, name: str) -> None:
    test = _linear_effect_data(400, seed=1)
    est = fitted[name]
    tau = est.effect(test.x)
    assert sqrt_pehe(tau, test.tau) < 0.35 * test.tau.std(), name  # tau's sd is about 2
    assert abs(est.ate(test.x) - test.ate) < 0.25, name


@pytest.mark.parametrize("name", list(LEARNERS))
def test_save_and_load_round_trip(fitted, name: str, tmp_path: Path) -> None:
    est = fitted[name]
    x = _linear_effect_data(50, seed=2).x
    path = est.save(tmp_path / "est.pt")
    loaded = TreatmentEffectEstimator.load(path)
    assert type(loaded) is type(est) and loaded.config() == est.config()
    np.testing.assert_array_equal(loaded.effect(x), est.effect(x))
    assert loaded.num_parameters() == est.num_parameters()


def test_load_refuses_what_is_not_a_saved_estimator(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="is not a saved treatment-effect estimator"):
        TreatmentEffectEstimator.load(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="no saved estimator"):
        TreatmentEffectEstimator.load(tmp_path / "none.pt")


def test_hyper_s_with_one_arm_embedding_is_a_plain_s_learner(fitted) -> None:
    """One embedding: one generated weight set, the S-learner's network on [x, onehot(t)]."""
    est = fitted["HyperSLearner"]
    hnet, target = est.model_.hypernet, est.model_.target
    assert hnet.conditioner.num_tasks == 1
    plain = target.materialize(hnet(0))  # an ordinary nn.Sequential, the S-learner's MLP
    reference = mlp(3 + 2, (32,), 1)
    reference.load_state_dict(plain.state_dict())  # the plain S-learner's architecture holds it
    x = _linear_effect_data(40, seed=3).x
    s = est.scaling_
    xs = torch.as_tensor((x - s["x_mean"]) / s["x_std"], dtype=torch.float32)
    with torch.no_grad():
        mu = reference(with_arms(xs, 2)).view(2, -1).double().numpy().T * s["y_std"] + s["y_mean"]
    np.testing.assert_allclose(est.predict_outcomes(x), mu, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(est.effect(x), mu[:, 1] - mu[:, 0], rtol=1e-5, atol=1e-5)


def test_t_learner_trains_as_a_plain_pytorch_loop() -> None:
    data = _linear_effect_data(200)
    options = TrainOptions(lr=1e-2, max_epochs=20, val_fraction=0.0, seed=5)
    est = TLearner((8,), options).fit(data.x, data.t, data.y)
    x = torch.as_tensor((data.x - data.x.mean(0)) / data.x.std(0), dtype=torch.float32)
    y = torch.as_tensor((data.y - data.y.mean()) / data.y.std(), dtype=torch.float32)
    t = torch.as_tensor(data.t)
    torch.manual_seed(5)
    nets = [mlp(3, (8,), 1) for _ in range(2)]
    opt = torch.optim.Adam([p for n in nets for p in n.parameters()], lr=1e-2)
    for _ in range(20):
        mu = torch.stack([n(x)[:, 0] for n in nets])
        loss = (mu.gather(0, t.unsqueeze(0)).squeeze(0) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for mine, ref in zip(est.model_.parameters(), (p for n in nets for p in n.parameters())):
        torch.testing.assert_close(mine, ref)
    assert est.epochs_ == 20


def test_fit_leaves_the_callers_random_state_and_is_seeded() -> None:
    data = _linear_effect_data(120)
    options = TrainOptions(max_epochs=5, seed=3)
    torch.manual_seed(11)
    before = torch.random.get_rng_state()
    a = HyperTLearner((8,), SMALL, options).fit(data.x, data.t, data.y).effect(data.x)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = HyperTLearner((8,), SMALL, options).fit(data.x, data.t, data.y).effect(data.x)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", list(LEARNERS))
def test_constructors_draw_no_random_numbers_and_check_widths(name: str) -> None:
    torch.manual_seed(11)
    before = torch.random.get_rng_state()
    LEARNERS[name]()
    assert torch.equal(torch.random.get_rng_state(), before), name
    cls = type(LEARNERS[name]())
    with pytest.raises(ValueError, match=rf"{cls.__name__}: \w+ must be positive ints, got \(4, 0\)"):
        if cls in (TARNet, HyperTARNet):
            cls((8,), (4, 0))
        else:
            cls((4, 0))


def test_categorical_treatments_have_an_effect_per_pair_of_arms() -> None:
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(600, 2)), rng.integers(0, 3, 600)
    y = x[:, 0] + np.array([0.0, 1.0, 3.0])[t] + 0.05 * rng.normal(size=600)
    est = HyperTLearner((16,), SMALL, FAST).fit(x, t, y)
    assert est.predict_outcomes(x).shape == (600, 3)
    assert est.ate(x, 0, 2) == pytest.approx(3.0, abs=0.3)
    assert est.ate(x, 1, 2) == pytest.approx(2.0, abs=0.3)
    with pytest.raises(ValueError, match=r"T1 must be an arm in 0 \.\. 2, got 3"):
        est.effect(x, 0, 3)


def test_bad_input_is_one_clear_error_and_changes_nothing() -> None:
    data = _linear_effect_data(60)
    x, t, y = data.x, data.t, data.y
    est = TLearner((4,), TrainOptions(max_epochs=2))
    with pytest.raises(ValueError, match="binary or categorical .* non-integer values such as"):
        est.fit(x, t + 0.5, y)
    with pytest.raises(TypeError, match="T must hold integer arms 0 .. K-1 .* got dtype <U"):
        est.fit(x, np.where(t == 1, "treated", "control"), y)
    with pytest.raises(ValueError, match="X, T and Y must have one length, got X 60, T 59, Y 60"):
        est.fit(x, t[:-1], y)
    bad = x.copy()
    bad[[3, 7], 1] = np.nan
    with pytest.raises(ValueError, match=r"X has 2 NaN or infinite values \(rows \[3, 7\]\)"):
        est.fit(bad, t, y)
    with pytest.raises(ValueError, match=r"every arm 0 \.\. K-1 with K >= 2 .* got arms \[1, 2\]"):
        est.fit(x, t + 1, y)
    with pytest.raises(ValueError, match=r"X must be \(N, F\)"):
        est.fit(x[:, 0], t, y)
    with pytest.raises(RuntimeError, match="not fitted"):
        est.effect(x)
    est.fit(x, t, y)
    before = est.effect(x)
    with pytest.raises(ValueError, match="NaN"):
        est.fit(x, t, np.full(60, np.nan))  # a refused fit keeps the fitted model
    np.testing.assert_array_equal(est.effect(x), before)
    with pytest.raises(ValueError, match="X has 2 covariates, the estimator was fitted on 3"):
        est.effect(x[:, :2])
    with pytest.raises(ValueError, match="TrainOptions: lr must be a number > 0, got 0; patience must be an int >= 1"):
        TrainOptions(lr=0, patience=0)
    with pytest.raises(ValueError, match="HypernetOptions: dropout must be .* head must be one of"):
        HypernetOptions(dropout=1.5, head="twice")
    x2, t2, y2 = check_treatment_data(x.tolist(), t.astype(bool), y.reshape(-1, 1), "here")
    assert x2.dtype == np.float64 and t2.dtype == np.int64 and y2.shape == (60,)


def test_econml_learners_behind_the_same_api() -> None:
    data = _linear_effect_data(400)
    lin = EconMLLearner("linear_t").fit(data.x, data.t, data.y)
    assert sqrt_pehe(lin.effect(data.x), data.tau) < 0.05  # the surfaces are linear
    assert lin.num_parameters() == 2 * (3 + 1)
    with pytest.raises(ValueError, match="name must be one of"):
        EconMLLearner("q")
    with pytest.raises(ValueError, match="X, T and Y must have one length"):
        EconMLLearner("t").fit(data.x, data.t[:10], data.y)


def test_weight_decay_shrinks_the_hypernetwork() -> None:
    """Adam's weight decay reaches every parameter of a hypernetwork learner's hypernetwork."""
    data = _linear_effect_data(200)
    norms = {}
    for wd in (0.0, 0.1):
        options = TrainOptions(lr=1e-2, weight_decay=wd, max_epochs=60, val_fraction=0.0, seed=2)
        est = HyperTLearner((8,), SMALL, options).fit(data.x, data.t, data.y)
        norms[wd] = {name: float(p.detach().norm()) for name, p in est.model_.hypernet.named_parameters()}
    assert norms[0.0].keys() == norms[0.1].keys()
    for name, norm in norms[0.1].items():
        assert norm < norms[0.0][name], name


def test_the_arm_prior_pulls_the_arms_generated_networks_together(tmp_path: Path) -> None:
    """arm_prior > 0 adds lambda / n * sum_k ||theta_k - mean theta||^2 to the training loss:
    the arms' generated networks end closer together; the prior is saved and loaded."""
    data = _linear_effect_data(200)
    options = TrainOptions(lr=1e-2, max_epochs=60, val_fraction=0.0, seed=2)
    spread = {}
    for prior in (0.0, 50.0):
        for est in (HyperTLearner((8,), SMALL, options, prior), HyperTARNet((8,), (8,), SMALL, options, prior)):
            est.fit(data.x, data.t, data.y)
            net = est.model_["heads"] if isinstance(est, HyperTARNet) else est.model_
            with torch.no_grad():
                spread[type(est).__name__, prior] = float(arm_spread(net, 2))
    for name in ("HyperTLearner", "HyperTARNet"):
        assert spread[name, 50.0] < 0.5 * spread[name, 0.0], (name, spread)
    loaded = TreatmentEffectEstimator.load(est.save(tmp_path / "est.pt"))
    assert loaded.arm_prior == 50.0 and loaded.config() == est.config()
    with pytest.raises(ValueError, match="arm_prior must be a finite number >= 0"):
        HyperTLearner(arm_prior=-1.0)


def test_noise_variance_recovers_a_known_noise() -> None:
    """Per-arm kernel ridge regression's leave-one-out error is the noise's variance on linear
    arms (each arm its own slope); on a curved outcome the Gaussian kernels take much of the
    misfit a linear regression leaves, and what is left counts as noise (the estimate errs high)."""
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(800, 5, generator=gen), torch.randint(0, 2, (800,), generator=gen)
    mean = x @ torch.tensor([1.0, -2.0, 0.5, 0.0, 0.0]) + t * (1 + 3 * x[:, 0])
    eps = torch.randn(800, generator=gen)
    for sigma in (0.1, 0.5, 1.0, 3.0):
        assert noise_variance(x, t, mean + sigma * eps) == pytest.approx(sigma**2, rel=0.12), sigma
    assert noise_variance(x, t, mean) < 1e-3  # noise-free: the ridge of the smallest penalty fits
    curved = (x[:, 0] ** 2 + torch.sin(3 * x[:, 1])) + 0.5 * eps
    kernel, linear = noise_variance(x, t, curved), noise_variance(x, t, curved, gammas=())
    assert 0.25 < kernel < 0.5 * linear, (kernel, linear)
    with pytest.raises(ValueError, match="expected x \\(N, F\\), t \\(N,\\), y \\(N,\\)"):
        noise_variance(x, t[:10], mean)
    with pytest.raises(ValueError, match="alphas must be at least one of finite numbers > 0, got \\(0.0,\\)"):
        noise_variance(x, t, mean, alphas=(0.0,))
    with pytest.raises(ValueError, match="alphas must be at least one of finite numbers > 0, got \\(\\)"):
        noise_variance(x, t, mean, alphas=())
    with pytest.raises(ValueError, match="gammas must be finite numbers > 0, got \\(-1.0,\\)"):
        noise_variance(x, t, mean, gammas=(-1.0,))
    with pytest.raises(ValueError, match="max_units must be an int >= 2, got 1"):
        noise_variance(x, t, mean, max_units=1)
    assert noise_variance(x, t, mean + eps, max_units=200) == pytest.approx(1.0, rel=0.25)  # 200 units per arm
    with pytest.raises(ValueError, match="an arm with at least two units"):
        noise_variance(x[:1], t[:1], mean[:1])


def test_the_noise_scaled_arm_prior_weighs_the_spread_by_the_noise(tmp_path: Path) -> None:
    """arm_prior_noise: the prior's weight is lambda * s2 / n, s2 the noise_variance of the
    training units' standardised outcome (not the validation units'); it grows with the noise,
    is 1 without the option, and the option is saved and loaded."""
    options = TrainOptions(lr=1e-2, max_epochs=20, val_fraction=0.25, seed=3)
    scales = {}
    for noise in (0.1, 1.0):
        data = _linear_effect_data(300, seed=1)
        y = np.where(data.t == 1, data.mu1, data.mu0) + noise * np.random.default_rng(2).normal(size=300)
        for cls in (HyperTLearner, HyperTARNet):
            args = ((8,), SMALL) if cls is HyperTLearner else ((8,), (8,), SMALL)
            est = cls(*args, options, 2.0, True).fit(data.x, data.t, y)
            train = split_units(data.t, 0.25, 3)[0]
            ys, xs = (y - y.mean()) / y.std(), (data.x - data.x.mean(0)) / data.x.std(0)
            want = noise_variance(*(torch.as_tensor(a[train]) for a in (xs, data.t, ys)))
            assert est.prior_scale_ == pytest.approx(want, rel=1e-4), cls
            with torch.no_grad():
                spread = arm_spread(est._generated(), 2)
                assert float(est._penalty()(100)) == pytest.approx(2.0 * want / 100 * float(spread), rel=1e-5)
            scales[cls.__name__, noise] = est.prior_scale_
    for name in ("HyperTLearner", "HyperTARNet"):
        assert scales[name, 1.0] > 5 * scales[name, 0.1], scales
    plain = HyperTLearner((8,), SMALL, options, 2.0).fit(data.x, data.t, y)
    assert plain.prior_scale_ == 1.0 and not plain.arm_prior_noise
    assert HyperTLearner((8,), SMALL, options, 0.0, True).fit(data.x, data.t, y)._penalty() is None
    loaded = TreatmentEffectEstimator.load(est.save(tmp_path / "est.pt"))
    assert loaded.arm_prior_noise is True and loaded.config() == est.config()
    for cls in (HyperTLearner, HyperTARNet):
        with pytest.raises(ValueError, match="arm_prior_noise must be a bool, got 'yes'"):
            cls(arm_prior=1.0, arm_prior_noise="yes")


def test_spectral_norm_reaches_every_trunk_layer_when_asked() -> None:
    data = _linear_effect_data(120)
    options = TrainOptions(max_epochs=3, seed=1)
    for on in (False, True):
        est = HyperTLearner((8,), replace(SMALL, spectral_norm=on), options).fit(data.x, data.t, data.y)
        layers = [m for m in est.model_.hypernet.trunk.modules() if isinstance(m, torch.nn.Linear)]
        assert layers and all(parametrize.is_parametrized(m, "weight") == on for m in layers)


def test_the_recipe_gives_the_hypernetwork_weight_decay_to_the_hypernetwork_learners_only() -> None:
    """The plain counterparts keep --weight_decay (0 by default, as before); the four
    hypernetwork learners train with --hnet_weight_decay."""
    assert CausalConfig().weight_decay == 0.0 and CausalConfig().hnet_weight_decay > 0
    cfg = CausalConfig(weight_decay=0.25, hnet_weight_decay=0.5, hnet_lr=0.125)
    for hyper, plain in PAIRS.items():
        h, p = make_estimator(cfg, hyper, 3).training, make_estimator(cfg, plain, 3).training
        assert (h.weight_decay, h.lr, p.weight_decay, p.lr) == (0.5, 0.125, 0.25, cfg.lr), hyper
        assert replace(h, weight_decay=0.25, lr=cfg.lr) == p  # nothing else differs
    default = CausalConfig()  # the default: the noise-scaled prior on the arms' spread (lambda 0.7), dropout 0.15
    for key in ("hyper_t", "hyper_tarnet"):
        est = make_estimator(default, key, 3)
        assert (est.arm_prior, est.arm_prior_noise, est.hypernet.dropout) == (0.7, True, 0.15), key
    cfg = CausalConfig(arm_prior=0.3, arm_prior_noise=False)
    assert make_estimator(cfg, "hyper_t", 3).arm_prior == make_estimator(cfg, "hyper_tarnet", 3).arm_prior == 0.3
    assert (
        not make_estimator(cfg, "hyper_t", 3).arm_prior_noise
        and not make_estimator(cfg, "hyper_tarnet", 3).arm_prior_noise
    )
    assert make_estimator(CausalConfig(arm_prior=0.0), "hyper_t", 3).arm_prior == 0.0  # off


# ---------------------------------------------------------------------- metrics
def test_metrics_against_numpy() -> None:
    rng = np.random.default_rng(0)
    est, tru = rng.normal(size=50), rng.normal(size=50)
    assert sqrt_pehe(est, tru) == pytest.approx(float(np.sqrt(((est - tru) ** 2).mean())))
    assert ate_error(est, tru) == pytest.approx(abs(est.mean() - tru.mean()))
    m, se = mean_se(est)
    assert (m, se) == pytest.approx((est.mean(), est.std(ddof=1) / np.sqrt(50)))
    assert paired_win_rate([1, 2, 3, 4], [2, 2, 1, 5]) == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    with pytest.raises(ValueError, match="one length"):
        sqrt_pehe([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="paired_win_rate: errors must be finite, got 1 and 0 NaN or inf"):
        paired_win_rate([float("nan"), 1.0], [1.0, 2.0])  # would count as a loss both ways


# ---------------------------------------------------------------------- the recipe
QUICK = ["--quick", "--progress", "false", "--threads", "1"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("causal") / "quick"
    code, err = _run(["causal", *QUICK, "--out", str(out)])
    assert code == 0, err
    return out, json.loads((out / "results.json").read_text())


def test_quick_run_writes_results_summary_plots_and_the_model(quick_run) -> None:
    out, res = quick_run
    assert {"results.json", "summary.md", "ihdp.png", "sweep.png", "model.safetensors"} <= {
        p.name for p in out.iterdir()
    }
    settings = res["metrics"]["settings"]
    assert list(settings) == ["ihdp", "n=100", "n=400"]
    for setting, methods in settings.items():
        for m, row in methods.items():
            assert len(row["sqrt_pehe"]) == (3 if setting == "ihdp" else 2), (setting, m)
            assert all(np.isfinite(row["sqrt_pehe"])) and row["pehe"][0] == pytest.approx(np.mean(row["sqrt_pehe"]))
    assert 0 <= settings["ihdp"]["hyper_t"]["win"] <= 1
    summary = (out / "summary.md").read_text()
    assert "HyperT's mean sqrt(PEHE) is" in summary
    tables = [line for line in summary.splitlines() if line.startswith("|")]
    assert tables and {line.count("|") for line in tables} == {8}  # every row has the header's 7 cells
    from hyperdnn.engine import load_model

    model = load_model(out)  # the last IHDP replication's HyperT-learner
    assert model(torch.zeros(4, 25), torch.arange(2), mode="ensemble").shape == (2, 4, 1)


def test_resume_after_an_interruption_gives_the_same_results(quick_run, tmp_path: Path, monkeypatch) -> None:
    _, full = quick_run
    out = tmp_path / "run"
    original, saves = Checkpointer.save, []

    def save_then_stop(self, tensors, state):
        original(self, tensors, state)
        saves.append(state.get("unit"))
        if len(saves) == 9:  # inside the sweep's first unit
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpointer, "save", save_then_stop)
    code, err = _run(["causal", *QUICK, "--out", str(out)])
    assert code == 130 and "--resume" in err
    monkeypatch.setattr(Checkpointer, "save", original)
    code, err = _run(["causal", "--out", str(out), "--resume", "--progress", "false"])
    assert code == 0, err
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["resumed"] is True
    for setting, methods in full["metrics"]["settings"].items():
        for m, row in methods.items():
            mine = resumed["metrics"]["settings"][setting][m]
            assert mine["sqrt_pehe"] == row["sqrt_pehe"] and mine["ate_error"] == row["ate_error"], (setting, m)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--methods", "hyper_q"], "--methods"),
        (["--sweep_data", "nw-e"], "--sweep_data: expected a benchmark"),
        (
            ["--sweep_data", "ihdp", "--sizes", "800"],
            "has 747 units; a sample of 1800 units is larger than the data",
        ),
        (["--ihdp_file", "none.npz"], "no IHDP file"),
        (["--test_fraction", "1.5"], "--test_fraction"),
        (["--arm_prior", "-0.5"], "--arm_prior"),
        (["--arm_prior_noise", "maybe"], "--arm_prior_noise"),
    ],
)
def test_bad_options_are_one_line_and_write_nothing(tmp_path: Path, argv: list[str], message: str) -> None:
    out = tmp_path / "run"
    code, err = _run(["causal", *argv, "--out", str(out)])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_a_missing_extra_is_one_line_and_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    import sys

    for name in [n for n in sys.modules if n.split(".")[0] == "econml"] + ["econml"]:
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "run"
    code, err = _run(["causal", "--quick", "--out", str(out)])
    assert code == 2 and "needs econml: pip install 'hyperdnn[causal]'" in err, err
    assert not out.exists()
