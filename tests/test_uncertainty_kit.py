"""The uncertainty kit, each piece against a hand-computed value or a plain PyTorch reference:
calibration and OOD metrics, the flow's log-determinant, the implicit, Bayesian and dropout
hypernetworks, the deep ensemble and MC dropout, the shifted data, the regression toy and the
report's figures."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn import MLP, Chunked, Target
from hyperdnn.baselines import DeepEnsemble, MCDropout
from hyperdnn.data import Split
from hyperdnn.data.shift import hold_out_classes, noise_images, rotate_images
from hyperdnn.data.toy import gap_regression, toy_noise_std
from hyperdnn.engine.report import band_figure, histogram_figure, reliability_figure
from hyperdnn.methods import (
    BayesianHypernet,
    FlowHypernetwork,
    HypernetDropout,
    ImplicitHypernet,
    function_diversity,
    weight_diversity,
)
from hyperdnn.methods.bayesian_hypernet import ScaledLinear, scaled_mlp
from hyperdnn.methods.uncertainty import (
    categorical_nll,
    dropout_active,
    gaussian_mixture,
    gaussian_nll,
    gaussian_outputs,
)
from hyperdnn.metrics import (
    brier_score,
    expected_calibration_error,
    expected_entropy,
    mean_probabilities,
    mutual_information,
    negative_log_likelihood,
    ood_auroc,
    predictive_entropy,
    reliability_bins,
)
from hyperdnn.networks import mlp

pytestmark = pytest.mark.usefixtures("one_thread")

# four inputs, three classes: confidences 0.7 (right), 0.5 (wrong), 0.4 (right), 0.9 (right)
P = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.3, 0.4, 0.3], [0.05, 0.05, 0.9]])
Y = torch.tensor([0, 1, 1, 2])


# ---------------------------------------------------------------------- metrics, by hand
def test_nll_and_brier_by_hand() -> None:
    nll = -(math.log(0.7) + math.log(0.3) + math.log(0.4) + math.log(0.9)) / 4
    assert negative_log_likelihood(P, Y) == pytest.approx(nll, abs=1e-7)  # float32 probabilities
    rows = [
        0.3**2 + 0.2**2 + 0.1**2,
        0.5**2 + 0.7**2 + 0.2**2,
        0.3**2 + 0.6**2 + 0.3**2,
        0.05**2 + 0.05**2 + 0.1**2,
    ]
    assert brier_score(P, Y) == pytest.approx(sum(rows) / 4, abs=1e-7)
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    # scikit-learn's multi-class Brier score is the same sum over classes (given rows that sum
    # to one in float64, which float32's 0.05 + 0.05 + 0.9 does not: it warns)
    p64 = P.double() / P.double().sum(1, keepdim=True)
    assert brier_score(P, Y) == pytest.approx(sklearn_metrics.brier_score_loss(Y, p64, scale_by_half=False), abs=1e-6)


def test_ece_and_reliability_bins_by_hand() -> None:
    # 2 bins: [0, .5) holds 0.4 (right); [.5, 1] holds 0.7 (right), 0.5 (wrong), 0.9 (right)
    ece = 1 / 4 * abs(1.0 - 0.4) + 3 / 4 * abs(2 / 3 - (0.7 + 0.5 + 0.9) / 3)
    assert expected_calibration_error(P, Y, bins=2) == pytest.approx(ece, abs=1e-6)
    bins = reliability_bins(P, Y, 2)
    assert bins["count"] == [1, 3] and bins["edges"] == [0.0, 0.5, 1.0]
    assert bins["accuracy"] == pytest.approx([1.0, 2 / 3]) and bins["confidence"] == pytest.approx([0.4, 0.7])
    # the bins' weighted gap is the ECE, also at the default 15 bins
    b15 = reliability_bins(P, Y)
    weighted = sum(c / 4 * abs(a - f) for c, a, f in zip(b15["count"], b15["accuracy"], b15["confidence"]))
    assert expected_calibration_error(P, Y) == pytest.approx(weighted, abs=1e-6)


def test_a_confidence_of_one_falls_in_the_last_bin() -> None:
    # a float32 softmax rounds a confident prediction to exactly 1: it shares the last bin
    # [0.9, 1] with 0.92 (Guo et al.), so that bin's accuracy is 1/2 at confidence 0.96
    p = torch.tensor([[1.0, 0.0], [0.92, 0.08]])
    y = torch.tensor([1, 0])
    assert expected_calibration_error(p, y, bins=10) == pytest.approx(abs(0.5 - 0.96), abs=1e-6)
    bins = reliability_bins(p, y, 10)
    assert bins["count"][-1] == 2 and sum(bins["count"]) == 2
    # against a loop over the textbook definition on random probabilities with many exact ones
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 4, generator=g) * 12
    probs, labels = logits.softmax(1), torch.randint(0, 4, (500,), generator=g)
    assert int((probs.max(1).values == 1).sum()) > 50
    conf, pred = probs.double().max(1)
    loop = 0.0
    for b in range(15):
        inside = (conf >= b / 15) & ((conf < (b + 1) / 15) if b < 14 else (conf <= 1))
        if inside.any():
            gap = (pred[inside] == labels[inside]).double().mean() - conf[inside].mean()
            loop += float(inside.double().mean() * gap.abs())
    assert expected_calibration_error(probs, labels) == pytest.approx(loop, abs=1e-9)


def test_calibration_metrics_refuse_what_is_not_a_probability() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, 1.5]])
    y = torch.tensor([0, 1])
    for metric in (negative_log_likelihood, brier_score, expected_calibration_error, reliability_bins):
        with pytest.raises(ValueError, match=r"expected probabilities \(values in \[0, 1\], each row summing to 1\), got values in \[-1, 2\]"):  # fmt: skip
            metric(logits, y)
        with pytest.raises(ValueError, match="probabilities must be finite, got 1 NaN or inf"):
            metric(torch.tensor([[float("nan"), 0.5], [0.5, 0.5]]), y)
        with pytest.raises(ValueError, match="row sums in \\[0.5, 1\\]"):
            metric(torch.tensor([[0.25, 0.25], [0.5, 0.5]]), y)
        with pytest.raises(ValueError, match="expected floating-point probabilities, got torch.int64"):
            metric(torch.tensor([[1, 0], [0, 1]]), y)


def test_entropy_mutual_information_and_auroc_by_hand() -> None:
    probs = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.5, 0.5]]])  # K=2, N=2, C=2
    ln2 = math.log(2)
    assert predictive_entropy(probs).tolist() == pytest.approx([ln2, ln2])
    assert expected_entropy(probs).tolist() == pytest.approx([0.0, ln2])
    assert mutual_information(probs).tolist() == pytest.approx([ln2, 0.0])
    three = torch.tensor([[[0.2, 0.8]], [[0.6, 0.4]]])
    h = lambda p: -sum(q * math.log(q) for q in p)
    assert float(mutual_information(three)) == pytest.approx(h([0.4, 0.6]) - (h([0.2, 0.8]) + h([0.6, 0.4])) / 2)
    # 2 x 3 pairs: (0.1 < 0.3, 0.1 < 0.5, 0.1 < 0.7) (0.5 > 0.3, 0.5 = 0.5 half, 0.5 < 0.7) -> 4.5 / 6
    assert ood_auroc(torch.tensor([0.1, 0.5]), torch.tensor([0.3, 0.5, 0.7])) == pytest.approx(4.5 / 6)
    big = torch.tensor([100.0, 101.0])  # large scores keep their order (no sigmoid rounding into ties)
    assert ood_auroc(big, big + 0.5) == pytest.approx(0.75)
    logits = torch.log(torch.tensor([[[0.7, 0.3]], [[0.1, 0.9]]]))
    assert mean_probabilities(logits)[0].tolist() == pytest.approx([0.4, 0.6])


def test_metrics_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match=r"expected int64 labels of shape \(4,\)"):
        negative_log_likelihood(P, Y[:3])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got 0..5"):
        brier_score(P, torch.tensor([0, 1, 5, 2]))
    with pytest.raises(ValueError, match="bins must be an int >= 1, got 0"):
        expected_calibration_error(P, Y, bins=0)
    with pytest.raises(ValueError, match=r"expected probabilities \(K, N, C\)"):
        mutual_information(P)
    with pytest.raises(ValueError, match="out_scores must be a non-empty 1-D tensor"):
        ood_auroc(torch.rand(3), torch.tensor([]))


def test_likelihoods_match_plain_pytorch() -> None:
    torch.manual_seed(0)
    logits, y = torch.randn(3, 5, 4), torch.randint(0, 4, (5,))
    ref = torch.stack([F.cross_entropy(logits[k], y) for k in range(3)])
    torch.testing.assert_close(categorical_nll(logits, y), ref)
    out, t = torch.randn(3, 5, 2), torch.randn(5)
    mean, var = gaussian_outputs(out)
    ref = torch.stack([F.gaussian_nll_loss(mean[k], t, var[k], full=True, eps=1e-12) for k in range(3)])
    torch.testing.assert_close(gaussian_nll(out, t), ref)
    m, v = gaussian_mixture(out)
    torch.testing.assert_close(m, mean.mean(0))
    torch.testing.assert_close(v, (var + mean**2).mean(0) - mean.mean(0) ** 2, atol=1e-5, rtol=1e-5)


def test_weight_diversity_by_hand() -> None:
    w = torch.tensor([[0.0, 0.0], [1.0, 0.0], [4.0, 0.0]])  # nearest neighbours: 1, 1, 3
    expected = (math.log(1 / math.sqrt(2)) * 2 + math.log(3 / math.sqrt(2))) / 3
    assert float(weight_diversity(w)) == pytest.approx(expected, abs=1e-6)
    assert float(weight_diversity(w, torch.tensor([2.0, 1.0]))) == pytest.approx(expected - math.log(2), abs=1e-6)
    with pytest.raises(ValueError, match="K >= 2 sets"):
        weight_diversity(w[:1])


# ---------------------------------------------------------------------- the flow
def test_flow_log_determinant_equals_a_brute_force_jacobian() -> None:
    torch.manual_seed(0)
    flow = FlowHypernetwork(5, layers=3, hidden=7, mean=torch.randn(5), std=0.3).double()
    for coupling in flow.couplings:  # leave the identity: random scales and shifts
        nn.init.normal_(coupling.net[2].weight, std=0.5)
        nn.init.normal_(coupling.net[2].bias, std=0.5)
    eps = torch.randn(4, 5, dtype=torch.float64)
    theta, log_det = flow(eps)
    for k in range(4):
        jac = torch.autograd.functional.jacobian(lambda e: flow(e.unsqueeze(0))[0][0], eps[k])
        assert float(log_det[k]) == pytest.approx(float(torch.linalg.slogdet(jac)[1]), abs=1e-10)
    torch.testing.assert_close(flow.inverse(theta), eps)
    torch.testing.assert_close(flow.log_prob(theta), flow.base_log_prob(eps) - log_det)
    with pytest.raises(ValueError, match=r"expected noise of shape \(K, 5\), got \(4, 3\)"):
        flow(eps[:, :3])
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        flow.sample(0)


# ---------------------------------------------------------------------- the implicit hypernetwork
def _implicit(**kwargs) -> ImplicitHypernet:
    torch.manual_seed(0)
    target = Target(mlp(6, (8,), 3))
    options = {"samples": 5, "train_samples": 4, "diversity": 0.5, **kwargs}
    return ImplicitHypernet(target, 4, MLP((16,)), Chunked(20, 4, hidden=(8,)), **options)


def test_implicit_k_samples_are_k_distinct_weight_sets_and_the_pass_equals_a_loop() -> None:
    model = _implicit()
    noise = model.noise(5, torch.Generator().manual_seed(1))
    flat = model.weights(noise)
    assert flat.shape == (5, model.model.target.spec.numel)
    assert torch.cdist(flat, flat).add(torch.eye(5)).min() > 1e-3  # no two sets alike
    x = torch.randn(7, 6)
    out = model(x, noise=noise)
    net = model.model.target.module
    weights = model.model.target.spec.unflatten(flat)
    loop = torch.stack([torch.func.functional_call(net, {n: w[k] for n, w in weights.items()}, (x,)) for k in range(5)])
    torch.testing.assert_close(out, loop)
    again = model(x, torch.Generator().manual_seed(1))  # the generator draws the same noise
    torch.testing.assert_close(again, out)


def test_implicit_without_diversity_and_one_sample_is_ordinary_training() -> None:
    model = _implicit(train_samples=1, diversity=0.0)
    reference = copy.deepcopy(model.model.hypernet)
    net = copy.deepcopy(model.model.target.module)
    opt = torch.optim.Adam(model.trainable_parameters(), lr=1e-2)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-2)
    g, ref_g = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    torch.manual_seed(4)
    for _ in range(5):
        x, y = torch.randn(9, 6), torch.randint(0, 3, (9,))
        loss, logs = model.loss(x, y, categorical_nll, 100, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        # the plain loop: one weight set from the hypernetwork, the target's own forward, cross-entropy
        z = torch.randn(1, 4, generator=ref_g)
        weights = {n: w[0] for n, w in reference(z).items()}
        ref_loss = F.cross_entropy(torch.func.functional_call(net, weights, (x,)), y)
        ref_opt.zero_grad()
        ref_loss.backward()
        ref_opt.step()
        assert float(loss) == pytest.approx(float(ref_loss), abs=1e-6) and set(logs) == {"nll"}
    for (name, p), q in zip(model.model.hypernet.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, msg=name)


def test_the_diversity_term_spreads_the_weight_sets() -> None:
    spreads = {}
    for diversity in (0.0, 1.0):
        model = _implicit(diversity=diversity)
        opt = torch.optim.Adam(model.trainable_parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(0)
        torch.manual_seed(1)
        x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
        for _ in range(60):
            loss, _ = model.loss(x, y, categorical_nll, 32, g)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            spreads[diversity] = float(weight_diversity(model.weights(model.noise(8, g)), model.model.hypernet.theta_scale))  # fmt: skip
    assert spreads[1.0] > spreads[0.0] + 0.5


def test_function_diversity_by_hand() -> None:
    f = torch.tensor([[[0.0], [1.0]], [[2.0], [1.0]], [[0.0], [4.0]]])  # K=3 members, P=2 probes
    flat = f.flatten(1)
    # nearest other member, RMS over the 2 numbers: 0 -> 1 (sqrt(2)), 1 -> 0 (sqrt(2)), 2 -> 0 (3/sqrt(2))
    d = torch.tensor([math.sqrt(4 / 2), math.sqrt(4 / 2), math.sqrt(9 / 2)])
    spread = (flat - flat.mean(0)).pow(2).mean()
    for prior in (1.0, 0.5):
        expected = float(d.log().mean() - spread / (2 * prior**2))
        assert float(function_diversity(f, prior)) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match=r"K >= 2 members and P >= 1 probes, got shape \(1, 2, 1\)"):
        function_diversity(f[:1])
    with pytest.raises(ValueError, match="prior_std must be a number > 0, got 0"):
        function_diversity(f, 0)


def test_function_space_diversity_is_the_loss_by_hand_and_moves_the_members_toward_prior_std() -> None:
    def make(**kwargs) -> ImplicitHypernet:
        torch.manual_seed(0)
        target = Target(mlp(1, (16,), 2))
        return ImplicitHypernet(target, 4, MLP((16,)), Chunked(20, 4, hidden=(8,)), 8, 4, **kwargs)

    probes = torch.linspace(-2, 2, 9).unsqueeze(1)
    model = make(diversity=0.5, probes=probes, prior_std=0.5, probe_outputs=lambda f: f[..., 0])
    x, y = torch.randn(5, 1), torch.randn(5)
    loss, logs = model.loss(x, y, gaussian_nll, 5, torch.Generator().manual_seed(2))
    # by hand: the same 4 noise draws, the batch and the probes run separately
    z = model.noise(4, torch.Generator().manual_seed(2))
    out, at_probes = model(x, noise=z), model(probes, noise=z)
    expected = gaussian_nll(out, y).mean() - 0.5 * function_diversity(at_probes[..., 0], 0.5)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), abs=1e-5)
    assert set(logs) == {"nll", "diversity"}

    # The term's immediate effect on a 1-D regression with data at |x| in [1, 2]: one SGD step on
    # the loss with the term against the same step without it (the same initialisation, noise
    # draws and batch), the 4 members then compared at the probes. With prior_std far above their
    # spread the term pushes them apart (their nearest-neighbour entropy estimate grows); far below
    # it, its prior pulls them together (their variance around the mean shrinks). Measured over
    # torch seeds 0-47: the entropy gained 0.019 to 1.05 (all above the 0.01 asserted), the
    # variance kept 0.861 to 0.9993 of the term-free step's (47 of 48 under the 0.999 asserted);
    # at seed 0, 0.098 and 0.984. With the term's sign flipped the variance grew on all 48.
    # (A 600-step fit's spread at x = 0 over that at x = +-1.5 is no such property: with the term
    # at weight 0.1 it was 0.20 to 4.66 over seeds 0-15, below 1 on 5 of them, and weight-space
    # diversity at the same weight gave the larger ratio on 6 of them.)
    xs = torch.cat([torch.linspace(-2, -1, 16), torch.linspace(1, 2, 16)]).unsqueeze(1)
    ys = xs[:, 0].abs()

    def stepped(lr: float, **kwargs) -> tuple[float, float]:
        model = make(**kwargs)
        params = model.trainable_parameters()
        loss, _ = model.loss(xs, ys, gaussian_nll, 32, torch.Generator().manual_seed(2))
        with torch.no_grad():
            for p, g in zip(params, torch.autograd.grad(loss, params)):
                p -= lr * g
            f = model(probes, noise=model.noise(4, torch.Generator().manual_seed(2)))[..., 0]
        return float(weight_diversity(f)), float((f - f.mean(0)).pow(2).mean())

    term = {"diversity": 0.5, "probes": probes, "probe_outputs": lambda f: f[..., 0]}
    entropy_with, _ = stepped(1e-3, prior_std=10.0, **term)
    entropy_without, _ = stepped(1e-3)
    assert entropy_with - entropy_without > 0.01, (entropy_with, entropy_without)
    _, variance_with = stepped(1e-6, prior_std=0.01, **term)
    _, variance_without = stepped(1e-6)
    assert variance_with < 0.999 * variance_without, (variance_with, variance_without)


def test_implicit_refuses_bad_probes() -> None:
    with pytest.raises(TypeError, match="probes must be None, a tensor of inputs or a callable, got list"):
        _implicit(probes=[1.0])
    with pytest.raises(ValueError, match="prior_std must be a number > 0, got -1"):
        _implicit(probes=torch.randn(4, 6), prior_std=-1)
    model = _implicit(probes=torch.randn(4, 5))
    with pytest.raises(ValueError, match=r"expected probes of shape \(P, 6\) with P >= 1, like the batch \(3, 6\), got \(4, 5\)"):  # fmt: skip
        model.loss(torch.randn(3, 6), torch.tensor([0, 1, 2]), categorical_nll, 3)


def test_implicit_refuses_bad_noise_and_sample_counts() -> None:
    model = _implicit()
    with pytest.raises(ValueError, match=r"expected noise of shape \(K, 4\) with K >= 1 \(the hypernetwork's noise width is 4\), got \(3, 5\)"):  # fmt: skip
        model(torch.randn(2, 6), noise=torch.randn(3, 5))
    with pytest.raises(ValueError, match="samples must be an int >= 1 .* got 0"):
        _implicit(samples=0)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        model.noise(0)
    with pytest.raises(ValueError, match="needs train_samples >= 2, got 1"):
        _implicit(train_samples=1)


# ---------------------------------------------------------------------- the Bayesian hypernetwork
def test_scaled_layers_equal_plain_linear_layers_at_initialisation() -> None:
    torch.manual_seed(2)
    plain = mlp(6, (8, 8), 3)
    torch.manual_seed(2)
    scaled = scaled_mlp(6, (8, 8), 3)
    x = torch.randn(5, 6)
    torch.testing.assert_close(scaled(x), plain(x))
    assert all(isinstance(scaled[i], ScaledLinear) for i in (0, 2, 4))


def test_bayesian_hypernet_pass_equals_a_loop_and_its_loss_is_the_elbo() -> None:
    torch.manual_seed(0)
    model = BayesianHypernet(scaled_mlp(6, (8,), 3), samples=4, train_samples=3, flow_layers=2, flow_hidden=8)
    assert list(model.target.spec.shapes) == ["0.scale", "2.scale"] and model.flow.dim == 11
    x, y = torch.randn(7, 6), torch.randint(0, 3, (7,))
    out = model(x, torch.Generator().manual_seed(5))
    weights, log_q = model.sample(4, torch.Generator().manual_seed(5))
    assert torch.cdist(weights["0.scale"], weights["0.scale"]).add(torch.eye(4)).min() > 1e-4
    net = model.target.module
    loop = torch.stack([torch.func.functional_call(net, {n: w[k] for n, w in weights.items()}, (x,)) for k in range(4)])
    torch.testing.assert_close(out, loop)
    loss, logs = model.loss(x, y, categorical_nll, 50, torch.Generator().manual_seed(6))
    theta, log_q = model.flow.sample(3, torch.Generator().manual_seed(6))
    w = model.target.spec.unflatten(theta)
    nll = torch.stack([F.cross_entropy(torch.func.functional_call(net, {n: t[k] for n, t in w.items()}, (x,)), y) for k in range(3)])  # fmt: skip
    prior = torch.distributions.Normal(0.0, 1.0).log_prob(theta).sum(1)
    assert float(loss) == pytest.approx(float(nll.mean() + (log_q - prior).mean() / 50), abs=1e-5)
    assert logs["kl"] == pytest.approx(float((log_q - prior).mean()), abs=1e-4)
    own = {id(p) for p in model.trainable_parameters()}
    assert id(net[0].direction) in own and id(net[0].scale) not in own


def test_bayesian_hypernet_refuses_a_network_without_scaled_layers() -> None:
    with pytest.raises(ValueError, match="must contain ScaledLinear layers .* build it with scaled_mlp"):
        BayesianHypernet(mlp(4, (4,), 2))
    with pytest.raises(ValueError, match="prior_std must be a finite number > 0, got 0"):
        BayesianHypernet(scaled_mlp(4, (4,), 2), prior_std=0)


# ---------------------------------------------------------------------- hypernetwork dropout
def test_hypernet_dropout_masks_are_weight_sets_run_in_one_pass() -> None:
    torch.manual_seed(0)
    model = HypernetDropout(Target(mlp(6, (8,), 3)), 5, MLP((16,), dropout=0.3), Chunked(20, 4), samples=6).eval()
    x = torch.randn(7, 6)
    torch.manual_seed(9)
    out = model(x)
    torch.manual_seed(9)  # the same masks again: the weight sets themselves
    with dropout_active(model.model.hypernet):
        weights = model.model.hypernet(model.code.expand(6, -1))
    assert not model.model.hypernet.trunk.training  # eval mode is back
    flat = model.model.target.spec.flatten(weights)
    assert torch.cdist(flat, flat).add(torch.eye(6)).min() > 1e-4
    net = model.model.target.module
    loop = torch.stack([torch.func.functional_call(net, {n: w[k] for n, w in weights.items()}, (x,)) for k in range(6)])
    torch.testing.assert_close(out, loop)
    with pytest.raises(ValueError, match="needs hidden layers and dropout > 0"):
        HypernetDropout(Target(mlp(6, (8,), 3)), 5, MLP((16,)), Chunked(20, 4))


# ---------------------------------------------------------------------- baselines
def test_deep_ensemble_equals_separately_trained_networks() -> None:
    torch.manual_seed(0)
    ensemble = DeepEnsemble(lambda: mlp(6, (8,), 3), members=3)
    torch.manual_seed(0)
    nets = [mlp(6, (8,), 3) for _ in range(3)]
    opt = torch.optim.Adam(ensemble.trainable_parameters(), lr=1e-2)
    opts = [torch.optim.Adam(n.parameters(), lr=1e-2) for n in nets]
    torch.manual_seed(1)
    for _ in range(5):
        x, y = torch.randn(9, 6), torch.randint(0, 3, (9,))
        loss, _ = ensemble.loss(x, y, categorical_nll, 100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for net, o in zip(nets, opts):
            o.zero_grad()
            F.cross_entropy(net(x), y).backward()
            o.step()
    x = torch.randn(4, 6)
    torch.testing.assert_close(ensemble(x), torch.stack([n(x) for n in nets]))
    torch.testing.assert_close(ensemble.network(2)(x), nets[2](x))
    assert ensemble.num_trainable() == 3 * sum(p.numel() for p in nets[0].parameters())
    with pytest.raises(ValueError, match="members must be an int >= 1 .* got 0"):
        DeepEnsemble(lambda: mlp(6, (8,), 3), members=0)


def test_mc_dropout_samples_in_eval_mode_and_trains_as_dropout() -> None:
    torch.manual_seed(0)
    model = MCDropout(mlp(6, (16,), 3, dropout=0.5), samples=8).eval()
    x = torch.randn(5, 6)
    out = model(x)
    assert out.shape == (8, 5, 3) and not model.network[2].training
    assert (out[0] - out[1]).abs().max() > 1e-4
    net = copy.deepcopy(model.network).train()
    torch.manual_seed(3)
    loss, _ = model.train().loss(x, torch.tensor([0, 1, 2, 0, 1]), categorical_nll, 100)
    torch.manual_seed(3)
    assert float(loss) == pytest.approx(float(F.cross_entropy(net(x), torch.tensor([0, 1, 2, 0, 1]))), abs=1e-6)
    with pytest.raises(ValueError, match="needs a dropout layer with p > 0"):
        MCDropout(mlp(6, (16,), 3))


def test_dropout_active_restores_modes_after_an_error() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).eval()
    with pytest.raises(RuntimeError, match="boom"), dropout_active(net):
        assert net[1].training
        raise RuntimeError("boom")
    assert not net[1].training and not net.training


# ---------------------------------------------------------------------- data
def test_shifted_inputs() -> None:
    x = torch.rand(3, 2 * 5 * 5)
    turned = rotate_images(x, (2, 5, 5), 90).view(3, 2, 5, 5)
    torch.testing.assert_close(turned, x.view(3, 2, 5, 5).rot90(1, (2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(rotate_images(x, (2, 5, 5), 360), x, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"expected rows \(N, 50\) of images \(2, 5, 5\), got \(3, 49\)"):
        rotate_images(x[:, :49], (2, 5, 5), 90)
    noise = noise_images(4, (1, 3, 3), torch.Generator().manual_seed(0))
    assert noise.shape == (4, 9) and 0 <= float(noise.min()) and float(noise.max()) < 1
    data = Split(torch.rand(10, 4), torch.arange(10) % 4, torch.rand(6, 4), torch.arange(6) % 4, (1, 2, 2), 4)
    held = hold_out_classes(data, 2)
    assert held.y_train.tolist() == [0, 1, 0, 1, 0, 1] and held.y_test.tolist() == [0, 1, 0, 1]
    assert len(held.x_unseen) == 4 + 2
    with pytest.raises(ValueError, match=r"classes must be an int in \[1, 4\) .* got 4"):
        hold_out_classes(data, 4)


def test_regression_toy_has_a_gap_and_input_dependent_noise() -> None:
    toy = gap_regression(2000, 10, seed=3)
    x = toy.x_train[:, 0]
    assert bool((x.abs() >= 1.5).all()) and bool((x.abs() <= 4).all())
    assert 0.4 < float((x < 0).float().mean()) < 0.6
    from hyperdnn.data.toy import toy_function

    resid = toy.y_train - toy_function(x)
    near, far = x.abs() < 2.0, x.abs() > 3.5
    assert float(resid[near].std()) < float(resid[far].std())  # the noise grows with |x|
    assert float(resid[far].std()) == pytest.approx(float(toy_noise_std(torch.tensor(3.75))), rel=0.25)
    torch.testing.assert_close(gap_regression(5, 5, seed=1).y_test, gap_regression(5, 5, seed=1).y_test)


# ---------------------------------------------------------------------- report figures
def test_uncertainty_figures_draw_and_refuse_bad_input() -> None:
    bins = reliability_bins(P, Y, 5)
    fig = reliability_figure({"a": bins, "b": bins}, "t")
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2
    with pytest.raises(ValueError, match="expected 5 bins for 6 edges, got 4 confidences"):
        reliability_figure({"a": {**bins, "confidence": bins["confidence"][:4]}}, "t")
    with pytest.raises(ValueError, match=r"one per x\) for every model, not so for \['a'\]"):
        band_figure([0.0, 1.0], {"a": ([0.0], [1.0])}, "t")
    with pytest.raises(ValueError, match="these have none: a/out"):
        histogram_figure({"a": {"in": [0.1], "out": []}}, "t", "entropy")
    fig = band_figure([0.0, 1.0], {"a": ([0.0, 1.0], [0.5, 0.5])}, "t", data=([0.5], [3.0]), shade=(0.2, 0.4))
    assert fig.axes[0].get_ylim()[1] > 3.0  # the data are in view
