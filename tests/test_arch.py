"""Architectures as data: width cropping, FLOPs, the search space, the graph builder and encoder,
the graph hypernetwork, and the kit pieces of the pruning and NAS recipes (search, L1 pruning,
rank correlations), each against a plain PyTorch (or hand) reference."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hyperdnn import MLP, Continuous, DynamicHyperNetwork, HyperNetwork, LearnedLatent, MultiHead, Target
from hyperdnn.arch import (
    OPS,
    Architecture,
    Cell,
    GraphEncoder,
    GraphHyperNetwork,
    PrunableCNN,
    SearchSpace,
    build_graph,
    count_flops,
    crop_weights,
    message_operators,
)
from hyperdnn.baselines import FlatArchHyperNetwork, RandomSearch, l1_filter_prune, l1_kept_filters
from hyperdnn.methods import EvolutionarySearch
from hyperdnn.metrics import kendall_tau, spearman, steps_to_reach
from tests.helpers import run_doctests

pytestmark = pytest.mark.usefixtures("one_thread")

CNN = PrunableCNN((4, 8, 6), (1, 2, 1), in_channels=1, image_size=8, classes=5)


@pytest.mark.parametrize(
    "module",
    [f"hyperdnn.arch.{m}" for m in ("crop", "flops", "prunable", "space", "graph", "encoder", "ghn")]
    + ["hyperdnn.methods.search", "hyperdnn.baselines.random_search", "hyperdnn.baselines.l1_pruning"]
    + ["hyperdnn.baselines.flat_hypernet", "hyperdnn.metrics.ranking"],
)
def test_docstring_examples_run(module):
    run_doctests(module)


# ---------------------------------------------------------------------- width cropping
def test_cropped_generated_weights_equal_the_matching_slice_of_the_full_tensor():
    torch.manual_seed(0)
    full = Target(CNN.build())
    hnet = HyperNetwork(full, Continuous(CNN.layers), MLP((16,)), MultiHead("layer"))
    widths = (3, 5, 2)
    generated = hnet(torch.tensor([w / c for w, c in zip(widths, CNN.channels)]))
    small = Target(CNN.build(widths))
    cropped = crop_weights(generated, small.spec)
    assert list(cropped) == list(small.spec.names)
    # the slice a plain reading of MetaPruning takes: first out channels, first in channels
    cin = {"0.weight": 1, "3.weight": 3, "6.weight": 5}
    for name, t in cropped.items():
        g = generated[name]
        if name.endswith(".weight") and g.dim() == 4:
            ref = g[: t.shape[0], : cin[name]]
        elif name == "11.weight":  # the classifier reads the last convolution's first channels
            ref = g[:, : widths[-1]]
        else:
            ref = g[: t.shape[0]]
        assert torch.equal(t, ref), name
    # the cropped weights run the narrow network as plain PyTorch does with them loaded
    x = torch.randn(4, 1, 8, 8)
    plain = CNN.build(widths)
    plain.load_state_dict({k: v.detach() for k, v in cropped.items()}, strict=False)
    torch.testing.assert_close(small(cropped, x), plain(x))
    # gradients reach the hypernetwork through the slices
    small(cropped, x).sum().backward()
    assert all(p.grad is not None for p in hnet.parameters() if p.requires_grad)


def test_crop_keeps_batch_dims_and_names_every_problem():
    spec = Target(nn.Linear(2, 3)).spec
    batched = {"weight": torch.randn(5, 4, 3), "bias": torch.randn(5, 4)}
    out = crop_weights(batched, spec)
    assert torch.equal(out["weight"], batched["weight"][:, :3, :2]) and out["bias"].shape == (5, 3)
    with pytest.raises(ValueError, match=r"missing \['bias'\]; weight: spec shape \[3, 2\] does not fit in the generated \[2, 2\]"):  # fmt: skip
        crop_weights({"weight": torch.zeros(2, 2)}, spec)
    with pytest.raises(TypeError, match="spec must be a WeightSpec, got dict"):
        crop_weights(batched, {"weight": (3, 2)})  # type: ignore[arg-type]


def test_width_vectors_are_checked_naming_each_layer():
    assert CNN.check_widths([4, 1, 6]) == (4, 1, 6)
    with pytest.raises(ValueError, match=r"3 ints, one per convolution.*got 2 widths \[4, 8\]"):
        CNN.check_widths((4, 8))
    with pytest.raises(ValueError, match=r"got layer 1 \(conv 1\): 0 \(full 8\), layer 2 \(conv 2\): 7 \(full 6\)"):
        CNN.check_widths((4, 0, 7))
    with pytest.raises(ValueError, match=r"levels.*got layer 0: 0"):
        CNN.level_widths((0, 1, 2), 4)
    assert CNN.level_widths((1, 2, 4), 4) == (1, 4, 6)


# ---------------------------------------------------------------------- FLOPs
def test_flops_match_a_hand_count_on_a_small_network():
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),  # 4x4 outputs x 2 channels x (1 x 9) taps = 288
        nn.ReLU(),
        nn.Conv2d(2, 4, 3, stride=2, padding=1),  # 2x2 x 4 x (2 x 9) = 288
        nn.Conv2d(4, 4, 1, groups=2),  # 2x2 x 4 x (2 x 1) = 32
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),  # 4 x 3 = 12
    )
    x = torch.zeros(7, 1, 4, 4)  # any batch: counts are per sample
    count = count_flops(net, x)
    assert count.layers == {"0": 288, "2": 288, "3": 32, "6": 12} and count.total == 620
    with FlopCounterMode(display=False) as torch_count:  # torch counts 2 FLOPs per multiply-accumulate
        net(x[:1])
    assert torch_count.get_total_flops() == 2 * count.total
    up = nn.ConvTranspose2d(2, 3, 2, stride=2)  # each of 2x2x2 inputs meets 3 x 2x2 taps = 96
    assert count_flops(up, torch.zeros(1, 2, 2, 2)).total == 96
    with pytest.raises(ValueError, match="a batch of N >= 1"):
        count_flops(net, torch.zeros(0, 1, 4, 4))


@pytest.mark.parametrize("widths", [None, (1, 1, 1), (3, 5, 2), (4, 1, 6)])
def test_prunable_flops_equal_the_counted_network(widths):
    state = torch.random.get_rng_state()
    assert CNN.flops(widths) == count_flops(CNN.build(widths), torch.zeros(1, 1, 8, 8)).total
    torch.random.set_rng_state(state)
    CNN.flops(widths)
    assert torch.equal(torch.random.get_rng_state(), state)  # counting draws no random numbers


def test_uniform_width_for_a_budget_and_a_budget_no_network_meets():
    full = CNN.flops()
    for fraction in (0.1, 0.3, 0.6, 1.0):
        widths = CNN.uniform_for_budget(fraction * full)
        assert CNN.flops(widths) <= fraction * full
        wider = [CNN.uniform_widths(m) for m in torch.linspace(0.05, 1, 96).tolist()]
        assert all(CNN.flops(w) > fraction * full or w <= widths for w in wider)  # the widest uniform one
    with pytest.raises(ValueError, match=r"no network meets a budget of 10 FLOPs; the smallest .* needs"):
        CNN.uniform_for_budget(10)


# ---------------------------------------------------------------------- search space and graphs
def test_search_space_samples_build_and_encode():
    space = SearchSpace(depths=(2, 3), widths=(4, 8), kernels=(1, 3))
    g = torch.Generator().manual_seed(0)
    archs = [space.sample(g) for _ in range(20)]
    assert {a.depth for a in archs} == {2, 3} and {c.kernel for a in archs for c in a.cells} == {1, 3}
    code = space.encode(archs[0], max_depth=4).view(4, 6)
    assert code[: archs[0].depth, 0].eq(1).all() and code[archs[0].depth :].eq(0).all()
    assert archs[0].build()(torch.zeros(2, 1, 6, 6)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"kernel must be an odd int >= 1, got 2; norm must be one of"):
        Cell(4, 2, "ln")
    with pytest.raises(ValueError, match="has 3 cells, more than 2 slots"):
        space.encode(Architecture((Cell(4),) * 3), max_depth=2)


def test_the_graph_of_a_known_network_has_the_expected_nodes_and_edges():
    arch = Architecture((Cell(4, 3, "bn", skip=True), Cell(4, 1, "none", skip=True), Cell(6, 3, "bn")))
    g = build_graph(arch.build())
    assert [(n.op, n.module) for n in g.nodes] == [
        ("input", None),
        ("conv", "cells.0.conv"), ("batch_norm", "cells.0.norm"), ("relu", "cells.0.act"),
        ("conv", "cells.0.proj"), ("add", None),  # 1 -> 4 channels: the skip goes through a 1x1 convolution
        ("conv", "cells.1.conv"), ("relu", "cells.1.act"), ("add", None),  # 4 -> 4: the skip adds its input
        ("conv", "cells.2.conv"), ("batch_norm", "cells.2.norm"), ("relu", "cells.2.act"),
        ("avg_pool", "pool"), ("flatten", "flatten"), ("linear", "classifier"), ("output", None),
    ]  # fmt: skip
    assert g.edges == (
        (0, 1), (1, 2), (2, 3), (0, 4), (3, 5), (4, 5),
        (5, 6), (6, 7), (5, 8), (7, 8),  # the identity of cells.1.norm is passed through
        (8, 9), (9, 10), (10, 11), (11, 12), (12, 13), (13, 14), (14, 15),
    )  # fmt: skip
    assert g.nodes[1].params == ("cells.0.conv.weight", "cells.0.conv.bias") and g.nodes[1].shape == (4, 1, 3, 3)
    owners = g.owners()
    assert sorted(owners) == sorted(n for n, _ in arch.build().named_parameters())
    assert g.distances()[15, 0] == 10 and math.isinf(g.distances()[0, 15])


def test_the_graph_builder_refuses_operations_it_does_not_know():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.soft = nn.Softplus()

        def forward(self, x):
            return torch.sin(self.soft(self.lin(x))) + self.lin.weight.sum()

    with pytest.raises(ValueError) as err:
        build_graph(Odd())
    message = str(err.value)
    assert "soft (module 'soft': Softplus)" in message and "sin (function sin)" in message
    assert "lin_weight (reads the attribute 'lin.weight' directly)" in message and "known: input, output" in message
    with pytest.raises(TypeError, match="expected an nn.Module, got str"):
        build_graph("net")  # type: ignore[arg-type]


def test_graph_encoder_passes_messages_along_the_graph():
    g = build_graph(Architecture((Cell(4), Cell(4, skip=True))).build())
    ops = message_operators(g)
    assert ops.shape == (4, len(g), len(g))
    rows = ops.sum(-1)
    assert torch.allclose(rows[0, 1:], torch.ones(len(g) - 1)) and rows[0, 0] == 0  # the input reads nobody
    torch.manual_seed(0)
    enc = GraphEncoder(hidden=8, rounds=2)
    h = enc(g)
    assert h.shape == (len(g), 8)
    # the last node's embedding depends on the first node's features (virtual edges: one round suffices)
    inputs = enc.prepare(g)
    moved = type(inputs)(inputs.features.clone(), inputs.operators)
    moved.features[0, len(OPS) :] += 1.0
    assert not torch.allclose(enc(moved)[-1], h[-1])
    with pytest.raises(ValueError, match="rounds must be an int >= 0, got -1"):
        GraphEncoder(8, -1)


# ---------------------------------------------------------------------- hypernetworks over architectures
def test_component_embeddings_enter_the_dynamic_hypernetwork():
    torch.manual_seed(0)
    target = Target(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
    hnet = DynamicHyperNetwork(LearnedLatent(4), MLP((8,)), max_component_size=4, embed_dim=6)
    n = len(hnet.components(target))
    zero = hnet(None, target, torch.zeros(n, 6))
    for name, w in hnet(None, target).items():
        assert torch.equal(zero[name], w)
    extra = torch.randn(n, 6, requires_grad=True)
    out = hnet(None, target, extra)
    assert not torch.equal(out["0.weight"], zero["0.weight"])
    sum(v.sum() for v in out.values()).backward()
    assert extra.grad is not None and extra.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"component_embeddings must be \(components, embed_dim\) = \(8, 6\) .* got \(8, 5\)"):  # fmt: skip
        hnet(None, target, torch.zeros(n, 5))


def test_a_held_out_architecture_runs_end_to_end():
    """A GHN trained (a few steps) on small architectures predicts every parameter of a deeper
    and wider one: the keys and shapes of its spec, a forward pass that equals plain PyTorch
    with those parameters loaded, and gradients back into the GHN."""
    torch.manual_seed(0)
    space = SearchSpace(depths=(2,), widths=(4, 8), kernels=(1, 3))
    g = torch.Generator().manual_seed(1)
    train = [Target(space.sample(g).build()) for _ in range(3)]
    held = Architecture((Cell(12, 3, "bn", True), Cell(12, 3, "none", True), Cell(4, 1), Cell(12, 3, "bn")))
    ghn = GraphHyperNetwork(max_component_size=12 * 9, hidden=16, embed_dim=8, example=train)
    opt = torch.optim.Adam(ghn.parameters(), 1e-3)
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 10, (8,))
    for t in train:
        loss = nn.functional.cross_entropy(t(ghn(t), x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    target = Target(held.build())
    weights = ghn(ghn.prepare(target))
    assert {k: tuple(v.shape) for k, v in weights.items()} == target.spec.shapes
    plain = copy.deepcopy(target.module)
    plain.load_state_dict({k: v.detach() for k, v in weights.items()})
    out = target(weights, x)
    torch.testing.assert_close(out, plain(x))
    out.sum().backward()
    assert ghn.encoder.embed[0].weight.grad is not None and ghn.project.weight.grad.abs().sum() > 0
    flat = FlatArchHyperNetwork(6 * 4, max_component_size=12 * 9, embed_dim=8)
    assert flat(space.encode(held, 4), target)["cells.0.conv.weight"].shape == (12, 1, 3, 3)
    with pytest.raises(ValueError, match="generates at most max_component_size=108 numbers per component"):
        ghn.prepare(Target(Architecture((Cell(16, 3), Cell(16, 3))).build()))


# ---------------------------------------------------------------------- search, L1 pruning, rank correlations
def _toy_search(kind, seed=0):
    evaluated = []

    def fitness(c):
        evaluated.append(c)
        return float(sum(v * (i + 1) for i, v in enumerate(c)))

    g = torch.Generator().manual_seed(seed)
    if kind == "evolution":
        return EvolutionarySearch(4, 6, fitness, lambda c: sum(c) <= 12, g, population=6, parents=3), evaluated
    return RandomSearch(4, 6, fitness, lambda c: sum(c) <= 12, g, population=6), evaluated


@pytest.mark.parametrize("kind", ["evolution", "random"])
def test_searches_evaluate_feasible_candidates_once_and_resume_exactly(kind):
    search, evaluated = _toy_search(kind)
    for _ in range(5):
        search.step()
    assert len(evaluated) == len(set(evaluated)) == 30 and all(sum(c) <= 12 for c in evaluated)
    assert search.best == max(search.history, key=lambda cf: cf[1])
    first, _ = _toy_search(kind)
    for _ in range(2):
        first.step()
    tensors, meta = first.state()
    resumed, _ = _toy_search(kind, seed=99)
    resumed.load_state(tensors, meta)
    for _ in range(3):
        resumed.step()
    assert resumed.history == search.history


def test_evolution_beats_random_search_on_a_toy_problem():
    evo, _ = _toy_search("evolution")
    rnd, _ = _toy_search("random")
    for _ in range(6):
        evo.step(), rnd.step()
    assert evo.best[1] >= rnd.best[1] and evo.best == (
        (1, 1, 4, 6),
        39.0,
    )  # the optimum: the budget into the last genes


def test_l1_pruning_keeps_the_largest_filters_and_computes_the_masked_network():
    torch.manual_seed(0)
    net = CNN.build().eval()
    for m in net:
        if isinstance(m, nn.BatchNorm2d):  # statistics and affine away from their defaults
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 2)
    widths = (2, 5, 3)
    kept = [l1_kept_filters(net[3 * i], w) for i, w in enumerate(widths)]
    for i, (k, w) in enumerate(zip(kept, widths)):
        ref = net[3 * i].weight.abs().sum((1, 2, 3)).topk(w).indices.sort().values
        assert torch.equal(k, ref)
    small = l1_filter_prune(CNN, net, widths)
    masks = []
    for i, k in enumerate(kept):  # plain PyTorch: zero the pruned channels after each ReLU
        mask = torch.zeros(CNN.channels[i])
        mask[k] = 1.0
        masks.append(net[3 * i + 2].register_forward_hook(lambda mod, inp, out, m=mask: out * m.view(1, -1, 1, 1)))
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(small(x), net(x))
    for h in masks:
        h.remove()
    with pytest.raises(ValueError, match=r"layer 0 \(conv 0\): 9 \(full 4\)"):
        l1_filter_prune(CNN, net, (9, 1, 1))
    with pytest.raises(ValueError, match="net is not the full network of cnn"):
        l1_filter_prune(CNN, CNN.build((2, 2, 2)), (1, 1, 1))


def test_rank_correlations_against_their_definitions():
    x, y = [0.3, 0.1, 0.9, 0.5, 0.7], [0.2, 0.4, 0.8, 0.6, 0.9]
    rank = lambda v: torch.tensor(v).argsort().argsort().double()  # noqa: E731  no ties here
    rx, ry = rank(x), rank(y)
    pearson_of_ranks = float(((rx - rx.mean()) * (ry - ry.mean())).sum() / ((rx - rx.mean()).norm() * (ry - ry.mean()).norm()))  # fmt: skip
    assert spearman(x, y) == pytest.approx(pearson_of_ranks)
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    concordant = sum((x[i] - x[j]) * (y[i] - y[j]) > 0 for i, j in pairs)
    assert kendall_tau(x, y) == pytest.approx((2 * concordant - len(pairs)) / len(pairs))
    assert steps_to_reach([0, 4, 8], [0.1, 0.9, 0.95], 0.9) == 4
    with pytest.raises(ValueError, match="same length >= 2, got lengths 2 and 3"):
        spearman([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match=r"not at positions \[1\]"):
        kendall_tau([1, float("nan")], [1, 2])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_search_refuses_a_fitness_no_ranking_can_place(bad):
    g = torch.Generator().manual_seed(0)
    search = EvolutionarySearch(3, 4, lambda c: bad if c[0] == 2 else float(sum(c)), lambda c: True, g, population=20)
    with pytest.raises(ValueError, match=rf"EvolutionarySearch: fitness of candidate \(2, \d, \d\) is {bad}; expected a finite number"):  # fmt: skip
        search.step()
