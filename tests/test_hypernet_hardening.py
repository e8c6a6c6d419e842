"""Hypernet, conditioners, trunks and heads: dtype/device of call-time tensors, torch.compile,
constructor arguments, TaskEmbedding growth and list contexts, HyperModel export."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn import (
    CNN,
    MLP,
    RNN,
    Attention,
    Chunked,
    ComponentWise,
    Continuous,
    DataEncoder,
    DynamicHyperNetwork,
    HyperModel,
    HyperNetwork,
    LearnedLatent,
    ModuleTrunk,
    MultiHead,
    Noise,
    Once,
    Target,
    TaskEmbedding,
)
from hyperdnn.heads import TokenEncoder, TokenGenerator
from hyperdnn.trunks import AttentionMixer, DeconvReadout, RecurrentMixer


def mlp_target() -> Target:
    return Target(nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3)))


CONDITIONERS = {
    "task": (lambda: TaskEmbedding(3, 8), lambda: torch.tensor([0, 2, 1, 0])),
    "data": (
        lambda: DataEncoder(nn.Sequential(nn.Linear(12, 6), nn.Tanh()), 6, example_input=torch.randn(16, 12)),
        lambda: torch.randn(4, 12),
    ),
    "noise": (lambda: Noise(8), lambda: 4),
    "continuous": (lambda: Continuous(2, "fourier", 2, low=0.0, high=5.0), lambda: torch.tensor([1.0, 2.0])),
    "latent": (lambda: LearnedLatent(8), lambda: None),
}


# ------------------------------------------------------------------ dtype and device


def test_noise_follows_the_module_dtype_and_device():
    noise = Noise(4).double()
    assert noise(3).c.dtype == torch.float64
    drawn = noise.sample(3, generator=torch.Generator().manual_seed(0))
    reference = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(drawn, reference)
    assert Noise(4).half()(2).c.dtype == torch.float16
    assert Noise(4).to("meta")(2).c.device.type == "meta"
    # a float32 module draws exactly what it drew before: torch.randn's float32 stream
    torch.manual_seed(3)
    expected = torch.randn(5, 4)
    torch.manual_seed(3)
    assert torch.equal(Noise(4)(5).c, expected)


def test_calibration_probes_follow_the_module_dtype_and_device():
    cont = Continuous(2, low=[0.0, 1.0], high=3.0)
    assert cont.double().probe(4).dtype == torch.float64
    assert cont.to("meta").probe(4).device.type == "meta"
    enc = DataEncoder(nn.Linear(12, 6), 6, example_input=torch.randn(5, 12)).double()
    assert enc.probe(3).dtype == torch.float64


@pytest.mark.parametrize("name", list(CONDITIONERS))
def test_a_double_hypermodel_runs_in_double(name):
    make_cond, make_ctx = CONDITIONERS[name]
    torch.manual_seed(0)
    target = mlp_target()
    model = HyperModel(HyperNetwork(target, make_cond(), MLP((16,)), Chunked(40, 4)), target).double()
    model.hypernet.calibrate()  # probes are drawn in the module's dtype
    ctx = make_ctx()
    if isinstance(ctx, torch.Tensor) and ctx.is_floating_point():
        ctx = ctx.double()
    x = torch.randn(4, 12, dtype=torch.float64)
    if name == "data":
        ctx = x
    out = model(x, ctx)
    assert out.dtype == torch.float64
    if name == "noise":  # drawn above; an explicit draw below, to compare with a reference
        ctx = torch.randn(4, 8, dtype=torch.float64)
        out = model(x, ctx)
    weights = model.hypernet(ctx)
    assert all(w.dtype == torch.float64 for w in weights.values())
    # plain PyTorch reference: the generated weights in a float64 copy of the module
    net = copy.deepcopy(target.module)
    if next(iter(weights.values())).dim() == 3:  # batched weights: sample (or member) 0
        first = {k: v[0] for k, v in weights.items()}
        got = out[0] if name == "noise" else out[:1]
        ref = torch.func.functional_call(net, first, (x if name == "noise" else x[:1],))
    else:
        got, ref = out, torch.func.functional_call(net, weights, (x,))
    torch.testing.assert_close(got, ref)


# ------------------------------------------------------------------ torch.compile


@pytest.mark.parametrize("head", ["once", "chunked"])
@pytest.mark.parametrize("conditioner", ["task_id", "noise"])
def test_hypernet_compiles_without_graph_breaks_and_matches_eager(head, conditioner):
    torch.manual_seed(0)
    target = Target(nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 3)))  # LayerNorm: mean != 0
    cond, ctx = (TaskEmbedding(3, 5), 1) if conditioner == "task_id" else (Noise(5), torch.randn(4, 5))
    hnet = HyperNetwork(target, cond, MLP((16,)), Once() if head == "once" else Chunked(16, 4))
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(hnet)(ctx)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    compiled = torch.compile(hnet, backend="aot_eager", fullgraph=True)
    eager = hnet(ctx)
    got = compiled(ctx)
    for k in eager:
        torch.testing.assert_close(got[k], eager[k])
    # gradients match as well
    grads = []
    for fn in (hnet, compiled):
        hnet.zero_grad()
        sum(w.square().sum() for w in fn(ctx).values()).backward()
        grads.append({n: p.grad.clone() for n, p in hnet.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n])


def test_compiled_hypernet_sees_a_theta_mean_written_in_place():
    torch.manual_seed(0)
    target = mlp_target()  # no norm layers: theta_mean is all zero
    hnet = HyperNetwork(target, TaskEmbedding(2, 5), MLP((8,)), Chunked(16, 4))
    compiled = torch.compile(hnet, backend="aot_eager", fullgraph=True)
    compiled(1)
    with torch.no_grad():
        hnet.theta_mean.fill_(0.5)
    raw = hnet.head(hnet.trunk(hnet.conditioner(1).c))
    expected = hnet.spec.unflatten(torch.addcmul(hnet.theta_mean, hnet.theta_scale, raw).squeeze(0))
    got = compiled(1)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k])


# ------------------------------------------------------------------ constructor arguments

BAD_ARGUMENTS = [
    # conditioners
    (lambda: TaskEmbedding("3", 8), TypeError, r"TaskEmbedding: num_tasks must be an int >= 1, got '3' \(str\)"),
    (lambda: TaskEmbedding(3, 0), ValueError, r"TaskEmbedding: dim must be an int >= 1, got 0"),
    (lambda: TaskEmbedding(3, 8, init_std=-1.0), ValueError, r"init_std must be a finite number >= 0, got -1.0"),
    (lambda: TaskEmbedding(3, 8, init_std=float("nan")), ValueError, r"init_std must be a finite number >= 0"),
    (lambda: TaskEmbedding(True, 8), TypeError, r"num_tasks must be an int >= 1, got True \(bool\)"),
    (lambda: DataEncoder(nn.Linear(2, 2), "16"), TypeError, r"DataEncoder: out_features must be an int >= 1, got '16'"),
    (lambda: DataEncoder(nn.Linear(2, 2), 0), ValueError, r"DataEncoder: out_features must be an int >= 1, got 0"),
    (lambda: DataEncoder(nn.Linear(2, 2), 2, example_input=[1.0]), TypeError, r"example_input must be a tensor"),
    (lambda: Noise(2.0), TypeError, r"Noise: dim must be an int >= 1, got 2.0 \(float\)"),
    (lambda: Noise(-1), ValueError, r"Noise: dim must be an int >= 1, got -1"),
    (lambda: Continuous(0), ValueError, r"Continuous: in_features must be an int >= 1, got 0"),
    (lambda: Continuous(2, encoding="sine"), ValueError, r"encoding must be 'identity' or 'fourier', got 'sine'"),
    (lambda: Continuous(2, encoding=None), TypeError, r"encoding must be 'identity' or 'fourier' \(a string\)"),
    (lambda: Continuous(2, num_frequencies=0), ValueError, r"num_frequencies must be an int >= 1, got 0"),
    (lambda: Continuous(2, low=[0.0, 1.0, 2.0]), ValueError, r"low must be a finite number or 2 finite numbers, got 3"),
    (lambda: Continuous(2, high="1"), TypeError, r"high must be a finite number or 2 finite numbers, got '1'"),
    (lambda: Continuous(2, low=float("-inf")), ValueError, r"low must be a finite number or 2 finite numbers"),
    (lambda: Continuous(2, low=1.0, high=1.0), ValueError, r"high must be > low for every input"),
    (lambda: LearnedLatent(0), ValueError, r"LearnedLatent: dim must be an int >= 1, got 0"),
    (lambda: LearnedLatent(4, init_std="1"), TypeError, r"init_std must be a number .*, got '1' \(str\)"),
    # trunks
    (lambda: MLP(hidden=(16, 0)), ValueError, r"MLP: hidden must be positive ints, got \(16, 0\)"),
    (lambda: MLP(hidden=16), TypeError, r"MLP: hidden must be a sequence of positive ints, got 16 \(int\)"),
    (lambda: MLP(hidden="16"), TypeError, r"MLP: hidden must be a sequence of positive ints, got '16' \(str\)"),
    (lambda: MLP(hidden=(16.0,)), TypeError, r"MLP: hidden must be a sequence of positive ints, got \(16.0,\)"),
    (lambda: MLP(activation="swish"), ValueError, r"MLP: activation must be 'elu', .* or 'tanh', got 'swish'"),
    (lambda: MLP(dropout=-0.1), ValueError, r"MLP: dropout must be in \[0, 1\), got -0.1"),
    (lambda: MLP(dropout="0.1"), TypeError, r"MLP: dropout must be a number in \[0, 1\), got '0.1' \(str\)"),
    (lambda: MLP(spectral_norm=1), TypeError, r"MLP: spectral_norm must be a bool \(True or False\), got 1 \(int\)"),
    (lambda: ModuleTrunk(nn.Linear(2, 2), 0), ValueError, r"ModuleTrunk: out_features must be an int >= 1, got 0"),
    (lambda: ModuleTrunk(nn.Linear(2, 2), 2, in_features=-2), ValueError, r"in_features must be None or an int >= 1"),
    (lambda: RNN(hidden=(-3,)), ValueError, r"RNN: hidden must be positive ints, got \(-3,\)"),
    (lambda: RNN(layers=0), ValueError, r"RNN: layers must be an int >= 1, got 0"),
    (lambda: RNN(cell=2), TypeError, r"RNN: cell must be 'gru' or 'lstm' \(a string\), got 2 \(int\)"),
    (lambda: RNN(activation="sigmoid"), ValueError, r"RNN: activation must be"),
    (lambda: Attention(heads=0), ValueError, r"Attention: heads must be an int >= 1, got 0"),
    (lambda: Attention(ff=0), ValueError, r"Attention: ff must be None or an int >= 1, got 0"),
    (lambda: Attention(dropout=float("nan")), ValueError, r"Attention: dropout must be in \[0, 1\), got nan"),
    (lambda: CNN(channels=(8, "4")), TypeError, r"CNN: channels must be a sequence of positive ints"),
    (lambda: CNN(base=2.5), TypeError, r"CNN: base must be an int >= 1, got 2.5 \(float\)"),
    (lambda: RecurrentMixer(8, cell="rnn"), ValueError, r"RecurrentMixer: cell must be 'gru' or 'lstm', got 'rnn'"),
    (lambda: RecurrentMixer(0), ValueError, r"RecurrentMixer: width must be an int >= 1, got 0"),
    (lambda: AttentionMixer(8, heads=2, ff=-1), ValueError, r"AttentionMixer: ff must be None or an int >= 1"),
    (lambda: AttentionMixer(8, heads=2, dropout=1.0), ValueError, r"AttentionMixer: dropout must be in \[0, 1\)"),
    (lambda: DeconvReadout(8, 16, activation="x"), ValueError, r"DeconvReadout: activation must be"),
    (lambda: DeconvReadout(8, 0), ValueError, r"DeconvReadout: out_features must be an int >= 1, got 0"),
    # heads
    (lambda: Chunked(16, hidden=(-3,)), ValueError, r"Chunked: hidden must be positive ints, got \(-3,\)"),
    (lambda: Chunked("16"), TypeError, r"Chunked: chunk_size must be an int >= 1, got '16' \(str\)"),
    (lambda: Chunked(16, embed_dim=0), ValueError, r"Chunked: embed_dim must be an int >= 1, got 0"),
    (lambda: Chunked(16, activation="swish"), ValueError, r"Chunked: activation must be"),
    (lambda: ComponentWise("row"), ValueError, r"ComponentWise: granularity must be 'tensor' or 'unit', got 'row'"),
    (lambda: ComponentWise(embed_dim=0), ValueError, r"ComponentWise: embed_dim must be an int >= 1, got 0"),
    (lambda: ComponentWise(hidden=(4, -1)), ValueError, r"ComponentWise: hidden must be positive ints"),
    (lambda: MultiHead(groups=[]), ValueError, r"MultiHead: groups must be .* non-empty list of glob strings"),
    (lambda: MultiHead(groups=[1]), TypeError, r"MultiHead: groups must be .*, got \[1\] \(list\)"),
    (lambda: MultiHead(groups="rows"), ValueError, r"MultiHead: groups must be .*, got 'rows'"),
    (lambda: MultiHead(hidden=(0,)), ValueError, r"MultiHead: hidden must be positive ints, got \(0,\)"),
    (lambda: MultiHead(activation="swish"), ValueError, r"MultiHead: activation must be"),
    (lambda: MultiHead(embed_dim=-1), ValueError, r"MultiHead: embed_dim must be an int >= 1, got -1"),
    (lambda: TokenEncoder(8, 3, -1, 4), ValueError, r"TokenEncoder: embed_dim must be an int >= 0, got -1"),
    (lambda: TokenEncoder(8, 0, 2, 4), ValueError, r"TokenEncoder: num_tokens must be None or an int >= 1, got 0"),
    (lambda: TokenEncoder(8, 3, 2, 4, mixer=nn.Linear(4, 4)), TypeError, r"mixer must be a TokenMixer or None"),
    (lambda: TokenGenerator(8, 3, 2, (), 0), ValueError, r"TokenGenerator: out_features must be an int >= 1, got 0"),
    (lambda: TokenGenerator(8, 3, 2, (5, 0), 4), ValueError, r"TokenGenerator: hidden must be positive ints"),
    # hypernetworks
    (
        lambda: HyperNetwork(mlp_target(), TaskEmbedding(2, 4), residual="target", residual_scale=-0.1),
        ValueError,
        r"HyperNetwork: residual_scale must be a finite number >= 0, got -0.1",
    ),
    (
        lambda: HyperNetwork(mlp_target(), TaskEmbedding(2, 4), init=1),
        TypeError,
        r"HyperNetwork: init must be 'hyperfan_in', 'hyperfan_out' or 'unit' \(a string\), got 1 \(int\)",
    ),
    (
        lambda: HyperNetwork(mlp_target(), TaskEmbedding(2, 4), check_finite="yes"),
        TypeError,
        r"HyperNetwork: check_finite must be a bool \(True or False\), got 'yes' \(str\)",
    ),
    (lambda: HyperNetwork(mlp_target(), TaskEmbedding(2, 4), calibrate=0), TypeError, r"calibrate must be a bool"),
    (lambda: HyperNetwork(mlp_target(), TaskEmbedding(2, 4), learn_theta0=None), TypeError, r"learn_theta0 must be"),
    (lambda: HyperNetwork(mlp_target(), TaskEmbedding(2, 4)).calibrate(n=0), ValueError, r"calibrate: n must be"),
    (
        lambda: DynamicHyperNetwork(LearnedLatent(2), max_component_size=4, descriptor_hidden=(0,)),
        ValueError,
        r"DynamicHyperNetwork: descriptor_hidden must be positive ints, got \(0,\)",
    ),
    (
        lambda: DynamicHyperNetwork(LearnedLatent(2), max_component_size=4, hidden=8),
        TypeError,
        r"DynamicHyperNetwork: hidden must be a sequence of positive ints, got 8 \(int\)",
    ),
    (
        lambda: DynamicHyperNetwork(LearnedLatent(2), max_component_size="4"),
        TypeError,
        r"DynamicHyperNetwork: max_component_size must be an int >= 1, got '4' \(str\)",
    ),
    (
        lambda: DynamicHyperNetwork(LearnedLatent(2), max_component_size=4, activation="swish"),
        ValueError,
        r"DynamicHyperNetwork: activation must be",
    ),
    (
        lambda: DynamicHyperNetwork(LearnedLatent(2), max_component_size=4, init="xavier"),
        ValueError,
        r"DynamicHyperNetwork: init must be 'hyperfan_in', 'hyperfan_out' or 'unit', got 'xavier'",
    ),
    (
        lambda: HyperModel(HyperNetwork(mlp_target(), TaskEmbedding(2, 4)), mlp_target(), norm_stats="task"),
        ValueError,
        r"HyperModel: norm_stats must be 'auto', 'per_context', 'batch' or 'shared', got 'task'",
    ),
]


@pytest.mark.parametrize("make,error,match", BAD_ARGUMENTS, ids=[m for _, _, m in BAD_ARGUMENTS])
def test_bad_constructor_arguments_raise_one_clear_error(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_good_arguments_still_build():
    MLP(hidden=[8, 8], dropout=0, spectral_norm=True)
    Continuous(2, low=torch.tensor([0.0, 1.0]), high=(2, 3))
    MultiHead(("0.*", "2.*"))
    TokenEncoder(8, None, 0, 4)
    ModuleTrunk(nn.Linear(4, 4), 4, in_features=4)


# ------------------------------------------------------------------ TaskEmbedding


def test_add_tasks_registers_new_embeddings_with_the_optimizer():
    torch.manual_seed(0)
    target = mlp_target()
    model = HyperModel(HyperNetwork(target, TaskEmbedding(2, 8), MLP((16,))), target)
    opt = torch.optim.Adam(model.trainable_parameters(), lr=0.05, weight_decay=1e-4)
    (new,) = model.hypernet.conditioner.add_tasks(1, optimizer=opt)
    emb = model.hypernet.conditioner.embeddings[new]
    assert opt.param_groups[-1]["params"] == [emb]
    assert opt.param_groups[-1]["lr"] == 0.05 and opt.param_groups[-1]["weight_decay"] == 1e-4
    before = emb.detach().clone()
    x, y = torch.randn(8, 12), torch.randint(0, 3, (8,))
    F.cross_entropy(model(x, new), y).backward()
    opt.step()
    assert not torch.equal(emb.detach(), before)
    # without the optimizer the new embedding would not have moved
    other = TaskEmbedding(2, 8)
    stale = torch.optim.SGD(other.parameters(), lr=0.1)
    (i,) = other.add_tasks(1)
    kept = other.embeddings[i].detach().clone()
    other(i).c.sum().backward()
    stale.step()
    assert torch.equal(other.embeddings[i].detach(), kept)


def test_add_tasks_names_the_new_embeddings_in_an_optimizer_built_from_named_parameters():
    # the new group copied the template's names (two names for one parameter)
    torch.manual_seed(0)
    target = mlp_target()
    model = HyperModel(HyperNetwork(target, TaskEmbedding(2, 8), MLP((16,))), target)
    opt = torch.optim.Adam(model.named_parameters(), lr=0.05)
    model.hypernet.conditioner.add_tasks(2, optimizer=opt)
    assert opt.param_groups[-1]["param_names"] == [
        "hypernet.conditioner.embeddings.2",
        "hypernet.conditioner.embeddings.3",
    ]
    assert len(opt.param_groups[-1]["params"]) == 2
    fresh = torch.optim.Adam(model.named_parameters(), lr=0.05)
    names = [n for g in fresh.param_groups for n in g["param_names"]]
    assert set(opt.param_groups[-1]["param_names"]) <= set(names)


def test_add_tasks_follows_the_group_that_holds_the_tasks():
    cond = TaskEmbedding(2, 4)
    extra = nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([{"params": [extra], "lr": 1.0}, {"params": cond.parameters(), "lr": 0.01}], lr=0.5)
    cond.add_tasks(2, optimizer=opt)
    assert opt.param_groups[-1]["lr"] == 0.01 and len(opt.param_groups[-1]["params"]) == 2


def test_add_tasks_draws_from_a_generator_and_leaves_the_global_rng_alone():
    cond = TaskEmbedding(2, 6, init_std=0.5)
    state = torch.get_rng_state()
    ids = cond.add_tasks(2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)
    g = torch.Generator().manual_seed(7)
    reference = [torch.randn(6, generator=g) * 0.5 for _ in range(2)]
    for i, ref in zip(ids, reference):
        assert torch.equal(cond.embeddings[i].detach(), ref)
    twin = TaskEmbedding(2, 6, init_std=0.5).double()
    (j,) = twin.add_tasks(1, generator=torch.Generator().manual_seed(7))
    assert twin.embeddings[j].dtype == torch.float64


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"n": 0}, ValueError, r"add_tasks: n must be an int >= 1, got 0"),
        ({"optimizer": "adam"}, TypeError, r"optimizer must be a torch.optim.Optimizer or None, got str"),
        ({"generator": 0}, TypeError, r"generator must be a torch.Generator or None, got int"),
    ],
)
def test_add_tasks_bad_arguments_change_nothing(kwargs, error, match):
    cond = TaskEmbedding(2, 4)
    before = [e.detach().clone() for e in cond.embeddings]
    with pytest.raises(error, match=match):
        cond.add_tasks(**{"n": 1, **kwargs})
    assert cond.num_tasks == 2 and all(torch.equal(a, b) for a, b in zip(before, cond.embeddings))


def test_a_list_of_task_ids_works_like_a_tensor():
    torch.manual_seed(0)
    target = mlp_target()
    model = HyperModel(HyperNetwork(target, TaskEmbedding(3, 8), MLP((16,)), Chunked(40, 4)), target)
    x = torch.randn(3, 12)
    torch.testing.assert_close(model(x, [0, 2, 2]), model(x, torch.tensor([0, 2, 2])))
    for k, v in model.hypernet((0, 1)).items():
        torch.testing.assert_close(v, model.hypernet(torch.tensor([0, 1]))[k])
    cond = model.hypernet.conditioner
    ids, batched = cond.task_ids([2, 0])
    assert ids.tolist() == [2, 0] and batched
    assert cond.task_ids(torch.tensor(1))[1] is False


@pytest.mark.parametrize(
    "context,error,match",
    [
        ([0, 1.5], TypeError, r"expected a list of int task ids, got \[0, 1.5\]"),
        ([True], TypeError, r"expected a list of int task ids"),
        ([], ValueError, r"expected at least one task id, got none"),
        ([0, 3], ValueError, r"task ids must be in \[0, 2\], got 3"),
        (torch.zeros(0, dtype=torch.long), ValueError, r"expected at least one task id"),
        ("0", TypeError, r"expected a task id \(int\), a list of ids or a LongTensor of ids, got str"),
    ],
)
def test_bad_task_contexts(context, error, match):
    with pytest.raises(error, match=match):
        TaskEmbedding(3, 4)(context)


# ------------------------------------------------------------------ export


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


@pytest.mark.parametrize("norm_stats", ["per_context", "shared"])
def test_materialize_equals_the_model_and_saves_as_a_plain_module(norm_stats):
    torch.manual_seed(0)
    target = Target(ConvBN())
    model = HyperModel(HyperNetwork(target, TaskEmbedding(2, 4), MLP((16,)), Chunked(64, 4)), target, norm_stats)
    for task in (0, 1, 0, 1):  # train mode: running statistics move (per task with per_context)
        model(torch.randn(16, 1, 8, 8) + task, task)
    model.eval()
    x = torch.randn(6, 1, 8, 8) + 1
    for task in (0, 1):
        net = model.materialize(task)
        assert type(net) is ConvBN and not net.training
        torch.testing.assert_close(net(x), model(x, task))
        if norm_stats == "per_context":
            stats = model.norm_stats.statistics(task)["bn"]
            assert torch.equal(net.bn.running_mean, stats["running_mean"])
            assert net.bn.running_mean is not stats["running_mean"]
        buffer = io.BytesIO()
        torch.save(net.state_dict(), buffer)
        buffer.seek(0)
        fresh = ConvBN().eval()
        fresh.load_state_dict(torch.load(buffer))
        torch.testing.assert_close(fresh(x), model(x, task))


def test_materialize_with_batch_statistics_and_bad_contexts():
    torch.manual_seed(0)
    target = Target(ConvBN())
    model = HyperModel(HyperNetwork(target, Noise(4), MLP((16,))), target).eval()
    assert model.norm_stats.mode == "batch"
    z = torch.randn(4)
    x = torch.randn(6, 1, 8, 8)
    net = model.materialize(z)
    assert net.bn.running_mean is None
    torch.testing.assert_close(net(x), model(x, z))
    with pytest.raises(ValueError, match=r"expected one unbatched context .* got a batched context of 3"):
        model.materialize(3)
    enc = DataEncoder(nn.Sequential(nn.Flatten(), nn.Linear(64, 4)), 4)
    data_model = HyperModel(HyperNetwork(target, enc, MLP((8,))), target)
    with pytest.raises(ValueError, match="DataEncoder generates weights from each input"):
        data_model.materialize(x)


def test_a_scalar_parameter_is_generated_for_one_context_and_for_a_batch():
    class Tempered(nn.Module):  # a learnable temperature: a 0-d parameter
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)
            self.temperature = nn.Parameter(torch.tensor(1.0))

        def forward(self, x):
            return self.lin(x) / self.temperature

    torch.manual_seed(0)
    target = Target(Tempered())
    assert target.spec.shapes["temperature"] == ()
    model = HyperModel(HyperNetwork(target, TaskEmbedding(3, 4), MLP((8,)), Once()), target)
    x = torch.randn(5, 3)
    w = model.hypernet(1)  # one context: unbatched weights, the scalar as a 0-d tensor
    assert w["temperature"].shape == ()
    expected = F.linear(x, w["lin.weight"], w["lin.bias"]) / w["temperature"]
    torch.testing.assert_close(model(x, 1), expected)
    torch.testing.assert_close(model.materialize(1)(x), expected)
    ids = [0, 2, 1, 1, 0]  # a batch of contexts: (B,) scalars, one per sample
    wb = model.hypernet(ids)
    assert wb["temperature"].shape == (5,)
    rows = [F.linear(x[b], wb["lin.weight"][b], wb["lin.bias"][b]) / wb["temperature"][b] for b in range(5)]
    torch.testing.assert_close(model(x, ids), torch.stack(rows))
