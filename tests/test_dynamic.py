"""Dynamic outputs: one hypernetwork, weights for a spec given at call time."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hyperdnn import (
    CNN,
    MLP,
    DynamicHyperNetwork,
    LearnedLatent,
    Role,
    Target,
    TaskEmbedding,
    WeightSpec,
    create_trunk,
    describe_components,
    list_trunks,
)
from hyperdnn.dynamic import DESCRIPTOR_FEATURES

pytestmark = pytest.mark.usefixtures("one_thread")


def mlp(width: int, inputs: int = 6, outputs: int = 3) -> Target:
    return Target(nn.Sequential(nn.Linear(inputs, width), nn.ReLU(), nn.Linear(width, outputs)))


def make(trunk=None, seed: int = 0, **kwargs) -> DynamicHyperNetwork:
    torch.manual_seed(seed)
    kwargs.setdefault("max_component_size", 32)
    return DynamicHyperNetwork(TaskEmbedding(3, 4), trunk or MLP((16,)), embed_dim=8, **kwargs)


# ----------------------------------------------------------------- descriptions


def test_components_follow_the_flat_layout():
    spec = mlp(5).spec
    comps = describe_components(spec)
    assert comps.tensors == ("0.weight",) * 5 + ("0.bias",) + ("2.weight",) * 3 + ("2.bias",)
    assert comps.sizes == (6,) * 5 + (5,) + (5,) * 3 + (3,)
    assert comps.features.shape == (len(comps), DESCRIPTOR_FEATURES)
    # the gather index maps token outputs (n, token_size) onto the flat layout
    tokens = torch.arange(len(comps) * 8).reshape(len(comps), 8)
    flat = tokens.reshape(-1)[comps.gather_index(8)]
    assert flat.shape == (spec.numel,)
    assert torch.equal(flat[:6], torch.arange(6)) and torch.equal(flat[6:12], torch.arange(8, 14))
    by_tensor = describe_components(spec, "tensor")
    assert by_tensor.sizes == (30, 5, 15, 3)


def test_unit_positions_are_absolute_so_narrow_targets_nest_in_wide_ones():
    """Unit j carries the same position code whatever the width; what changes with the width
    is only the shape part of the description."""
    narrow = describe_components(mlp(8).spec).features[:8]
    wide = describe_components(mlp(32).spec).features[:8]
    code = slice(DESCRIPTOR_FEATURES - 20, DESCRIPTOR_FEATURES)
    torch.testing.assert_close(narrow[:, code], wide[:, code])
    assert not torch.allclose(narrow, wide)


def test_describe_components_bad_input():
    with pytest.raises(TypeError, match="expected a WeightSpec, got Linear"):
        describe_components(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="granularity must be 'unit' or 'tensor', got 'row'"):
        describe_components(mlp(4).spec, "row")


# ----------------------------------------------------------------- generation


@pytest.mark.parametrize("width", [4, 16, 24, 32])
def test_generates_for_any_width_within_the_limit(width):
    hnet = make(example=[mlp(8), mlp(16)])
    target = mlp(width)
    weights = hnet(torch.tensor([0, 2]), target)
    assert {k: tuple(v.shape) for k, v in weights.items()} == {k: (2, *s) for k, s in target.spec.shapes.items()}
    assert target(weights, torch.randn(2, 6)).shape == (2, 3)
    assert {k: tuple(v.shape) for k, v in hnet(1, target.spec).items()} == target.spec.shapes


def test_generates_for_convolutions_and_norms():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    target = Target(net)
    hnet = make(max_component_size=64)
    weights = hnet(0, target)
    assert weights["0.weight"].shape == (4, 1, 3, 3)
    assert target(weights, torch.randn(5, 1, 6, 6)).shape == (5, 2)
    # norm scales start at 1 (the hyperfan mean is computed per spec at call time)
    assert abs(float(weights["1.weight"].detach().mean()) - 1.0) < 0.3


def test_batched_contexts_equal_a_loop():
    hnet = make().eval()
    target = mlp(12)
    with torch.no_grad():
        batched = hnet(torch.tensor([2, 0, 1]), target)
        loop = [hnet(i, target) for i in (2, 0, 1)]
    for name, w in batched.items():
        torch.testing.assert_close(w, torch.stack([one[name] for one in loop]), atol=1e-5, rtol=1e-4)


def test_gradients_reach_the_description_encoder_generator_and_trunk():
    hnet = make()
    for width in (8, 20):  # two widths in one loss, as in joint training
        target = mlp(width)
        target(hnet(torch.arange(3), target), torch.randn(3, 6)).pow(2).sum().backward()
    missing = [n for n, p in hnet.named_parameters() if p.grad is None]
    assert not missing, missing
    for part in (hnet.describer, hnet.generator, hnet.trunk):
        assert any(float(p.grad.abs().sum()) > 0 for p in part.parameters())


def test_state_dict_round_trip():
    a, b = make(seed=0).eval(), make(seed=1).eval()
    target = mlp(10)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        for name, w in a(torch.arange(3), target).items():
            torch.testing.assert_close(b(torch.arange(3), target)[name], w, atol=0, rtol=0)


def test_hyperfan_holds_for_a_width_it_was_not_calibrated_on():
    """Generated weights of an unseen width start at the target's default-init variance."""
    ratios = []
    for seed in range(24):
        hnet = make(seed=seed, example=[mlp(8), mlp(32)])
        with torch.no_grad():
            weights = hnet(torch.arange(3), mlp(20))
        for t in mlp(20).spec:
            if t.role == Role.WEIGHT:
                ratios.append(float(weights[t.name].pow(2).mean()) / t.init_std**2)
    assert math.isclose(sum(ratios) / len(ratios), 1.0, abs_tol=0.2)


