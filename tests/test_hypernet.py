"""HyperNetwork and HyperModel: heads, conditioners, init, residual form, bad input."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
from torch import nn

from hyperdnn import (
    MLP,
    Chunked,
    ComponentWise,
    Conditioned,
    Conditioner,
    Continuous,
    DataEncoder,
    Execution,
    HyperModel,
    HyperNetwork,
    LearnedLatent,
    ModuleTrunk,
    MultiHead,
    Noise,
    Once,
    Role,
    Target,
    TaskEmbedding,
    WeightSpec,
)


def mlp_target() -> Target:
    return Target(nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)))


HEADS = {
    "once": lambda: Once(),
    "multihead_layer": lambda: MultiHead("layer"),
    "multihead_tensor_hidden": lambda: MultiHead("tensor", hidden=(8,)),
    "multihead_globs": lambda: MultiHead(["0.*", "2.*", "4.*"]),
    "componentwise_unit": lambda: ComponentWise("unit", embed_dim=6),
    "componentwise_tensor_hidden": lambda: ComponentWise("tensor", embed_dim=6, hidden=(10,)),
    "chunked": lambda: Chunked(50, 4),
    "chunked_hidden": lambda: Chunked(64, 4, hidden=(12, 12)),
}


@pytest.mark.parametrize("head", list(HEADS))
def test_every_head_generates_the_spec_and_trains_end_to_end(head):
    torch.manual_seed(0)
    target = mlp_target()
    hnet = HyperNetwork(target, TaskEmbedding(3, 8), MLP((16,)), HEADS[head]())
    w = hnet(1)
    assert list(w) == list(target.spec.names)
    assert {k: tuple(v.shape) for k, v in w.items()} == target.spec.shapes
    wb = hnet(torch.tensor([0, 2, 1, 1]))
    assert {k: tuple(v.shape[1:]) for k, v in wb.items()} == target.spec.shapes
    assert all(v.shape[0] == 4 for v in wb.values())
    # batched context equals a loop of single contexts
    for i, t in enumerate([0, 2, 1, 1]):
        single = hnet(t)
        for k in single:
            torch.testing.assert_close(wb[k][i], single[k])
    # gradients reach every hypernet parameter that the used tasks touch
    model = HyperModel(hnet, target)
    x = torch.randn(5, 12)
    model(x, 1).pow(2).sum().backward()
    emb = hnet.conditioner.embeddings
    for n, p in hnet.named_parameters():
        if n.startswith("conditioner.embeddings.") and n != "conditioner.embeddings.1":
            assert p.grad is None, n
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    assert emb[1].grad is not None
    for n, p in target.module.named_parameters():
        assert p.grad is None, n


@pytest.mark.parametrize("head", list(HEADS))
def test_state_dict_round_trip(head):
    torch.manual_seed(0)
    a = HyperNetwork(mlp_target(), TaskEmbedding(2, 8), MLP((16,)), HEADS[head]())
    torch.manual_seed(1)
    b = HyperNetwork(mlp_target(), TaskEmbedding(2, 8), MLP((16,)), HEADS[head]())
    b.load_state_dict(a.state_dict())
    for k, v in a(1).items():
        torch.testing.assert_close(b(1)[k], v)


def _variance_ratios(head_factory, conditioner_factory, eval_context, seeds=range(128)):
    """Var(generated) / Var(target default init) per weight/bias tensor, pooled over seeds
    (each seed a fresh hypernet: the variance over the init distribution, which small
    tensors such as a 3-element bias cannot show within one draw)."""
    pooled: dict[str, list[torch.Tensor]] = {}
    spec = None
    for seed in seeds:
        torch.manual_seed(seed)
        target = mlp_target()
        spec = target.spec
        hnet = HyperNetwork(target, conditioner_factory(), MLP((32, 32)), head_factory())
        with torch.no_grad():
            w = hnet(eval_context())
        for t in spec:
            if t.role in (Role.WEIGHT, Role.BIAS):
                pooled.setdefault(t.name, []).append(w[t.name].flatten())
    return {k: float(torch.cat(v).var()) / spec[k].init_std ** 2 for k, v in pooled.items()}


@pytest.mark.parametrize("head", list(HEADS))
def test_hyperfan_in_matches_default_init_variance_task_conditioned(head):
    ratios = _variance_ratios(HEADS[head], lambda: TaskEmbedding(16, 8), lambda: torch.arange(16))
    for name, r in ratios.items():
        assert 0.8 <= r <= 1.2, f"{head}: {name} variance ratio {r:.3f}"


@pytest.mark.parametrize("head", list(HEADS))
def test_hyperfan_in_holds_on_fresh_noise_samples(head):
    # calibrated on the conditioner's probe, measured on 256 fresh draws
    ratios = _variance_ratios(HEADS[head], lambda: Noise(8), lambda: 256)
    for name, r in ratios.items():
        assert 0.8 <= r <= 1.2, f"{head}: {name} variance ratio {r:.3f}"


def test_hyperfan_out_uses_fan_out():
    torch.manual_seed(0)
    target = mlp_target()
    hnet = HyperNetwork(target, Noise(8), MLP((32,)), Once(), init="hyperfan_out")
    with torch.no_grad():
        w = hnet(512)
    t = target.spec["0.weight"]  # fan_in 12, fan_out 16
    expected = t.init_std**2 * t.fan_in / t.fan_out
    assert 0.8 <= float(w["0.weight"].var()) / expected <= 1.2


def test_unit_init_is_not_scaled_to_the_target():
    torch.manual_seed(0)
    target = mlp_target()
    hnet = HyperNetwork(target, Noise(8), MLP((32,)), Once(), init="unit")
    with torch.no_grad():
        w = hnet(256)
    assert float(w["0.weight"].var()) > 5 * target.spec["0.weight"].init_std ** 2


def test_norm_scales_start_at_one():
    torch.manual_seed(0)
    target = Target(nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2)))
    hnet = HyperNetwork(target, TaskEmbedding(4, 8), MLP((16,)), Chunked(20, 4))
    with torch.no_grad():
        w = hnet(torch.arange(4))
    assert abs(float(w["1.weight"].mean()) - 1.0) < 0.1
    assert abs(float(w["1.bias"].mean())) < 0.1


def test_chunked_with_one_chunk_equals_generate_once():
    torch.manual_seed(0)
    target = mlp_target()
    P = target.spec.numel
    chunked = HyperNetwork(target, TaskEmbedding(3, 8), MLP((16,)), Chunked(P + 7, 5))
    once = HyperNetwork(target, TaskEmbedding(3, 8), MLP((16,)), Once())
    once.load_state_dict({k: v for k, v in chunked.state_dict().items() if not k.startswith("head.")}, strict=False)
    gen = chunked.head.generator
    with torch.no_grad():
        once.head.linear.weight.copy_(gen.proj_h.weight[:P])
        once.head.linear.bias.copy_((gen.proj_e(gen.embeddings)[0])[:P])
    ctx = torch.tensor([0, 1, 2])
    for k, v in chunked(ctx).items():
        torch.testing.assert_close(once(ctx)[k], v)
    assert chunked.head.num_chunks == 1


def test_residual_form_starts_near_theta0_and_keys_by_role():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    target = Target(net)
    hnet = HyperNetwork(target, TaskEmbedding(2, 8), MLP((16,)), Once(), residual="target", residual_scale=0.01)
    w = hnet(0)
    for n, p in net.named_parameters():
        assert (w[n] - p).abs().max() < 0.05 * (p.abs().max() + 1)
    neutral = HyperNetwork(target, TaskEmbedding(2, 8), MLP((16,)), Once(), residual="neutral", residual_scale=0.0)
    w0 = neutral(0)
    assert torch.equal(w0["1.weight"], torch.ones(8)) and torch.equal(w0["1.bias"], torch.zeros(8))
    assert torch.equal(w0["0.weight"], torch.zeros(8, 4))
    learn = HyperNetwork(target, TaskEmbedding(2, 8), MLP((16,)), Once(), residual="target", learn_theta0=True)
    assert any(n == "theta_mean" for n, _ in learn.named_parameters())
    pretrained = {k: torch.full_like(v, 0.5) for k, v in target.default_weights().items()}
    pre = HyperNetwork(target, TaskEmbedding(2, 8), MLP((16,)), Once(), residual=pretrained, residual_scale=0.0)
    assert torch.equal(pre(1)["2.bias"], torch.full((2,), 0.5))


def test_task_embedding_grows_and_keeps_old_tasks():
    torch.manual_seed(0)
    target = mlp_target()
    hnet = HyperNetwork(target, TaskEmbedding(2, 8), MLP((16,)), Chunked(100, 4))
    before = {k: v.detach().clone() for k, v in hnet(torch.tensor([0, 1])).items()}
    ids = hnet.conditioner.add_tasks(3)
    assert ids == [2, 3, 4] and hnet.conditioner.num_tasks == 5
    after = hnet(torch.tensor([0, 1]))
    for k in before:
        assert torch.equal(before[k], after[k])
    assert hnet(4)["0.weight"].shape == (16, 12)


def test_data_conditioned_per_sample_weights_equal_a_loop():
    torch.manual_seed(0)
    target = mlp_target()
    enc = DataEncoder(nn.Sequential(nn.Linear(12, 6), nn.Tanh()), 6)
    model = HyperModel(HyperNetwork(target, enc, MLP((16,)), Chunked(64, 4)), target)
    x = torch.randn(64, 12)
    out = model(x)
    ref = torch.cat([model(x[i : i + 1]) for i in range(64)])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    # a different weight set per sample: the same input under two contexts differs
    w = model.hypernet(x[:2])
    assert not torch.allclose(w["0.weight"][0], w["0.weight"][1])


def test_noise_conditioned_ensemble():
    torch.manual_seed(0)
    target = mlp_target()
    model = HyperModel(HyperNetwork(target, Noise(4), MLP((16,))), target)
    out = model(torch.randn(7, 12), 5)
    assert out.shape == (5, 7, 3)
    z = torch.randn(5, 4)
    x = torch.randn(7, 12)
    out = model(x, z)
    for k in range(5):
        torch.testing.assert_close(out[k], model(x, z[k]), atol=1e-5, rtol=1e-5)


def test_continuous_and_latent_conditioners():
    torch.manual_seed(0)
    target = mlp_target()
    cont = HyperModel(HyperNetwork(target, Continuous(2, "fourier", 3, low=0.0, high=10.0), MLP((16,))), target)
    assert cont.hypernet.conditioner.out_features == 2 * 7
    x = torch.randn(4, 12)
    assert cont(x, torch.tensor([1.0, 9.0])).shape == (4, 3)
    assert cont(x, torch.rand(4, 2) * 10).shape == (4, 3)
    static = HyperModel(HyperNetwork(target, LearnedLatent(8), MLP((16,)), Chunked(100, 4)), target)
    assert static(x).shape == (4, 3)


def _reference(target: Target, weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Plain PyTorch: the module with one weight set."""
    return torch.func.functional_call(target.module, weights, (x,))


