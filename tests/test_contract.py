"""Contract over every registered trunk x head: whatever the architecture and the output
strategy, a hypernetwork generates exactly the spec, is differentiable end to end, treats a
batch of contexts like a loop, round-trips its state dict and starts at hyperfan variance."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from hyperdnn import HyperNetwork, Role, Target, TaskEmbedding, create_head, create_trunk, list_heads, list_trunks

# Tiny variants keep the contract fast; a trunk or head registered without an entry here is
# created with its defaults.
TRUNK_KWARGS = {
    "mlp": {"hidden": (16,)},
    "rnn": {"hidden": (16,), "width": 16},
    "attention": {"hidden": (16,), "width": 16, "heads": 2, "layers": 1},
    "cnn": {"hidden": (16,), "channels": (16, 8), "base": 4},
}
HEAD_KWARGS = {
    "chunked": {"chunk_size": 24, "embed_dim": 4},
    "componentwise": {"granularity": "unit", "embed_dim": 4},
    "multihead": {"groups": "layer"},
    "once": {},
}
COMBOS = list(itertools.product(list_trunks(), list_heads()))
NUM_TASKS = 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest on one thread; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_target() -> Target:
    # 147 numbers: fits the tiny CNN's 16x16 image even as one generate-once token
    return Target(nn.Sequential(nn.Linear(6, 12), nn.LayerNorm(12), nn.Tanh(), nn.Linear(12, 3)))


def make_hnet(trunk: str, head: str, seed: int = 0, target: Target | None = None) -> HyperNetwork:
    torch.manual_seed(seed)
    target = make_target() if target is None else target
    return HyperNetwork(
        target,
        TaskEmbedding(NUM_TASKS, 5),
        create_trunk(trunk, **TRUNK_KWARGS.get(trunk, {})),
        create_head(head, **HEAD_KWARGS.get(head, {})),
    )


def test_every_architecture_is_registered():
    assert {"mlp", "cnn", "rnn", "attention"} <= set(list_trunks())


@pytest.mark.parametrize("trunk,head", COMBOS)
def test_keys_and_shapes_match_the_spec(trunk, head):
    hnet = make_hnet(trunk, head)
    spec = hnet.spec
    batched = hnet(torch.arange(3))
    assert list(batched) == list(spec.names)
    for t in spec:
        assert batched[t.name].shape == (3, *t.shape), t.name
    single = hnet(2)
    assert {k: tuple(v.shape) for k, v in single.items()} == spec.shapes


@pytest.mark.parametrize("trunk,head", COMBOS)
def test_gradients_reach_every_hypernet_parameter(trunk, head):
    hnet = make_hnet(trunk, head)
    target = make_target()
    x = torch.randn(NUM_TASKS, 6)
    out = target(hnet(torch.arange(NUM_TASKS)), x)  # per-sample weights
    out.pow(2).sum().backward()
    missing = [n for n, p in hnet.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for p in hnet.parameters())
    for part in (hnet.trunk, hnet.head):
        assert any(float(p.grad.abs().sum()) > 0 for p in part.parameters()), type(part).__name__
    # the target's own copies of generated tensors are never touched
    assert all(p.grad is None for p in target.module.parameters())


@pytest.mark.parametrize("trunk,head", COMBOS)
def test_batched_contexts_equal_a_loop(trunk, head):
    hnet = make_hnet(trunk, head).eval()
    with torch.no_grad():
        batched = hnet(torch.tensor([3, 0, 2, 0]))
        loop = [hnet(i) for i in (3, 0, 2, 0)]
    for name, w in batched.items():
        torch.testing.assert_close(w, torch.stack([one[name] for one in loop]), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("trunk,head", COMBOS)
def test_state_dict_round_trip(trunk, head):
    a = make_hnet(trunk, head, seed=0).eval()
    b = make_hnet(trunk, head, seed=1).eval()
    ctx = torch.arange(NUM_TASKS)
    with torch.no_grad():
        assert not torch.allclose(a(ctx)["3.weight"], b(ctx)["3.weight"])
        b.load_state_dict(a.state_dict())
        for name, w in a(ctx).items():
            torch.testing.assert_close(b(ctx)[name], w, atol=0, rtol=0)


@pytest.mark.parametrize("trunk,head", COMBOS)
def test_init_variance_is_hyperfan(trunk, head):
    """Generated weights start with the variance of the target's own default init: the
    second moment of every generated weight, relative to its init variance, averages to 1
    within 20% over initialisations (48 seeds: one draw of a small final layer can be off by
    more, the expectation may not)."""
    ratios = []
    for seed in range(48):
        hnet = make_hnet(trunk, head, seed=seed)
        with torch.no_grad():
            w = hnet(torch.arange(NUM_TASKS))
        for t in hnet.spec:
            if t.role == Role.WEIGHT:
                ratios.append(float(w[t.name].pow(2).mean()) / t.init_std**2)
    ratio = sum(ratios) / len(ratios)
    assert math.isclose(ratio, 1.0, abs_tol=0.2), f"{trunk} x {head}: generated/default variance {ratio:.2f}"