@pytest.mark.parametrize("trunk", list_trunks())
def test_every_trunk_serves_dynamic_outputs(trunk):
    kwargs = {
        "mlp": {"hidden": (16,)},
        "rnn": {"hidden": (16,), "width": 16},
        "attention": {"hidden": (16,), "width": 16, "heads": 2, "layers": 1},
        "cnn": {"hidden": (16,), "channels": (8, 4), "base": 2},
    }.get(trunk, {})
    hnet = make(create_trunk(trunk, **kwargs), example=mlp(8))
    for width in (5, 13):
        target = mlp(width)
        out = target(hnet(torch.arange(3), target), torch.randn(3, 6))
        out.sum().backward()
        assert out.shape == (3, 3)
    assert all(p.grad is not None for p in hnet.parameters())


# ----------------------------------------------------------------- bad input


def test_refuses_a_width_beyond_the_limit_naming_it():
    hnet = make(max_component_size=32)
    with pytest.raises(ValueError, match=r"at most max_component_size=32 numbers per component") as e:
        hnet(0, mlp(40))
    assert "0.bias [40] (40 numbers)" in str(e.value) and "2.weight [3, 40] (rows of 40 numbers)" in str(e.value)
    with pytest.raises(ValueError, match="max_component_size=32"):
        hnet(0, mlp(8, inputs=33))  # rows of the first layer have 33 numbers
    hnet.check(mlp(32))  # exactly at the limit is fine


def test_cnn_trunk_image_must_hold_the_largest_component():
    with pytest.raises(ValueError, match=r"64 numbers does not fit .* 4x4 = 16-pixel output"):
        DynamicHyperNetwork(LearnedLatent(4), CNN(channels=(4,), base=2), max_component_size=64)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda h: h(0, nn.Linear(2, 2)), TypeError, "spec must be a WeightSpec or a Target, got Linear"),
        (lambda h: h(5, mlp(4)), ValueError, r"task ids must be in \[0, 2\]"),
    ],
)
def test_bad_calls(call, error, match):
    with pytest.raises(error, match=match):
        call(make())


def test_bad_construction():
    with pytest.raises(TypeError, match="conditioner must be a Conditioner, got Linear"):
        DynamicHyperNetwork(nn.Linear(2, 2), max_component_size=4)
    with pytest.raises(ValueError, match="max_component_size must be an int >= 1, got 0"):
        DynamicHyperNetwork(LearnedLatent(2), max_component_size=0)
    with pytest.raises(TypeError, match=r"trunk must be a Trunk \(wrap a module in ModuleTrunk\), got Linear"):
        DynamicHyperNetwork(LearnedLatent(2), nn.Linear(2, 2), max_component_size=4)
    with pytest.raises(ValueError, match="granularity must be 'unit' or 'tensor'"):
        DynamicHyperNetwork(LearnedLatent(2), max_component_size=4, granularity="chunk")
    spec = WeightSpec.from_module(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="at least one example spec"):
        DynamicHyperNetwork(LearnedLatent(2), max_component_size=4).calibrate([])
    DynamicHyperNetwork(LearnedLatent(2), max_component_size=4, example=spec)