@pytest.mark.parametrize("k", [5, 7])  # x has N = 7 rows: K != N, and K == N
def test_preference_rays_run_as_an_ensemble_on_one_shared_batch(k):
    torch.manual_seed(0)
    target = mlp_target()
    rays = Continuous(2, execution="ensemble")
    model = HyperModel(HyperNetwork(target, rays, MLP((16,))), target)
    x, r = torch.randn(7, 12), torch.rand(k, 2)
    out = model(x, r)
    assert out.shape == (k, 7, 3)
    w = model.hypernet(r)
    for i in range(k):
        torch.testing.assert_close(out[i], _reference(target, {n: t[i] for n, t in w.items()}, x), atol=1e-5, rtol=1e-5)


def test_continuous_per_sample_refuses_another_batch_instead_of_guessing():
    torch.manual_seed(0)
    target = mlp_target()
    model = HyperModel(HyperNetwork(target, Continuous(2), MLP((16,))), target)
    x = torch.randn(7, 12)
    with pytest.raises(
        ValueError,
        match=r"Continuous runs one weight set per input sample .* the context has 5 items and x has 7 samples "
        r".* Continuous\(\.\.\., execution='ensemble'\)\) or pass mode='ensemble'",
    ):
        model(x, torch.rand(5, 2))
    h = torch.rand(7, 2)
    w = model.hypernet(h)
    ref = torch.stack([_reference(target, {n: t[i] for n, t in w.items()}, x[i : i + 1])[0] for i in range(7)])
    torch.testing.assert_close(model(x, h), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"Continuous: execution must be 'per_sample' or 'ensemble', got 'auto'"):
        Continuous(2, execution="auto")


