"""Contract over every registered trunk x head, every registered conditioner and the dynamic
hypernetwork: whatever the architecture, the output strategy and the input, a hypernetwork
generates exactly the spec, is differentiable end to end, treats a batch of contexts like a
loop, round-trips its state dict and starts at hyperfan variance; and a conditioner's weights
run as its execution contract says (shared, per sample or as an ensemble), compared with plain
PyTorch."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from hyperdnn import (
    MLP,
    Chunked,
    DynamicHyperNetwork,
    Execution,
    HyperModel,
    HyperNetwork,
    Role,
    Target,
    TaskEmbedding,
    create_conditioner,
    create_head,
    create_trunk,
    list_conditioners,
    list_heads,
    list_trunks,
)
from hyperdnn.conditioners import NORM_STATS_POLICIES
from tests.helpers import ensemble_loop, load, one_set

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
    "lowrank": {"rank": 2, "embed_dim": 4, "hidden": (8,)},
}
COMBOS = list(itertools.product(list_trunks(), list_heads()))
NUM_TASKS = 4


pytestmark = pytest.mark.usefixtures("one_thread")


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


# ------------------------------------------------------------------ every conditioner

N = 4  # rows of the target's input x


def _x() -> torch.Tensor:
    return torch.randn(N, 6, generator=torch.Generator().manual_seed(2))


def _sets() -> torch.Tensor:
    return torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(3))


WORDS = ["a:1", "b:2", "c:3", "d:4"]


# A tiny variant of every registered conditioner and a batched context: N items for one that
# runs per sample (the input itself for one that reads it), K = 3 for an ensemble. A
# conditioner registered without an entry here fails test_every_conditioner_has_a_case.
CONDITIONERS = {
    "task_embedding": (lambda: create_conditioner("task_embedding", num_tasks=NUM_TASKS, dim=5), lambda: [3, 0, 2, 0]),
    "data_encoder": (
        lambda: create_conditioner(
            "data_encoder", encoder=nn.Sequential(nn.Linear(6, 5), nn.Tanh()), out_features=5, example_input=_x()
        ),
        _x,
    ),
    "noise": (lambda: create_conditioner("noise", dim=5), lambda: torch.randn(3, 5)),
    "continuous": (
        lambda: create_conditioner("continuous", in_features=2, encoding="fourier", num_frequencies=2),
        lambda: torch.rand(N, 2),
    ),
    "learned_latent": (lambda: create_conditioner("learned_latent", dim=5), lambda: None),
    "set_encoder": (  # K = 3 sets of 5 items (4,): attention pooling, every parameter in use
        lambda: create_conditioner(
            "set_encoder",
            item_encoder=nn.Sequential(nn.Linear(4, 6), nn.Tanh()),
            out_features=6,
            item_shape=(4,),
            pooling="attention",
            heads=2,
            example_input=_sets(),
        ),
        _sets,
    ),
    "description_encoder": (
        lambda: create_conditioner("description_encoder", vocabulary=WORDS, dim=6, pooling="attention", heads=2),
        lambda: ["a:1 b:2", "c:3", "b:2 d:4 a:1"],
    ),
}


def make_conditioned(name: str, seed: int = 0) -> tuple[HyperModel, object]:
    """A HyperModel over the contract's target with conditioner ``name``, and its context."""
    torch.manual_seed(seed)
    make, context = CONDITIONERS[name]
    target = make_target()
    hnet = HyperNetwork(target, make(), MLP((16,)), Chunked(24, 4))
    return HyperModel(hnet, target), context()


def test_every_conditioner_has_a_case():
    assert set(list_conditioners()) == set(CONDITIONERS)


@pytest.mark.parametrize("name", list(CONDITIONERS))
def test_conditioner_keys_and_shapes_match_the_spec(name):
    model, context = make_conditioned(name)
    cond = model.hypernet.conditioner
    out = cond(context)
    assert out.c.shape[1] == cond.out_features
    w = model.hypernet(context)
    assert list(w) == list(model.target.spec.names)
    batch = (out.c.shape[0],) if out.batched else ()
    assert {k: tuple(v.shape) for k, v in w.items()} == {k: (*batch, *s) for k, s in model.target.spec.shapes.items()}


@pytest.mark.parametrize("name", list(CONDITIONERS))
def test_conditioner_gradients_reach_every_hypernet_parameter(name):
    model, context = make_conditioned(name)
    x = _x()
    model(x, context).pow(2).sum().backward()
    missing = {n for n, p in model.hypernet.named_parameters() if p.grad is None}
    # a task embedding trains only the tasks in the context (here 0, 2 and 3)
    assert missing == ({"conditioner.embeddings.1"} if name == "task_embedding" else set())
    assert all(p.grad is None for p in model.target.module.parameters())


