"""Target: functional execution equals the plain module; batched equals a loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from hyperdnn import Target, WeightSpec
from tests.helpers import CASES, assert_unchanged, build_case, load, one_set, random_weights, state


@pytest.mark.parametrize("name", list(CASES))
def test_shared_equals_plain_module(name):
    module, target, data = build_case(name)
    x = data(4)
    # the module's own weights reproduce its own output
    torch.testing.assert_close(target(target.default_weights(), x), module(x))
    # other weights equal a copy of the module loaded with them
    w = random_weights(target.spec)
    torch.testing.assert_close(target(w, x), load(module, w)(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("path", ["auto", "vmap"])
def test_per_sample_equals_loop(name, path):
    if path == "vmap" and name in (
        "lstm",
        "lstm_bidir_seq_first",
        "lstm_proj",
        "lstm_proj_bidir_seq_first",
        "gru",
        "rnn_tanh",
        "lstm_cell",
    ):
        pytest.skip("torch has no vmap batching rule for cuDNN-style RNN ops; the auto path covers them")
    module, target, data = build_case(name, per_sample=path)
    B = 64
    x = data(B)
    w = random_weights(target.spec, B)
    before = state(module)
    out = target(w, x)
    ref = torch.stack([target({k: v[b] for k, v in w.items()}, x[b : b + 1])[0] for b in range(B)])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    assert_unchanged(module, before)


@pytest.mark.parametrize("name", list(CASES))
def test_ensemble_equals_loop(name):
    module, target, data = build_case(name)
    K = 5
    x = data(3)
    w = random_weights(target.spec, K)
    out = target.ensemble(w, x)
    ref = torch.stack([target({k: v[i] for k, v in w.items()}, x) for i in range(K)])
    assert out.shape[:2] == (K, 3)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "name", ["mlp", "conv2d_bn", "embedding_attention", "lstm", "lstm_proj", "tied", "custom_param"]
)
def test_gradients_reach_weights_not_module_copies(name):
    module, target, data = build_case(name)
    B = 4
    w = {k: v.requires_grad_() for k, v in random_weights(target.spec, B).items()}
    target(w, data(B)).sum().backward()
    for k, v in w.items():
        assert v.grad is not None and v.grad.abs().sum() > 0, k
    for n, p in module.named_parameters():
        if n in target.spec:
            assert p.grad is None, n


def test_partial_selection_keeps_other_parameters_trainable():
    module = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    target = Target(module, select="0.*")
    assert target.spec.names == ("0.weight", "0.bias")
    w = {k: v.requires_grad_() for k, v in random_weights(target.spec, 3).items()}
    target(w, torch.randn(3, 4)).sum().backward()
    assert module[2].weight.grad is not None
    assert module[0].weight.grad is None


def test_batchnorm_train_per_sample_uses_batch_statistics_and_updates_running_stats():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6))
    target = Target(module)
    B = 8
    x = torch.randn(B, 4)
    w = random_weights(target.spec, B)
    # same weights for every sample: equals the plain module in training mode
    same = {k: v[:1].expand_as(v).clone() for k, v in w.items()}
    ref_module = load(module, {k: v[0] for k, v in same.items()})
    out = target(same, x)
    torch.testing.assert_close(out, ref_module(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(module[1].running_mean, ref_module[1].running_mean)
    assert int(module[1].num_batches_tracked) == 1


def test_spec_roles_and_fans():
    spec = WeightSpec.from_module(nn.Sequential(nn.Conv2d(3, 8, 5), nn.BatchNorm2d(8), nn.Linear(8, 2)))
    roles = {t.name: t.role.value for t in spec}
    assert roles == {
        "0.weight": "weight",
        "0.bias": "bias",
        "1.weight": "norm_scale",
        "1.bias": "norm_shift",
        "2.weight": "weight",
        "2.bias": "bias",
    }
    assert spec["0.weight"].fan_in == 75 and spec["0.weight"].fan_out == 200
    assert spec["1.weight"].init_mean == 1.0


def test_selection_forms():
    net = nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 2))
    assert WeightSpec.from_module(net, nn.Linear).names == ("0.weight", "0.bias", "2.weight", "2.bias")
    assert WeightSpec.from_module(net, ["*.bias"]).names == ("0.bias", "1.bias", "2.bias")
    assert WeightSpec.from_module(net, lambda n, p: p.dim() == 2).names == ("0.weight", "2.weight")
    with pytest.raises(ValueError, match="matches no parameter"):
        WeightSpec.from_module(net, "nothing*")
    with pytest.raises(TypeError, match="select must be"):
        WeightSpec.from_module(net, 3)
    # a misspelt glob beside one that matches: refused, not dropped (its tensors went unselected)
    with pytest.raises(ValueError, match=r"globs \['2.wieght'\] of the selection \['0.\*', '2.wieght'\] match no"):
        Target(net, ["0.*", "2.wieght"])
    assert Target(net, ["0.*", "2.weight"]).spec.names == ("0.weight", "0.bias", "2.weight")


def test_flatten_unflatten_roundtrip_with_batch_dims():
    spec = WeightSpec.from_module(nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 2)))
    w = random_weights(spec, 2, 3)
    flat = spec.flatten(w)
    assert flat.shape == (2, 3, spec.numel)
    back = spec.unflatten(flat)
    for k in w:
        assert torch.equal(back[k], w[k])


def test_unflatten_gives_views_of_every_rank_with_and_without_batch_dims():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 2)  # 4-D weight, 1-D bias
            self.scale = nn.Parameter(torch.tensor(1.5))  # 0-d
            self.lin = nn.Linear(3, 2)

    spec = WeightSpec.from_module(Mixed())
    for batch in ((), (4,), (2, 3)):
        flat = torch.randn(*batch, spec.numel)
        got = spec.unflatten(flat)
        offset = 0
        for t in spec:  # by hand: the next t.numel numbers, reshaped
            expected = flat[..., offset : offset + t.numel].reshape((*batch, *t.shape))
            offset += t.numel
            assert got[t.name].shape == (*batch, *t.shape) and torch.equal(got[t.name], expected)
            assert got[t.name].untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()  # a view
        assert list(got) == list(spec.names)


# ------------------------------------------------------------------ bad input


def test_missing_and_unexpected_names_listed_in_one_message():
    module = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 2))
    target = Target(module)
    w = random_weights(target.spec)
    del w["0.bias"], w["1.weight"]
    w["extra"] = torch.zeros(1)
    before = state(module)
    with pytest.raises(ValueError) as e:
        target(w, torch.randn(2, 4))
    msg = str(e.value)
    assert "0.bias" in msg and "1.weight" in msg and "extra" in msg
    assert_unchanged(module, before)


def test_wrong_shape_names_tensor_expected_and_given():
    target = Target(nn.Linear(4, 5))
    w = random_weights(target.spec)
    w["weight"] = torch.zeros(5, 3)
    with pytest.raises(ValueError, match=r"weight: expected \(\*batch, 5, 4\), got \(5, 3\)"):
        target(w, torch.randn(2, 4))


def test_batch_size_mismatch():
    target = Target(nn.Linear(4, 5))
    with pytest.raises(ValueError, match="weights have batch 3 but the input has batch 2"):
        target(random_weights(target.spec, 3), torch.randn(2, 4))


def test_inconsistent_batch_dims():
    target = Target(nn.Linear(4, 5))
    w = random_weights(target.spec, 3)
    w["bias"] = w["bias"][0]
    with pytest.raises(ValueError, match="inconsistent batch dims"):
        target(w, torch.randn(3, 4))


def test_not_a_mapping():
    target = Target(nn.Linear(4, 5))
    with pytest.raises(TypeError, match="expected a mapping"):
        target([torch.zeros(5, 4)], torch.randn(3, 4))


class Boom(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        self.fc(x)
        raise RuntimeError("boom")


@pytest.mark.parametrize("batched", [False, True])
def test_module_unchanged_after_failing_forward(batched):
    module = Boom()
    target = Target(module)
    before = state(module)
    w = random_weights(target.spec, *((3,) if batched else ()))
    with pytest.raises(RuntimeError, match="boom"):
        target(w, torch.randn(3, 4))
    assert_unchanged(module, before)
    assert isinstance(module.fc.weight, nn.Parameter)


def test_batchnorm_train_ensemble_normalises_per_member():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    target = Target(module)
    K, N = 4, 10
    x = torch.randn(N, 4)
    w = random_weights(target.spec, K)
    start = state(module)
    out = target.ensemble(w, x)
    got_mean = module[1].running_mean.clone()
    refs, means = [], []
    for k in range(K):
        module.load_state_dict(start)
        refs.append(target({n: v[k] for n, v in w.items()}, x))
        means.append(module[1].running_mean.clone())
    torch.testing.assert_close(out, torch.stack(refs), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got_mean, torch.stack(means).mean(0), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_without_generated_tensors_normalises_per_member_in_an_ensemble(affine):
    """Only the convolution is generated: the BatchNorm after it still normalises each member
    over its own batch (as K plain calls would), and its own affine parameters get the loop's
    gradients; per sample it normalises over the whole batch, as the plain module does."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=affine), nn.Flatten(), nn.Linear(64, 2))
    target = Target(module, ["0.*"])
    K, N = 3, 5
    x = torch.randn(N, 3, 6, 6)
    w = {k: v.requires_grad_(True) for k, v in random_weights(target.spec, K).items()}
    own = [p for n, p in module.named_parameters() if not n.startswith("0.")]
    start = state(module)
    out = target.ensemble(w, x)
    got_mean = module[1].running_mean.clone()
    g = torch.randn_like(out)
    got = torch.autograd.grad((out * g).sum(), [*w.values(), *own])
    refs, means = [], []
    for k in range(K):
        buffers = {n: start[n].clone() for n, _ in module.named_buffers()}  # each member's own copy
        refs.append(functional_call(module, {**one_set(w, k), **buffers}, (x,)))
        means.append(buffers["1.running_mean"])
    ref = torch.stack(refs)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got_mean, torch.stack(means).mean(0), atol=1e-6, rtol=1e-5)
    for a, b in zip(got, torch.autograd.grad((ref * g).sum(), [*w.values(), *own]), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # per sample: the whole batch's statistics, i.e. the plain BatchNorm on the grouped conv's output
    wb = random_weights(target.spec, N)
    conv = torch.cat([F.conv2d(x[b : b + 1], wb["0.weight"][b], wb["0.bias"][b]) for b in range(N)])
    torch.testing.assert_close(target(wb, x), module[3](module[2](module[1](conv))), atol=1e-5, rtol=1e-4)


def test_attention_with_bias_kv_runs_under_vmap_per_sample():
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(8, 2, add_bias_kv=True, batch_first=True)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = attn

        def forward(self, x):
            return self.attn(x, x, x)[0]

    module = Wrap()
    target = Target(module)
    B = 6
    x = torch.randn(B, 5, 8)
    w = random_weights(target.spec, B)
    out = target(w, x)
    ref = torch.stack([target({k: v[b] for k, v in w.items()}, x[b : b + 1])[0] for b in range(B)])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------ the one entry point


def test_run_takes_the_mode_and_the_wrappers_are_run():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    target = Target(net)
    w = random_weights(target.spec, 5)
    x, xs = torch.randn(5, 3), torch.randn(7, 3)
    one = {k: v[0] for k, v in w.items()}
    torch.testing.assert_close(target.run(one, xs, mode="shared"), load(net, one)(xs))
    per_sample = torch.cat([load(net, {k: v[b] for k, v in w.items()})(x[b : b + 1]) for b in range(5)])
    ensemble = torch.stack([load(net, {k: v[i] for k, v in w.items()})(xs) for i in range(5)])
    for validate in (True, False):
        torch.testing.assert_close(target.run(w, x, mode="per_sample", validate=validate), per_sample)
        torch.testing.assert_close(target.run(w, xs, mode="ensemble", validate=validate), ensemble)
        torch.testing.assert_close(target.run(w, x, validate=validate), per_sample)  # auto: one batch dim
    assert torch.equal(target.per_sample(w, x), target.run(w, x, mode="per_sample"))
    assert torch.equal(target.ensemble(w, xs), target.run(w, xs, mode="ensemble"))
    assert torch.equal(target(one, xs), target.shared(one, xs))


def test_run_trusted_path_skips_the_names_but_still_checks_the_batch():
    target = Target(nn.Linear(3, 2))
    w = random_weights(target.spec, 4)
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"Target.shared: expected weights without batch dims, got batch shape \(4,\)"):
        target.run(w, x, mode="shared", validate=False)
    with pytest.raises(ValueError, match=r"Target.ensemble: expected weights with one batch dim \(K, ...\)"):
        target.run({k: v[0] for k, v in w.items()}, x, mode="ensemble", validate=False)
    with pytest.raises(ValueError, match=r"Target.per_sample: weights have batch 4 but the input has batch 5"):
        target.run(w, torch.randn(5, 3), mode="per_sample", validate=False)
    # validation names every offending tensor; the trusted path does not look
    bad = {**w, "extra": torch.zeros(1)}
    with pytest.raises(
        ValueError, match=r"Target.per_sample: weight names do not match the spec.*Unexpected: \['extra'\]"
    ):
        target.run(bad, x, mode="per_sample")
    assert target.run(bad, x, mode="per_sample", validate=False).shape == (4, 2)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"mode": "batched"}, ValueError, r"mode must be 'auto', 'shared', 'per_sample' or 'ensemble', got 'batched'"),
        ({"mode": 1}, TypeError, r"mode must be .* \(a string\), got 1 \(int\)"),
        ({"validate": 1}, TypeError, r"Target.run: validate must be a bool, got 1 \(int\)"),
    ],
)
def test_run_refuses_a_bad_mode_or_validate(kwargs, error, match):
    target = Target(nn.Linear(3, 2))
    with pytest.raises(error, match=match):
        target.run(random_weights(target.spec, 2), torch.randn(2, 3), **kwargs)