class Rays(Conditioner):
    """A conditioner of the user's: K rays, each run on the whole batch."""

    out_features = 2

    def forward(self, context):
        return Conditioned(context.reshape(-1, 2), context.dim() == 2)

    def probe(self, n):
        return torch.rand(n, 2)

    def execution(self, batched):
        return Execution.ENSEMBLE if batched else Execution.SHARED


class ParityKeys(Conditioner):
    """A conditioner of the user's whose contexts are keys: integers, keyed by parity."""

    out_features = 3
    norm_stats_policy = "per_context"

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(2, 3))

    def forward(self, context):
        ids = torch.as_tensor(context)
        return Conditioned(self.table[ids.reshape(-1) % 2], ids.dim() == 1)

    def probe(self, n):
        return torch.arange(n)

    def execution(self, batched):
        return Execution.PER_SAMPLE if batched else Execution.SHARED

    def context_keys(self, context):
        return torch.as_tensor(context).reshape(-1) % 2


def test_hypermodel_follows_the_execution_contract_of_a_users_conditioner():
    torch.manual_seed(0)
    target = mlp_target()
    model = HyperModel(HyperNetwork(target, Rays(), MLP((16,))), target)
    x, r = torch.randn(4, 12), torch.rand(6, 2)
    out = model(x, r)
    assert out.shape == (6, 4, 3)
    w = model.hypernet(r)
    torch.testing.assert_close(out[5], _reference(target, {n: t[5] for n, t in w.items()}, x), atol=1e-5, rtol=1e-5)
    # its norm_stats_policy and context keys decide the BatchNorm statistics
    bn = Target(nn.Sequential(nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)))
    keyed = HyperModel(HyperNetwork(bn, ParityKeys(), MLP((8,))), bn)
    assert keyed.norm_stats.mode == "per_context"
    keyed(torch.randn(4, 12), torch.tensor([0, 1, 2, 5]))
    assert keyed.norm_stats.keys() == [0, 1]
    # a conditioner without keys cannot have per-context statistics
    with pytest.raises(TypeError, match="Rays: its contexts have no keys for per-context statistics"):
        Rays().context_keys(torch.rand(2, 2))


