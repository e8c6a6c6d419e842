"""torch.compile and mixed precision: a HyperModel traces to one graph in every execution mode
(shared, per sample, ensemble) with every head, the compiled step equals the eager one (outputs
and gradients), and under bfloat16 autocast the outputs stay close to float32."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from hyperdnn import (
    MLP,
    Chunked,
    ComponentWise,
    Continuous,
    DataEncoder,
    HyperModel,
    HyperNetwork,
    MultiHead,
    Noise,
    Once,
    Target,
    TaskEmbedding,
)

pytestmark = pytest.mark.usefixtures("one_thread")

N = 4  # input batch

# mode -> (conditioner factory, context factory; None: the input itself, DataEncoder)
MODES: dict[str, tuple[Callable[[], nn.Module], Callable[[], object]]] = {
    "shared": (lambda: TaskEmbedding(3, 5), lambda: 1),
    "per_sample_data": (lambda: DataEncoder(nn.Linear(6, 5), 5), lambda: None),
    "per_sample_continuous": (lambda: Continuous(2), lambda: torch.rand(N, 2)),
    "ensemble_noise": (lambda: Noise(5), lambda: torch.randn(3, 5)),
    "ensemble_continuous": (lambda: Continuous(2, execution="ensemble"), lambda: torch.rand(3, 2)),
}
HEADS = {
    "once": Once,
    "chunked": lambda: Chunked(16, 4),
    "multihead": MultiHead,
    "componentwise": ComponentWise,
}


def make(mode: str, head: str, norm: bool = False) -> tuple[HyperModel, torch.Tensor, object]:
    torch.manual_seed(0)
    layers = [nn.Linear(6, 8), nn.LayerNorm(8)] if norm else [nn.Linear(6, 8)]
    target = Target(nn.Sequential(*layers, nn.ReLU(), nn.Linear(8, 3)))
    cond, ctx = MODES[mode]
    model = HyperModel(HyperNetwork(target, cond(), MLP((16,)), HEADS[head]()), target)
    return model, torch.randn(N, 6), ctx()


@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_and_head_traces_to_one_graph(mode, head):
    model, x, ctx = make(mode, head)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(x, ctx)
    assert explanation.graph_break_count == 0, [r.reason for r in explanation.break_reasons]
    assert explanation.graph_count == 1


def outputs_and_grads(fn: Callable, model: HyperModel, x: torch.Tensor, ctx: object):
    model.zero_grad()
    out = fn(x, ctx)
    out.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads


# each head once, each mode at least once (compiling is slow on the CPU: few cases)
@pytest.mark.parametrize(
    ("mode", "head"),
    [
        ("shared", "multihead"),
        ("per_sample_data", "chunked"),
        ("per_sample_continuous", "componentwise"),
        ("ensemble_noise", "once"),
        ("ensemble_continuous", "chunked"),
    ],
)
def test_compiled_step_equals_eager(mode, head):
    model, x, ctx = make(mode, head, norm=True)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    eager_out, eager_grads = outputs_and_grads(model, model, x, ctx)
    got_out, got_grads = outputs_and_grads(compiled, model, x, ctx)
    torch.testing.assert_close(got_out, eager_out)
    assert got_grads.keys() == eager_grads.keys() and eager_grads
    for name in eager_grads:
        torch.testing.assert_close(got_grads[name], eager_grads[name], msg=name)
    torch._dynamo.reset()


def test_a_compiled_model_still_sees_its_target_change():
    # The structure check is evaluated when the graph is traced and kept as its guards: a
    # layer replaced afterwards retraces, and the check reports the mismatch as in eager mode
    # (with fullgraph=True the compiler re-raises it as its own error, the message included).
    model, x, ctx = make("shared", "once")
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    compiled(x, ctx)
    model.target.module[2] = nn.Linear(8, 5)
    with pytest.raises(
        (ValueError, torch._dynamo.exc.Unsupported), match=r"Reshaped: \['2.weight: \(3, 8\) -> \(5, 8\)"
    ):
        compiled(x, ctx)
    torch._dynamo.reset()


# ------------------------------------------------------------------ bfloat16 autocast

# bfloat16 keeps 8 significant bits: one rounding is off by up to 2**-8 (0.39%) relative. The
# generated weights pass one bf16 rounding (the head's output; bound: two roundings' worth), the
# target's outputs about ten (the hypernet's and the target's layers; bound: ten roundings' worth).
WEIGHT_RTOL = 2.0**-7
OUTPUT_RTOL = 10 * 2.0**-8


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize(
    ("mode", "head"), [("shared", "chunked"), ("per_sample_data", "once"), ("ensemble_noise", "componentwise")]
)
def test_bfloat16_autocast_stays_close_to_float32(mode, head):
    torch.manual_seed(0)
    target = Target(
        nn.Sequential(
            nn.Linear(6, 32),
            nn.LayerNorm(32),
            nn.ReLU(),
            nn.Linear(32, 32),
            nn.BatchNorm1d(32),
            nn.ReLU(),
            nn.Linear(32, 3),
        )
    )
    cond, ctx_of = MODES[mode]
    model = HyperModel(HyperNetwork(target, cond(), MLP((32,)), HEADS[head]()), target)
    x, ctx = torch.randn(8, 6), ctx_of()
    if mode == "per_sample_data":
        ctx = None
    gen_ctx = x if ctx is None else ctx

    ref_w, _ = model.hypernet.generate_flat(gen_ctx)
    ref_out, ref_grads = outputs_and_grads(model, model, x, ctx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w, _ = model.hypernet.generate_flat(gen_ctx)
        model.zero_grad()
        out = model(x, ctx)
    out.float().square().mean().backward()

    # the hyperfan affine (theta_mean + theta_scale * raw) runs in float32: the scale is not
    # rounded to bf16, and the weights the target reads are float32 (autocast casts them per op)
    assert model.hypernet.theta_scale.dtype == torch.float32
    assert w.dtype == torch.float32
    assert rel(w, ref_w) < WEIGHT_RTOL
    assert out.dtype == torch.bfloat16  # the target's matmuls did run in bf16
    assert rel(out, ref_out) < OUTPUT_RTOL
    # BatchNorm's running statistics stay float32 (they accumulate over steps)
    bn = model.target.module[4]
    assert bn.running_mean.dtype == bn.running_var.dtype == torch.float32
    # gradients reach every parameter, finite, in float32, pointing the same way as in float32
    for name, g in ref_grads.items():
        p = dict(model.named_parameters())[name]
        assert p.grad is not None and p.grad.dtype == torch.float32, name
        assert torch.isfinite(p.grad).all(), name
        cos = torch.nn.functional.cosine_similarity(p.grad.flatten(), g.flatten(), dim=0)
        assert cos > 0.99, (name, cos.item())


class Checkpointed(nn.Module):
    """Checkpoints its middle block (non-reentrant: the form torch.compile traces)."""

    def __init__(self, checkpoint: bool):
        super().__init__()
        self.checkpoint = checkpoint
        self.inp = nn.Linear(6, 8)
        self.block = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.LayerNorm(8), nn.Linear(8, 8))
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        h = torch.utils.checkpoint.checkpoint(self.block, h, use_reentrant=False) if self.checkpoint else self.block(h)
        return self.out(h)


@pytest.mark.parametrize("mode", ["shared", "per_sample_continuous", "ensemble_noise"])
def test_compiled_checkpoint_inside_the_target_gives_the_gradients_of_the_plain_module(mode):
    # traced, checkpoint is the compiler's own operator: its recomputation reads the
    # generated weights as graph inputs, without the eager stand-ins
    models = []
    for checkpoint in (False, True):
        torch.manual_seed(0)
        target = Target(Checkpointed(checkpoint))
        cond, ctx = MODES[mode]
        models.append(HyperModel(HyperNetwork(target, cond(), MLP((16,)), Once()), target))
    plain, ckpt = models
    torch.manual_seed(1)
    x, ctx = torch.randn(N, 6), ctx()
    torch._dynamo.reset()
    compiled = torch.compile(ckpt, backend="aot_eager", fullgraph=True)
    ref_out, ref_grads = outputs_and_grads(plain, plain, x, ctx)
    got_out, got_grads = outputs_and_grads(compiled, ckpt, x, ctx)
    torch.testing.assert_close(got_out, ref_out)
    assert got_grads.keys() == ref_grads.keys()
    for name in ref_grads:
        torch.testing.assert_close(got_grads[name], ref_grads[name], msg=name)
    torch._dynamo.reset()


# ------------------------------------------------------------------ HyperModel.compile


def test_hypermodel_compile_compiles_the_forward_in_place_with_fullgraph():
    model, x, ctx = make("ensemble_noise", "chunked", norm=True)
    eager_out, eager_grads = outputs_and_grads(model, model, x, ctx)
    torch._dynamo.reset()
    assert model.compile(backend="aot_eager") is model
    assert model._compiled_call_impl is not None
    got_out, got_grads = outputs_and_grads(model, model, x, ctx)
    torch.testing.assert_close(got_out, eager_out)
    for name in eager_grads:
        torch.testing.assert_close(got_grads[name], eager_grads[name], msg=name)
    # fullgraph by default: a construct that splits the graph raises instead of running eagerly
    shared, x, _ = make("shared", "once")
    shared.compile(backend="aot_eager")
    # several task ids: TaskEmbedding stacks the tasks in use (a graph break), refused by name
    # before tracing (it was dynamo's data-dependent guard error)
    for ids in (torch.tensor([0, 1, 0, 1]), [1, 1, 1, 1]):
        with pytest.raises(ValueError, match="compiled with fullgraph=True.*expected one task id per call"):
            shared(x, ids)
        with pytest.raises(ValueError, match="expected one task id per call"):
            shared(x, context=ids)
    torch._dynamo.reset()
    shared.compile(backend="aot_eager", fullgraph=False)
    assert shared(x, torch.tensor([0, 1, 0, 1])).shape == (N, 3)
    torch._dynamo.reset()


def test_a_copied_model_compiles_and_one_task_id_may_be_a_tensor_or_numpy_integer():
    import copy
    import pickle

    import numpy as np

    model, x, _ = make("shared", "chunked")
    want = model(x, 1)
    torch._dynamo.reset()
    # a copy's target rebuilds its cached structure on first use; that happened inside the
    # trace, which failed under fullgraph
    for copied in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        copied.compile(backend="aot_eager")
        torch.testing.assert_close(copied(x, 1), want)
    # one task id as a 0-d tensor or a NumPy integer failed to trace (a data-dependent guard);
    # it runs as the int it is
    compiled = copy.deepcopy(model).compile(backend="aot_eager")
    for one in (torch.tensor(1), np.int64(1), torch.tensor(1, dtype=torch.int32)):
        torch.testing.assert_close(compiled(x, one), want)
        torch.testing.assert_close(compiled(x, context=one), want)
    torch._dynamo.reset()


@pytest.mark.parametrize("mode", ["shared", "per_sample_data", "ensemble_noise"])
def test_a_compiled_model_compiles_once(mode):
    # nothing the first call leaves behind (the per-thread frame stack, the grouped plan) may
    # fail the graph's guards: the second and later calls reuse the first graph
    model, x, ctx = make(mode, "chunked")
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=counting, fullgraph=True)
    for _ in range(3):
        compiled(x, ctx).square().mean().backward()
    assert len(graphs) == 1
    torch._dynamo.reset()


def test_each_task_id_compiles_its_own_graph_and_more_tasks_need_a_higher_recompile_limit():
    # TaskEmbedding's docstring: an int task id reads one parameter, so each id is a graph;
    # past torch._dynamo's recompile limit a fullgraph model raises, below it every task runs
    torch.manual_seed(0)
    tasks = 10
    target = Target(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)))
    model = HyperModel(HyperNetwork(target, TaskEmbedding(tasks, 5), MLP((16,)), Once()), target)
    x = torch.randn(N, 6)
    eager = [model(x, t).detach() for t in range(tasks)]
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    with torch._dynamo.config.patch(recompile_limit=4):
        torch._dynamo.reset()
        compiled = torch.compile(model, backend=counting, fullgraph=True)
        for t in range(4):
            compiled(x, t)
        with pytest.raises(torch._dynamo.exc.FailOnRecompileLimitHit):
            compiled(x, 4)
    with torch._dynamo.config.patch(recompile_limit=tasks):
        torch._dynamo.reset()
        graphs.clear()
        compiled = torch.compile(model, backend=counting, fullgraph=True)
        for t in range(tasks):
            torch.testing.assert_close(compiled(x, t), eager[t])
        for t in range(tasks):  # a second pass reuses every task's graph
            compiled(x, t)
    assert len(graphs) == tasks
    torch._dynamo.reset()


# ------------------------------------------------------------------ compile_settings


def _saved_bool_masks(compile_model: Callable[[HyperModel, Callable], None]) -> tuple[int, torch.Tensor]:
    """Compile an ensemble of MLPs (``compile_model(model, backend)``), run one step and count
    the boolean tensors the partitioned forward saves for the backward; and the loss. The
    backend partitions as inductor does (its decompositions, the min-cut partitioner) without
    generating code."""
    from functorch.compile import make_boxed_func, min_cut_rematerialization_partition
    from torch._dynamo.backends.common import aot_autograd
    from torch._inductor.decomposition import select_decomp_table

    saved: list[torch.dtype] = []

    def forward_compiler(gm, example_inputs):
        out = next(n for n in gm.graph.nodes if n.op == "output")
        saved.extend(a.meta["val"].dtype for a in out.args[0] if hasattr(a, "meta") and "val" in a.meta)
        return make_boxed_func(gm.forward)

    backend = aot_autograd(
        fw_compiler=forward_compiler,
        bw_compiler=lambda gm, _: make_boxed_func(gm.forward),
        partition_fn=min_cut_rematerialization_partition,
        decompositions=select_decomp_table(),
    )
    torch.manual_seed(0)
    target = Target(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)))
    model = HyperModel(HyperNetwork(target, Noise(5), MLP((16,)), Chunked(16, 4)), target)
    x, z = torch.randn(N, 6), torch.randn(3, 5)
    torch._dynamo.reset()
    call = compile_model(model, backend)
    loss = call(x, z).square().mean()
    loss.backward()
    torch._dynamo.reset()
    return sum(d == torch.bool for d in saved), loss.detach()


def test_compile_settings_recompute_views_and_restore_the_config():
    from torch._functorch import config as functorch_config

    import hyperdnn

    before = functorch_config.recompute_views
    with hyperdnn.compile_settings():
        assert functorch_config.recompute_views is True
    assert functorch_config.recompute_views == before
    with pytest.raises(RuntimeError, match="inside"), hyperdnn.compile_settings():
        raise RuntimeError("an error inside")
    assert functorch_config.recompute_views == before


def test_hypermodel_compile_saves_no_relu_masks_where_a_plain_compile_does():
    # ReLU -> view -> batched matmul: without the setting the partitioner saves the ReLU's
    # output behind the view and a boolean mask of it (slow to write in inductor's CPU code);
    # HyperModel.compile partitions with hyperdnn.compile_settings and saves no mask
    plain, plain_loss = _saved_bool_masks(lambda m, backend: torch.compile(m, backend=backend, fullgraph=True))
    ours, ours_loss = _saved_bool_masks(lambda m, backend: m.compile(backend=backend))
    assert plain == 2, plain  # one per generated layer's ReLU
    assert ours == 0, ours
    torch.testing.assert_close(ours_loss, plain_loss)