@pytest.mark.parametrize("name", [n for n in CONDITIONERS if n != "learned_latent"])
def test_conditioner_batched_contexts_equal_a_loop(name):
    model, context = make_conditioned(name)
    hnet = model.hypernet.eval()
    with torch.no_grad():
        batched = hnet(context)
        for i in range(len(context)):
            single = hnet(context[i : i + 1])
            for k, v in single.items():
                torch.testing.assert_close(batched[k][i], v[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", list(CONDITIONERS))
def test_conditioner_state_dict_round_trip(name):
    a, context = make_conditioned(name, seed=0)
    b, _ = make_conditioned(name, seed=1)
    a.eval(), b.eval()
    with torch.no_grad():
        assert not torch.allclose(a.hypernet(context)["3.weight"], b.hypernet(context)["3.weight"])
        b.load_state_dict(a.state_dict())
        for k, w in a.hypernet(context).items():
            torch.testing.assert_close(b.hypernet(context)[k], w, atol=0, rtol=0)


@pytest.mark.parametrize("name", list(CONDITIONERS))
def test_conditioner_weights_run_as_its_execution_says(name):
    """The HyperModel output equals plain PyTorch run the way the conditioner's execution
    contract says: one set for the batch, set b for sample b, or every set on the whole batch."""
    model, context = make_conditioned(name)
    cond, target = model.hypernet.conditioner, model.target
    assert cond.norm_stats_policy in NORM_STATS_POLICIES
    x = _x()
    if cond.reads_input:
        context = x
    with torch.no_grad():
        w = model.hypernet(context)
        out = model(x, None if cond.reads_input else context)
        execution = cond.execution(cond(context).batched)
        assert isinstance(execution, Execution)
        if execution is Execution.SHARED:
            expected = load(target.module, w)(x)
        elif execution is Execution.PER_SAMPLE:
            expected = torch.cat([load(target.module, one_set(w, b))(x[b : b + 1]) for b in range(N)])
        else:
            expected = torch.stack([load(target.module, one_set(w, k))(x) for k in range(len(context))])
            torch.testing.assert_close(ensemble_loop(target, w, x), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    if cond.norm_stats_policy == "per_context":
        keys = cond.context_keys(context)
        assert keys.dtype == torch.int64 and keys.shape == (len(context),)


# ------------------------------------------------------------------ the dynamic hypernetwork


def make_dynamic(trunk: str, seed: int = 0) -> DynamicHyperNetwork:
    torch.manual_seed(seed)
    kwargs = {**TRUNK_KWARGS.get(trunk, {}), "hidden": (16,)}
    return DynamicHyperNetwork(
        TaskEmbedding(NUM_TASKS, 5),
        create_trunk(trunk, **kwargs),
        max_component_size=12,
        embed_dim=6,
        example=WIDTHS[0],
    )


def _mlp(width: int) -> Target:
    return Target(nn.Sequential(nn.Linear(6, width), nn.LayerNorm(width), nn.Tanh(), nn.Linear(width, 3)))


WIDTHS = [_mlp(8), _mlp(12)]


@pytest.mark.parametrize("trunk", list_trunks())
def test_dynamic_keys_shapes_and_loop_for_every_spec(trunk):
    hnet = make_dynamic(trunk).eval()
    with torch.no_grad():
        for target in WIDTHS:
            batched = hnet(torch.tensor([3, 0, 2]), target)
            assert list(batched) == list(target.spec.names)
            assert {k: tuple(v.shape) for k, v in batched.items()} == {
                k: (3, *s) for k, s in target.spec.shapes.items()
            }
            for i, task in enumerate([3, 0, 2]):
                for k, v in hnet(task, target).items():
                    torch.testing.assert_close(batched[k][i], v, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("trunk", list_trunks())
def test_dynamic_gradients_reach_every_parameter(trunk):
    hnet = make_dynamic(trunk)
    for target in WIDTHS:  # every spec trains the same parameters
        target(hnet(torch.arange(NUM_TASKS), target), torch.randn(NUM_TASKS, 6)).pow(2).sum().backward()
    missing = [n for n, p in hnet.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for p in hnet.parameters())


@pytest.mark.parametrize("trunk", list_trunks())
def test_dynamic_state_dict_round_trip_and_execution(trunk):
    a, b = make_dynamic(trunk, seed=0).eval(), make_dynamic(trunk, seed=1).eval()
    ctx = torch.tensor([1, 3])
    with torch.no_grad():
        b.load_state_dict(a.state_dict())
        for target in WIDTHS:
            wa, wb = a(ctx, target), b(ctx, target)
            for k in wa:
                torch.testing.assert_close(wb[k], wa[k], atol=0, rtol=0)
            # the conditioner's contract: task ids run per sample
            x = torch.randn(2, 6)
            mode = a.conditioner.execution(True).value
            expected = torch.cat([load(target.module, one_set(wa, i))(x[i : i + 1]) for i in range(2)])
            torch.testing.assert_close(target.run(wa, x, mode=mode), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("trunk", list_trunks())
def test_dynamic_init_variance_is_hyperfan_on_an_uncalibrated_width(trunk):
    ratios = []
    for seed in range(16):
        hnet = make_dynamic(trunk, seed=seed)
        with torch.no_grad():
            w = hnet(torch.arange(NUM_TASKS), WIDTHS[1])
        ratios += [float(w[t.name].pow(2).mean()) / t.init_std**2 for t in WIDTHS[1].spec if t.role == Role.WEIGHT]
    ratio = sum(ratios) / len(ratios)
    assert math.isclose(ratio, 1.0, abs_tol=0.3), f"dynamic {trunk}: generated/default variance {ratio:.2f}"