def test_an_execution_that_is_not_an_execution_is_refused():
    class Loose(Rays):
        def execution(self, batched):
            return "ensemble"

    target = mlp_target()
    model = HyperModel(HyperNetwork(target, Loose(), MLP((16,))), target)
    with pytest.raises(
        TypeError, match=r"Loose.execution\(batched=True\) must return an Execution .* got 'ensemble' \(str\)"
    ):
        model(torch.randn(3, 12), torch.rand(2, 2))


def test_module_trunk_and_summary():
    target = mlp_target()
    trunk = ModuleTrunk(nn.Sequential(nn.Linear(8, 24), nn.GELU()), 24, in_features=8)
    model = HyperModel(HyperNetwork(target, TaskEmbedding(2, 8), trunk, Chunked(100, 4)), target)
    counts = model.parameter_counts()
    assert counts["generated"] == target.spec.numel
    assert counts["hypernet"] == sum(p.numel() for p in model.hypernet.parameters())
    assert counts["target_own"] == 0
    s = model.summary()
    assert "hypernet" in s and f"{target.spec.numel:,}" in s
    gen_ids = {id(p) for p in target.module.parameters()}
    assert not any(id(p) in gen_ids for p in model.trainable_parameters())


def test_partial_generation_trains_the_rest_directly():
    net = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))
    target = Target(net, select="2.*")
    model = HyperModel(HyperNetwork(target, TaskEmbedding(2, 4), MLP((8,))), target)
    assert model.parameter_counts()["target_own"] == 12 * 16 + 16
    model(torch.randn(3, 12), 0).sum().backward()
    assert net[0].weight.grad is not None and net[2].weight.grad is None


# ------------------------------------------------------------------ bad input


def test_task_id_out_of_range():
    hnet = HyperNetwork(mlp_target(), TaskEmbedding(3, 8), MLP((16,)))
    with pytest.raises(ValueError, match=r"task ids must be in \[0, 2\], got 3"):
        hnet(3)
    with pytest.raises(ValueError, match="got -1"):
        hnet(torch.tensor([0, -1]))
    with pytest.raises(TypeError, match="integer task ids"):
        hnet(torch.tensor([0.5]))


def test_context_of_wrong_width():
    hnet = HyperNetwork(mlp_target(), Continuous(3), MLP((16,)))
    with pytest.raises(ValueError, match=r"expected a context of shape \(B, 3\) or \(3,\), got \(4, 2\)"):
        hnet(torch.zeros(4, 2))
    noise = HyperNetwork(mlp_target(), Noise(4), MLP((16,)))
    with pytest.raises(ValueError, match=r"\(K, 4\)"):
        noise(torch.zeros(2, 5))


def test_non_finite_weights_named():
    torch.manual_seed(0)
    hnet = HyperNetwork(mlp_target(), TaskEmbedding(2, 8), MLP((16,)), MultiHead("layer"), check_finite=True)
    hnet(0)
    spec = hnet.spec
    with torch.no_grad():
        hnet.theta_mean[spec.offset("2.weight") + 3] = float("nan")
        hnet.theta_mean[spec.offset("4.bias")] = float("inf")
    with pytest.raises(FloatingPointError, match=r"\['2.weight', '4.bias'\]"):
        hnet(0)
    hnet.check_finite = False
    assert not bool(torch.isfinite(hnet(0)["2.weight"]).all())


def test_bad_construction_arguments():
    target = mlp_target()
    with pytest.raises(TypeError, match="conditioner must be a Conditioner"):
        HyperNetwork(target, nn.Linear(2, 2))
    with pytest.raises(TypeError, match="trunk must be a Trunk"):
        HyperNetwork(target, TaskEmbedding(2, 4), nn.Linear(4, 4))
    with pytest.raises(ValueError, match="init must be 'hyperfan_in', 'hyperfan_out' or 'unit', got 'xavier'"):
        HyperNetwork(target, TaskEmbedding(2, 4), init="xavier")
    with pytest.raises(ValueError, match="residual='target' needs a Target"):
        HyperNetwork(target.spec, TaskEmbedding(2, 4), residual="target")
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
        Chunked(0)
    with pytest.raises(ValueError, match="groups must be"):
        MultiHead("rows")
    with pytest.raises(ValueError, match="match no group"):
        HyperNetwork(target, TaskEmbedding(2, 4), head=MultiHead(["0.*"]))
    with pytest.raises(ValueError, match="expects inputs of width 5"):
        HyperNetwork(target, TaskEmbedding(2, 4), ModuleTrunk(nn.Linear(5, 5), 5, in_features=5))
    other = Target(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="spec \\(first\\) differs"):
        HyperModel(HyperNetwork(target, TaskEmbedding(2, 4)), other)
    with pytest.raises(ValueError, match="mode must be"):
        HyperModel(HyperNetwork(target, TaskEmbedding(2, 4)), target)(torch.randn(2, 12), 0, mode="loop")


def test_hypermodel_names_how_the_specs_differ_and_refuses_a_target_of_another_dtype():
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    hnet = HyperNetwork(Target(net), TaskEmbedding(2, 4))
    wider = Target(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)))
    with pytest.raises(ValueError, match=r"differing: 2.weight \(shape \(2, 6\) vs \(3, 6\), fan_out 2 vs 3\)"):
        HyperModel(hnet, wider)
    with pytest.raises(ValueError, match=r"only in the first: \['0.bias', '2.bias'\]"):
        HyperModel(hnet, Target(net, "*.weight"))
    assert hnet.spec.difference(Target(net).spec) == ""
    # a float64 target beside a float32 hypernetwork failed later inside a matmul (or ran the
    # target in float32 when the input was float32)
    double = Target(copy.deepcopy(net).double())
    with pytest.raises(
        TypeError, match=r"generates torch.float32 weights but the target's module holds \['torch.float64'\]"
    ):
        HyperModel(HyperNetwork(double, TaskEmbedding(2, 4)), double)


def test_residual_theta0_keeps_a_float64_targets_values_under_a_float64_default():
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        target = Target(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)))
        hnet = HyperNetwork(target, TaskEmbedding(2, 4), residual="target")
        model = HyperModel(hnet, target)
        assert hnet.theta_mean.dtype == torch.float64
        torch.testing.assert_close(hnet.theta_mean, target.spec.flatten(target.default_weights()), rtol=0, atol=0)
        assert model(torch.randn(3, 4), 1).dtype == torch.float64
    finally:
        torch.set_default_dtype(previous)


def test_spec_validation_on_target_construction():
    net = nn.Linear(3, 3)
    spec = WeightSpec.from_module(nn.Linear(4, 3))
    with pytest.raises(ValueError, match="not parameters of the module"):
        Target(net, spec=spec)


def test_noise_and_continuous_contexts_of_another_dtype_are_refused_by_name():
    # they failed inside the trunk's matmul ("mat1 and mat2 must have the same dtype")
    from hyperdnn import Continuous

    for cond, bad, name in (
        (
            Noise(3),
            torch.randn(2, 3, dtype=torch.float64),
            "Noise: expected noise of the module's dtype torch.float32, got torch.float64",
        ),
        (
            Noise(3),
            torch.ones(2, 3, dtype=torch.long),
            "Noise: expected noise of the module's dtype torch.float32, got torch.int64",
        ),
        (
            Continuous(2),
            torch.rand(2, 2, dtype=torch.float64),
            "Continuous: expected a context of the module's dtype torch.float32, got torch.float64",
        ),
        (
            Continuous(2, encoding="fourier"),
            torch.rand(2, dtype=torch.float64),
            "Continuous: expected a context of the module's dtype",
        ),
    ):
        target = Target(nn.Linear(4, 2))
        model = HyperModel(HyperNetwork(target, cond, MLP((8,))), target)
        with pytest.raises(TypeError, match=re.escape(name)):
            model(torch.randn(2, 4), bad)
        model.double()
        assert model(torch.randn(2, 4, dtype=torch.float64), bad.double()).dtype == torch.float64


@pytest.mark.parametrize("head", ["once", "chunked"])
def test_calibration_with_a_learned_latent_measures_its_own_code(head):
    # LearnedLatent has no probe; calibration drew N(0, 1) codes, so a latent of std 0.01 gave
    # generated weights about 1e-4 times the target's own variance (Once, no trunk layers)
    from hyperdnn import DynamicHyperNetwork, LearnedLatent

    torch.manual_seed(0)
    target = Target(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)))
    hnet = HyperNetwork(target, LearnedLatent(8, init_std=0.01), MLP(()), Once() if head == "once" else Chunked(64))
    raw = hnet.head(hnet.trunk(hnet.conditioner(None).c))
    assert 0.5 < float(raw.detach().pow(2).mean()) < 2.0
    dyn = DynamicHyperNetwork(LearnedLatent(8, init_std=0.01), MLP(()), max_component_size=32)
    dyn.calibrate(target.spec)
    assert 0.5 < float(dyn.raw(None, target.spec)[0].detach().pow(2).mean()) < 2.0


def test_learn_theta0_without_a_residual_is_refused_and_multihead_names_groups_taken_earlier():
    target = Target(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)))
    # it was accepted and ignored: theta_mean stayed a fixed buffer
    with pytest.raises(
        ValueError, match="learn_theta0=True makes the residual form's theta0 trainable, but residual is None"
    ):
        HyperNetwork(target, TaskEmbedding(2, 4), learn_theta0=True)
    assert "theta_mean" in dict(
        HyperNetwork(target, TaskEmbedding(2, 4), residual="neutral", learn_theta0=True).named_parameters()
    )
    with pytest.raises(ValueError, match=r"groups \['0.\*'\] match no tensor that an earlier group did not take"):
        HyperNetwork(target, TaskEmbedding(2, 4), head=MultiHead(["*", "0.*"]))


def test_continuous_bounds_and_frequencies_keep_a_float64_defaults_precision():
    # list bounds were always rounded to float32 (number bounds followed the default dtype),
    # so a float64 model standardised a timestamp-like context with wrong bounds
    from hyperdnn import Continuous

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for low, high in ((1_700_000_037.0, 1_700_000_137.0), ([1_700_000_037.0], [1_700_000_137.0])):
            cond = Continuous(1, low=low, high=high, encoding="fourier", num_frequencies=10)
            assert cond.low.dtype == cond.high.dtype == cond.freqs.dtype == torch.float64
            z = cond(torch.tensor([[1_700_000_037.0], [1_700_000_087.0], [1_700_000_137.0]])).c[:, 0]
            torch.testing.assert_close(z, torch.tensor([-1.0, 0.0, 1.0]), rtol=0, atol=1e-12)
            assert float(cond.freqs[-1]) == 2.0**9 * math.pi
    finally:
        torch.set_default_dtype(previous)


def test_noise_takes_numpy_counts_and_names_a_0d_tensor_and_forced_modes_name_the_mismatch():
    import numpy as np

    noise = Noise(3)
    assert noise(np.int64(2)).c.shape == (2, 3)
    with pytest.raises(ValueError, match=r"expected noise of shape \(K, 3\) or \(3,\), got \(\)"):
        noise(torch.tensor(1.0))  # an IndexError before
    target = Target(nn.Linear(4, 2))
    model = HyperModel(HyperNetwork(target, TaskEmbedding(3, 4)), target)
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"HyperModel: mode='ensemble' runs a batch of contexts .* got one unbatched"):
        model(x, 1, mode="ensemble")
    with pytest.raises(ValueError, match=r"HyperModel: mode='shared' runs one unbatched context, got a batch of 3"):
        model(x, [0, 1, 2], mode="shared")
    assert model(x, [0, 1], mode="ensemble").shape == (2, 3, 2)
