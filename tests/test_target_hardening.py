"""Target hardening: attention under parameter owners, batch_dim, Embedding bounds and padding,
checkpointing, parametrisations, empty batches, RNN caches, bad input, structure changes and
materialize. Every result is compared with plain PyTorch: a loop of shared calls (each of which
is itself checked against the module loaded with the weights) or the module without the feature.
"""

from __future__ import annotations

import gc
import io
import itertools
import weakref

import pytest
import torch
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint_module
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrize, prune
from torch.nn.utils.parametrizations import spectral_norm, weight_norm
from torch.utils import _pytree as pytree

from hyperdnn import Target
from tests.helpers import (
    CASES,
    assert_unchanged,
    build_case,
    ensemble_loop,
    load,
    one_set,
    per_sample_loop,
    random_weights,
    state,
)


def grads(out_fn, tensors):
    """Gradients of a fixed random projection of ``out_fn()`` with respect to ``tensors``."""
    out = out_fn()
    g = torch.Generator().manual_seed(1)
    proj = torch.randn(out.shape, generator=g)
    return torch.autograd.grad((out * proj).sum(), tensors, allow_unused=True)


def backward_grads(out_fn, leaves):
    """Like :func:`grads`, through ``.backward()`` (what reentrant checkpointing supports)."""
    for t in leaves:
        t.grad = None
    out = out_fn()
    g = torch.Generator().manual_seed(1)
    (out * torch.randn(out.shape, generator=g)).sum().backward()
    found = [t.grad for t in leaves]
    for t in leaves:
        t.grad = None
    return found


def leaf_weights(spec, *batch, seed=0):
    return {k: v.requires_grad_() for k, v in random_weights(spec, *batch, seed=seed).items()}


def assert_grouped_calls_equal_loops(target: Target, x: torch.Tensor) -> None:
    """Per sample (values and gradients) and ensemble equal loops of shared calls on ``x``,
    and leave the module as it was."""
    before = state(target.module)
    w = leaf_weights(target.spec, 4)
    torch.testing.assert_close(target(w, x), per_sample_loop(target, w, x), atol=1e-5, rtol=1e-4)
    got = grads(lambda: target(w, x), list(w.values()))
    ref = grads(lambda: per_sample_loop(target, w, x), list(w.values()))
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    wk = random_weights(target.spec, 3, seed=1)
    torch.testing.assert_close(target.ensemble(wk, x), ensemble_loop(target, wk, x), atol=1e-5, rtol=1e-4)
    assert_unchanged(target.module, before)


# ------------------------------------------------------------------ 1. attention under a parameter owner


class ClsAttention(nn.Module):
    """A parameter on the top module above a MultiheadAttention (VisionTransformer's shape)."""

    def __init__(self, batch_first: bool = True):
        super().__init__()
        self.cls = nn.Parameter(0.1 * torch.randn(1, 1, 8))
        self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)
        self.batch_first = batch_first

    def forward(self, x):  # x (B, L, 8)
        h = x if self.batch_first else x.transpose(0, 1)
        y = self.attn(h + self.cls, h, h)[0]
        return y if self.batch_first else y.transpose(0, 1)


class ScaledAttention(nn.Module):
    """Owns a parameter (so it runs under vmap) and holds a MultiheadAttention."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 8))
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0] * self.scale


class Encoder(nn.Module):
    """Top-level parameter, then a block two levels down that holds the attention."""

    def __init__(self):
        super().__init__()
        self.pos = nn.Parameter(0.1 * torch.randn(1, 3, 8))
        self.blocks = nn.Sequential(nn.ModuleDict({"attn": nn.MultiheadAttention(8, 2, batch_first=True)}))
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        h = x + self.pos
        h = h + self.blocks[0]["attn"](h, h, h)[0]
        return self.head(h)


ATTENTION_MODELS = {
    "cls_above_attention": (ClsAttention, None),
    "cls_above_seq_first_attention": (lambda: ClsAttention(batch_first=False), None),
    "attention_inside_vmapped_owner": (lambda: nn.Sequential(nn.Linear(8, 8), ScaledAttention()), None),
    "attention_two_levels_under_owner": (Encoder, None),
    "only_out_proj_weight": (ClsAttention, "attn.out_proj.weight"),
    "only_out_proj_under_owner": (ClsAttention, ["cls", "attn.out_proj.*"]),
}


@pytest.mark.parametrize("name", list(ATTENTION_MODELS))
def test_attention_under_parameter_owners_per_sample_and_ensemble_equal_loops(name):
    torch.manual_seed(0)
    make, select = ATTENTION_MODELS[name]
    module = make()
    target = Target(module, select)
    x = torch.randn(4, 3, 8)
    # shared calls are the reference: check them against the loaded module first
    w1 = random_weights(target.spec)
    torch.testing.assert_close(target(w1, x), load(module, w1)(x), atol=1e-5, rtol=1e-5)
    assert_grouped_calls_equal_loops(target, x)


class DoubledLinear(nn.Linear):
    """A Linear subclass with a forward of its own: the grouped Linear path must not run it."""

    def forward(self, x):
        return 2 * super().forward(x)


def instance_forward_mlp():
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    net[0].forward = lambda x: nn.Linear.forward(net[0], x) + 1.0
    return net


@pytest.mark.parametrize("make", [lambda: nn.Sequential(DoubledLinear(4, 6), nn.Tanh()), instance_forward_mlp])
def test_overridden_forward_runs_not_the_builtin_fast_path(make):
    torch.manual_seed(0)
    module = make()
    target = Target(module)
    x = torch.randn(4, 4)
    w1 = random_weights(target.spec)
    torch.testing.assert_close(target(w1, x), functional_call(module, w1, (x,)))
    w = random_weights(target.spec, 4)
    torch.testing.assert_close(target(w, x), per_sample_loop(target, w, x), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(target.ensemble(w, x), ensemble_loop(target, w, x), atol=1e-5, rtol=1e-4)
    assert "forward" in module[0].__dict__ or type(module[0]) is DoubledLinear


# ------------------------------------------------------------------ 2. batch_dim


def test_linear_batch_dim_1_per_sample_equals_loop():
    torch.manual_seed(0)
    lin = nn.Linear(8, 2)
    t = Target(lin, batch_dim=1)
    x = torch.randn(5, 3, 8)
    w = {k: torch.randn(3, *v.shape) for k, v in lin.named_parameters()}
    torch.testing.assert_close(t(w, x), per_sample_loop(t, w, x, bd=1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(t(one_set(w, 0), x), load(lin, one_set(w, 0))(x))


class SeqFirstConv(nn.Module):
    """Sequence-first input (L, B, C): embedding, layer norm, a Conv1d on (B, C, L), a Linear."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.ln = nn.LayerNorm(6)
        self.conv = nn.Conv1d(6, 4, 3, padding=1)
        self.gn = nn.GroupNorm(2, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, idx):  # (L, B)
        h = self.ln(self.emb(idx))  # (L, B, 6)
        h = self.gn(self.conv(h.permute(1, 2, 0)))  # (B, 4, L): convolutions keep batch at dim 0
        return self.out(torch.tanh(h).permute(2, 0, 1))  # (L, B, 3)


def seq_first_encoder():
    return nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)  # batch_first=False: (S, B, E)


BATCH_DIM_MODELS = {
    "seq_first_transformer_layer": (seq_first_encoder, lambda b: torch.randn(5, b, 8)),
    "seq_first_embedding_layernorm_conv": (SeqFirstConv, lambda b: torch.randint(0, 11, (7, b))),
    "seq_first_mlp": (
        lambda: nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 2)),
        lambda b: torch.randn(4, b, 6),
    ),
}


@pytest.mark.parametrize("name", list(BATCH_DIM_MODELS))
@pytest.mark.parametrize("path", ["auto", "vmap"])
def test_batch_dim_1_per_sample_and_ensemble_equal_loops(name, path):
    torch.manual_seed(0)
    make, data = BATCH_DIM_MODELS[name]
    module = make()
    target = Target(module, batch_dim=1, per_sample=path)
    x = data(4)
    w1 = random_weights(target.spec)
    torch.testing.assert_close(target(w1, x), load(module, w1)(x), atol=1e-5, rtol=1e-5)
    w = leaf_weights(target.spec, 4)
    torch.testing.assert_close(target(w, x), per_sample_loop(target, w, x, bd=1), atol=1e-5, rtol=1e-4)
    got = grads(lambda: target(w, x), list(w.values()))
    ref = grads(lambda: per_sample_loop(target, w, x, bd=1), list(w.values()))
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    wk = random_weights(target.spec, 3, seed=1)
    torch.testing.assert_close(target.ensemble(wk, x), ensemble_loop(target, wk, x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("grad", [True, False])
def test_batch_first_transformer_layer_in_eval_equals_loop(grad):
    # in eval mode without grad, TransformerEncoderLayer takes a fused path that reads its
    # own parameters; grouped calls must not
    torch.manual_seed(0)
    module = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True).eval()
    target = Target(module)
    x = torch.randn(3, 5, 8)
    w = random_weights(target.spec, 3)
    with torch.set_grad_enabled(grad):
        torch.testing.assert_close(target(w, x), per_sample_loop(target, w, x), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(target.ensemble(w, x), ensemble_loop(target, w, x), atol=1e-5, rtol=1e-4)
    assert torch.backends.mha.get_fastpath_enabled()


def test_input_without_the_batch_at_batch_dim_is_a_clear_error():
    class Pool(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 2)

        def forward(self, x):  # (L, B, 8) -> (L, 8): the batch is gone before the Linear
            return self.fc(x.sum(1))

    target = Target(Pool(), batch_dim=1)
    with pytest.raises(ValueError, match=r"Linear with batched weights expected an input with its batch of 3"):
        target(random_weights(target.spec, 3), torch.randn(5, 3, 8))


# ------------------------------------------------------------------ 3. Embedding


def test_embedding_out_of_range_index_raises_like_f_embedding():
    t = Target(nn.Embedding(5, 2))
    tables = torch.arange(30.0).reshape(3, 5, 2)
    with pytest.raises(IndexError):
        F.embedding(torch.tensor([7]), tables[0])
    for bad in (7, 5, -1):
        with pytest.raises(IndexError):
            t({"weight": tables}, torch.tensor([[bad], [1], [2]]))
        with pytest.raises(IndexError):
            t.ensemble({"weight": tables}, torch.tensor([[bad], [1]]))
    # in range: each sample reads its own table
    out = t({"weight": tables}, torch.tensor([[4], [1], [2]]))
    torch.testing.assert_close(out, torch.stack([tables[0, [4]], tables[1, [1]], tables[2, [2]]]))


@pytest.mark.parametrize("scale_grad_by_freq", [False, True])
def test_embedding_padding_row_gets_no_gradient_per_sample(scale_grad_by_freq):
    torch.manual_seed(0)
    module = nn.Sequential(nn.Embedding(6, 3, padding_idx=2, scale_grad_by_freq=scale_grad_by_freq), nn.Linear(3, 2))
    target = Target(module)
    idx = torch.tensor([[2, 1, 1, 4], [0, 2, 2, 5], [3, 3, 3, 2], [1, 2, 0, 1]])
    w = leaf_weights(target.spec, 4)
    got = grads(lambda: target(w, idx), list(w.values()))
    ref = grads(lambda: per_sample_loop(target, w, idx), list(w.values()))
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    table_grad = got[0]
    assert torch.count_nonzero(table_grad[:, 2]) == 0
    assert torch.count_nonzero(table_grad[:, 1]) > 0
    wk = leaf_weights(target.spec, 3)
    got = grads(lambda: target.ensemble(wk, idx), list(wk.values()))
    ref = grads(lambda: ensemble_loop(target, wk, idx), list(wk.values()))
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("norm_type", [2.0, 1.0])
def test_embedding_max_norm_per_sample_and_ensemble_equal_loops(norm_type):
    """F.embedding(max_norm=...) rescales the looked-up rows of its table in place (no gradient
    through the rescaling): each weight set's rows are rescaled as a loop of plain calls would,
    the caller's tensors included, and outputs and gradients match the loop."""
    torch.manual_seed(0)
    emb = nn.Embedding(7, 4, max_norm=1.0, norm_type=norm_type, padding_idx=0)
    module = nn.Sequential(emb, nn.Flatten(), nn.Linear(12, 2)).double()
    target = Target(module)
    idx = torch.tensor([[1, 2, 0], [3, 3, 6], [0, 0, 0], [5, 1, 2]])  # rows 4 never looked up
    for (entry, n), leaves in itertools.product((("per_sample", 4), ("ensemble", 3)), (True, False)):
        base = {k: torch.randn(n, *s, dtype=torch.float64, requires_grad=True) for k, s in target.spec.shapes.items()}
        w, w_ref = {k: 3 * v for k, v in base.items()}, {k: 3 * v for k, v in base.items()}  # norms well above 1
        if leaves:  # leaves, as a module's own table: rescaled in place
            w = {k: v.detach().requires_grad_() for k, v in w.items()}
            w_ref = {k: v.detach().requires_grad_() for k, v in w_ref.items()}
        before = w["0.weight"].detach().clone()
        out = target.run(w, idx, mode=entry)
        loop = per_sample_loop if entry == "per_sample" else ensemble_loop
        ref = loop(target, w_ref, idx)
        torch.testing.assert_close(out, ref)
        g = torch.randn_like(out)
        got = torch.autograd.grad((out * g).sum(), list(w.values() if leaves else base.values()))
        want = torch.autograd.grad((ref * g).sum(), list(w_ref.values() if leaves else base.values()))
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b)
        if not leaves:  # a table that is not a leaf (generated) is left as it was: its copy is read
            torch.testing.assert_close(w["0.weight"].detach(), before, rtol=0, atol=0)
            continue
        torch.testing.assert_close(w["0.weight"], w_ref["0.weight"])  # the same rows rescaled in place
        norms = torch.linalg.vector_norm(w["0.weight"], norm_type, dim=-1)
        looked_up = [set(row.tolist()) for row in idx] if entry == "per_sample" else [set(idx.flatten().tolist())] * n
        for b, rows in enumerate(looked_up):  # each set's own rows rescaled, the others left alone
            for r in range(7):
                assert (norms[b, r] <= 1 + 1e-6) if r in rows else (norms[b, r] > 1.5), (entry, b, r)


def test_embedding_max_norm_with_an_index_out_of_range_changes_nothing():
    target = Target(nn.Embedding(5, 2, max_norm=1.0))
    tables = torch.arange(30.0).reshape(3, 5, 2)
    before = tables.clone()
    with pytest.raises(IndexError):
        target({"weight": tables}, torch.tensor([[1], [7], [2]]))
    assert torch.equal(tables, before)


# ------------------------------------------------------------------ 4. torch.utils.checkpoint


class Checkpointed(nn.Module):
    def __init__(self, use_reentrant: bool | None):
        super().__init__()
        self.use_reentrant = use_reentrant  # None: no checkpointing
        self.inp = nn.Linear(4, 8)
        self.block = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.LayerNorm(8), nn.Linear(8, 8))
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        if self.use_reentrant is None:
            h = self.block(h)
        else:
            h = checkpoint_module.checkpoint(self.block, h, use_reentrant=self.use_reentrant)
        return self.out(h)


class CheckpointedOwner(nn.Module):
    """A parameter owner (runs under vmap per sample) that checkpoints inside its forward."""

    def __init__(self, use_reentrant: bool | None):
        super().__init__()
        self.use_reentrant = use_reentrant
        self.gain = nn.Parameter(torch.linspace(0.5, 1.5, 8))
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        f = lambda h: torch.tanh(self.fc(h)) * self.gain  # noqa: E731
        if self.use_reentrant is None:
            return f(x)
        return checkpoint_module.checkpoint(f, x, use_reentrant=self.use_reentrant)


CHECKPOINT_MODELS = {
    "block": (Checkpointed, lambda b: torch.randn(b, 4)),
    "vmapped_owner": (
        lambda r: nn.Sequential(nn.Linear(4, 8), CheckpointedOwner(r), nn.Linear(8, 2)),
        lambda b: torch.randn(b, 4),
    ),
}


@pytest.mark.parametrize("name", list(CHECKPOINT_MODELS))
@pytest.mark.parametrize("use_reentrant", [True, False])
@pytest.mark.parametrize("mode", ["shared", "per_sample", "ensemble"])
def test_checkpoint_inside_the_module_gives_the_gradients_of_the_plain_module(name, use_reentrant, mode):
    torch.manual_seed(0)
    make, data = CHECKPOINT_MODELS[name]
    plain = make(None)
    module = make(use_reentrant)
    module.load_state_dict(plain.state_dict())
    t_plain, t_ckpt = Target(plain), Target(module)
    batch = {"shared": (), "per_sample": (5,), "ensemble": (3,)}[mode]
    w = leaf_weights(t_plain.spec, *batch)
    x = data(5).requires_grad_()
    call = (lambda t: t.ensemble(w, x)) if mode == "ensemble" else (lambda t: t(w, x))
    before = state(module)
    torch.testing.assert_close(call(t_ckpt), call(t_plain))
    got = backward_grads(lambda: call(t_ckpt), [x, *w.values()])
    ref = backward_grads(lambda: call(t_plain), [x, *w.values()])
    for a, b in zip(got, ref, strict=True):
        assert a is not None
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    # the module's own copies of generated tensors get no gradient; its other parameters do
    assert all(p.grad is None for n, p in module.named_parameters() if n in t_ckpt.spec)
    assert_unchanged(module, before)
    assert checkpoint_module.CheckpointFunction.__name__ == "CheckpointFunction"
    assert checkpoint_module._checkpoint_without_reentrant_generator.__name__ == (
        "_checkpoint_without_reentrant_generator"
    )


def test_checkpoint_recomputes_in_backward_with_the_generated_weights():
    # the recomputation runs after the call returned: it must see the generated tensors
    torch.manual_seed(0)
    module = Checkpointed(use_reentrant=False)
    target = Target(module)
    seen = []
    module.block[0].register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    w = leaf_weights(target.spec)
    target(w, torch.randn(3, 4)).sum().backward()
    assert len(seen) == 2  # forward and recomputation
    torch.testing.assert_close(seen[1], seen[0])


# ------------------------------------------------------------------ 5. parametrisations


class Symmetric(nn.Module):
    def forward(self, X):
        return X.triu() + X.triu(1).transpose(-1, -2)


class Double(nn.Module):
    def forward(self, X):
        return 2 * X


class Gain(nn.Module):
    """A parametrisation with a parameter of its own."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(1.5))

    def forward(self, X):
        return X * self.gain


def weight_normed_mlp():
    return nn.Sequential(weight_norm(nn.Linear(6, 8)), nn.Tanh(), weight_norm(nn.Linear(8, 2), dim=None))


def custom_parametrized_conv():
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Flatten(), nn.Linear(3 * 4 * 4, 3), nn.Linear(3, 3))
    parametrize.register_parametrization(net[0], "weight", Gain())
    parametrize.register_parametrization(net[3], "weight", Symmetric())
    return net


def weight_normed_attention():
    m = ClsAttention()
    weight_norm(m.attn.out_proj)
    return m


def legacy_weight_norm_mlp():
    return nn.Sequential(
        nn.utils.weight_norm(nn.Linear(6, 8)), nn.Tanh(), nn.utils.weight_norm(nn.Linear(8, 2), dim=None)
    )


def pruned_mlp():
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))
    prune.l1_unstructured(net[0], "weight", amount=0.5)
    return net


def eval_spectral_norm_mlp():
    return nn.Sequential(spectral_norm(nn.Linear(6, 8)), nn.Tanh(), nn.Linear(8, 2)).eval()


PARAMETRIZED = {
    "weight_norm": (weight_normed_mlp, lambda b: torch.randn(b, 6)),
    "weight_norm_conv": (
        lambda: nn.Sequential(weight_norm(nn.Conv2d(2, 3, 3)), nn.Flatten(), nn.Linear(12, 2)),
        lambda b: torch.randn(b, 2, 4, 4),
    ),
    "custom_and_parametrisation_parameter": (custom_parametrized_conv, lambda b: torch.randn(b, 2, 4, 4)),
    "weight_norm_on_attention_out_proj": (weight_normed_attention, lambda b: torch.randn(b, 3, 8)),
    "spectral_norm_eval": (eval_spectral_norm_mlp, lambda b: torch.randn(b, 6)),
    "legacy_weight_norm": (legacy_weight_norm_mlp, lambda b: torch.randn(b, 6)),
    "legacy_prune": (pruned_mlp, lambda b: torch.randn(b, 6)),
}


# name -> (model, selection): the other source of a reparametrised tensor is the module's own
PARTIAL = {
    **{name: (name, None) for name in PARAMETRIZED},
    "legacy_weight_norm_only_v": ("legacy_weight_norm", "*weight_v"),
    "weight_norm_only_original1": ("weight_norm", "*original1"),
}


@pytest.mark.parametrize("name", list(PARTIAL))
@pytest.mark.parametrize("path", ["auto", "vmap"])
def test_parametrised_weights_per_sample_and_ensemble_equal_loops(name, path):
    torch.manual_seed(0)
    model, select = PARTIAL[name]
    make, data = PARAMETRIZED[model]
    module = make()
    target = Target(module, select, per_sample=path)
    x = data(4)
    w1 = random_weights(target.spec)
    w1 = {k: v.abs() + 0.5 if k.endswith(("_g", "original0")) else v for k, v in w1.items()}
    torch.testing.assert_close(target(w1, x), functional_call(module, w1, (x,)), atol=1e-5, rtol=1e-5)
    assert_grouped_calls_equal_loops(target, x)


def test_legacy_weight_norm_per_sample_uses_the_generated_g_and_v():
    torch.manual_seed(0)
    lin = nn.utils.weight_norm(nn.Linear(4, 3))
    target = Target(lin)
    assert set(target.spec.names) == {"bias", "weight_g", "weight_v"}
    w = random_weights(target.spec, 5)
    x = torch.randn(5, 4)
    ref = torch.stack([functional_call(lin, one_set(w, b), (x[b],)) for b in range(5)])
    torch.testing.assert_close(target(w, x), ref, atol=1e-5, rtol=1e-5)
    # the attribute the hook writes is restored after a call
    own = lin.weight
    target(one_set(w, 0), x)
    assert lin.weight is own


def test_legacy_spectral_norm_refused_with_batched_weights():
    module = nn.Sequential(nn.utils.spectral_norm(nn.Linear(4, 3)), nn.Linear(3, 2))
    target = Target(module)
    target(random_weights(target.spec), torch.randn(2, 4))  # shared works
    with pytest.raises(ValueError, match=r"'0.weight' uses the legacy torch.nn.utils.spectral_norm hook"):
        target(random_weights(target.spec, 2), torch.randn(2, 4))


def test_legacy_weight_norm_on_attention_out_proj_refused():
    # MultiheadAttention reads out_proj.weight without calling out_proj: the hook would never
    # see the generated weight_g / weight_v, not even in shared mode
    module = ClsAttention()
    nn.utils.weight_norm(module.attn.out_proj)
    with pytest.raises(ValueError, match=r"\['attn.out_proj'\] carry a legacy torch.nn.utils reparametrisation"):
        Target(module)
    assert Target(module, ["cls", "attn.in_proj_*"]).spec.names == ("cls", "attn.in_proj_weight", "attn.in_proj_bias")


def test_spectral_norm_parametrisation_in_training_refused_with_batched_weights():
    module = nn.Sequential(spectral_norm(nn.Linear(4, 3)), nn.Linear(3, 2))
    target = Target(module)
    before = state(module)
    with pytest.raises(ValueError, match=r"spectral_norm parametrisation of \['0.weight'\].*call .eval\(\)"):
        target(random_weights(target.spec, 2), torch.randn(2, 4))
    assert_unchanged(module, before)


@pytest.mark.parametrize("training", [True, False])
def test_instance_norm_with_running_statistics_per_sample_and_ensemble_equal_the_plain_layer(training):
    """Instance statistics are per sample, so the batch (per sample) or the K copies of it
    (ensemble) normalise as the plain layer does; in training mode the running statistics
    update once over the whole batch, as the plain layer's own call would."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv1d(2, 3, 3), nn.InstanceNorm1d(3, affine=True, track_running_stats=True))
    module.train(training)
    module[1].running_mean.uniform_(-1, 1)
    target = Target(module, ["1.*"])  # the norm's affine per sample; the convolution shared
    B = 5
    x = torch.randn(B, 2, 8)
    w = {k: v.requires_grad_(True) for k, v in random_weights(target.spec, B).items()}
    start = state(module)
    out = target(w, x)
    after = state(module)
    module.load_state_dict(start)
    h = module[0](x)
    ref = F.instance_norm(h, module[1].running_mean, module[1].running_var, None, None, training, 0.1, 1e-5)
    ref = ref * w["1.weight"].unsqueeze(-1) + w["1.bias"].unsqueeze(-1)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(after["1.running_mean"], module[1].running_mean)
    assert training == (not torch.equal(after["1.running_mean"], start["1.running_mean"]))
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad((out * g).sum(), list(w.values())), torch.autograd.grad((ref * g).sum(), list(w.values())), strict=True):  # fmt: skip
        torch.testing.assert_close(a, b)
    module.load_state_dict(start)
    members = target.ensemble({k: v[:2] for k, v in w.items()}, x)
    for k in range(2):
        module.load_state_dict(start)
        torch.testing.assert_close(members[k], functional_call(module, one_set(w, k), (x,)))


@pytest.mark.parametrize("cls", [nn.LSTMCell, nn.GRUCell])
def test_rnn_cells_with_a_given_state_per_sample_and_ensemble_equal_loops(cls):
    """A state given as a tensor or an (h, c) pair is repeated for the ensemble's members like
    any input with the batch at batch_dim (inside the pair too)."""
    torch.manual_seed(0)
    module = cls(3, 4)
    target = Target(module)
    B, K = 4, 3
    w = random_weights(target.spec, B)
    x = torch.randn(B, 3)
    hx = (torch.randn(B, 4), torch.randn(B, 4)) if cls is nn.LSTMCell else torch.randn(B, 4)
    got = target(w, x, hx)
    for b in range(B):
        hb = tuple(t[b : b + 1] for t in hx) if isinstance(hx, tuple) else hx[b : b + 1]
        want = functional_call(module, one_set(w, b), (x[b : b + 1], hb))
        for a, c in zip(pytree.tree_leaves(got), pytree.tree_leaves(want), strict=True):
            torch.testing.assert_close(a[b : b + 1], c)
    wk = {k: v[:K] for k, v in w.items()}
    got = target.ensemble(wk, x, hx)
    for k in range(K):
        want = functional_call(module, one_set(wk, k), (x, hx))
        for a, c in zip(pytree.tree_leaves(got), pytree.tree_leaves(want), strict=True):
            torch.testing.assert_close(a[k], c)
    bad = (torch.randn(B + 1, 4), torch.randn(B + 1, 4)) if cls is nn.LSTMCell else torch.randn(B + 1, 4)
    with pytest.raises(
        ValueError, match=rf"{cls.__name__} with batched weights expected its state of shape \({B}, 4\)"
    ):
        target(w, x, bad)


def test_attention_weights_are_returned_after_dropout_as_torch_returns_them():
    """In training mode with dropout, torch returns the attention weights after dropout (the
    ones the values are averaged with): the output equals those weights applied to the values."""
    torch.manual_seed(0)
    module = nn.MultiheadAttention(8, 2, dropout=0.5, batch_first=True).train()
    target = Target(module)
    B, L = 3, 5
    w = random_weights(target.spec, B)
    x = torch.randn(B, L, 8)
    out, weights = target(w, x, x, x, average_attn_weights=False)  # (B, heads, L, L)
    assert bool((weights == 0).any())  # dropped
    wv = w["in_proj_weight"][:, 16:]
    bv = w["in_proj_bias"][:, 16:]
    v = (torch.bmm(x, wv.transpose(1, 2)) + bv.unsqueeze(1)).view(B, L, 2, 4).transpose(1, 2)
    heads = (weights @ v).transpose(1, 2).reshape(B, L, 8)
    want = torch.bmm(heads, w["out_proj.weight"].transpose(1, 2)) + w["out_proj.bias"].unsqueeze(1)
    torch.testing.assert_close(out, want)


# ------------------------------------------------------------------ 6. empty batches


@pytest.mark.parametrize("name", [n for n in CASES if n != "instancenorm_tracked_eval"])  # torch's raises on B = 0
def test_empty_batches_return_empty_results(name):
    module, target, data = build_case(name)
    rest = module(data(2)).shape[1:]
    empty = data(0)
    assert module(empty).shape == (0, *rest)  # plain PyTorch
    w = leaf_weights(target.spec, 0)
    out = target(w, empty)
    assert out.shape == (0, *rest)
    out.sum().backward()
    assert target.ensemble(random_weights(target.spec, 0), data(3)).shape == (0, 3, *rest)
    assert target.ensemble(random_weights(target.spec, 4), empty).shape == (4, 0, *rest)


# ------------------------------------------------------------------ 8. RNN flat weights


@pytest.mark.parametrize("batched", [False, True])
def test_rnn_flat_weights_point_at_own_parameters_after_a_call(batched):
    module = nn.LSTM(4, 5, num_layers=2, batch_first=True)
    target = Target(module)
    w = random_weights(target.spec, *((3,) if batched else ()))
    probe = weakref.ref(w["weight_hh_l1"])
    out = target(w, torch.randn(3, 6, 4))
    own = [getattr(module, n) for n in module._flat_weights_names]
    assert len(module._flat_weights) == len(own)
    assert all(a is b for a, b in zip(module._flat_weights, own, strict=True))
    del w, out
    gc.collect()
    assert probe() is None


def test_lstm_with_projections_per_sample_from_a_given_state_equals_a_loop():
    torch.manual_seed(0)
    module = nn.LSTM(4, 5, num_layers=2, proj_size=3, bidirectional=True, batch_first=True)
    target = Target(module)
    assert "weight_hr_l1_reverse" in target.spec.names
    B = 3
    w = random_weights(target.spec, B)
    x, h0, c0 = torch.randn(B, 6, 4), torch.randn(4, B, 3), torch.randn(4, B, 5)  # h of width proj_size
    out, (hn, cn) = target(w, x, (h0, c0))
    assert out.shape == (B, 6, 6) and hn.shape == (4, B, 3) and cn.shape == (4, B, 5)
    for b in range(B):
        o, (h, c) = torch.func.functional_call(
            module, one_set(w, b), (x[b : b + 1], (h0[:, b : b + 1], c0[:, b : b + 1]))
        )
        torch.testing.assert_close(out[b : b + 1], o)
        torch.testing.assert_close(hn[:, b : b + 1], h)
        torch.testing.assert_close(cn[:, b : b + 1], c)


class PackedRNN(nn.Module):
    """Pads in, packs inside: the usual way to run variable-length sequences through an RNN."""

    def __init__(self, kind: str, bidirectional: bool, proj_size: int = 0):
        super().__init__()
        cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind]
        extra = {"proj_size": proj_size} if proj_size else {}
        self.rnn = cls(4, 5, num_layers=2, batch_first=True, bidirectional=bidirectional, **extra)

    def forward(self, x, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, h = self.rnn(packed)
        padded, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        hn, cn = h if isinstance(h, tuple) else (h, h)  # the cell state of an LSTM
        return padded, hn.transpose(0, 1), cn.transpose(0, 1)


@pytest.mark.parametrize(("kind", "bidirectional", "proj_size"), [("lstm", True, 0), ("lstm", False, 3), ("gru", True, 0), ("rnn", False, 0)])  # fmt: skip
def test_packed_sequences_per_sample_equal_a_loop(kind, bidirectional, proj_size):
    torch.manual_seed(0)
    module = PackedRNN(kind, bidirectional, proj_size)
    target = Target(module)
    B = 4
    w = {k: v.requires_grad_(True) for k, v in random_weights(target.spec, B).items()}
    x, lengths = torch.randn(B, 6, 4), torch.tensor([3, 6, 1, 4])  # unsorted: packing sorts them
    out, hn, cn = target(w, x, lengths)
    refs = [torch.func.functional_call(module, one_set(w, b), (x[b : b + 1], lengths[b : b + 1])) for b in range(B)]
    torch.testing.assert_close(out, torch.cat([r[0] for r in refs]))
    torch.testing.assert_close(hn, torch.cat([r[1] for r in refs]))
    torch.testing.assert_close(cn, torch.cat([r[2] for r in refs]))
    assert out[0, 3:].abs().max() == 0 and out[2, 1:].abs().max() == 0  # nothing past a sequence's end
    g = torch.randn_like(out)
    got = torch.autograd.grad((out * g).sum() + hn.sum(), list(w.values()))
    want = torch.autograd.grad(sum((r[0] * g[b : b + 1]).sum() + r[1].sum() for b, r in enumerate(refs)), list(w.values()))  # fmt: skip
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    ensemble = target.ensemble({k: v[:2] for k, v in w.items()}, x, lengths)  # 2 weight sets, one batch
    for k in range(2):
        for got_k, want_k in zip(
            ensemble, torch.func.functional_call(module, one_set(w, k), (x, lengths)), strict=True
        ):
            torch.testing.assert_close(got_k[k], want_k)


def _states(h):
    """An RNN's final states as a tuple: ``(h_n,)`` or ``(h_n, c_n)``."""
    return h if isinstance(h, tuple) else (h,)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (nn.LSTM, {"num_layers": 2, "bidirectional": True}),
        (nn.LSTM, {"proj_size": 2}),
        (nn.GRU, {"num_layers": 2}),
        (nn.RNN, {"batch_first": True, "bidirectional": True}),
    ],
)
def test_a_packed_sequence_as_the_targets_input_per_sample_and_ensemble_equal_loops(cls, kwargs):
    torch.manual_seed(0)
    module = cls(3, 4, **kwargs)
    target = Target(module)
    B, K = 3, 2
    w = {k: v.requires_grad_(True) for k, v in random_weights(target.spec, B).items()}
    x, lengths = torch.randn(5, B, 3), torch.tensor([2, 5, 4])  # unsorted: packing sorts them
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)

    out, h = target(w, packed)  # sequence b with weight set b
    assert isinstance(out, nn.utils.rnn.PackedSequence)
    torch.testing.assert_close(out.sorted_indices, packed.sorted_indices)
    padded, _ = nn.utils.rnn.pad_packed_sequence(out)
    refs = []
    for b in range(B):
        one = nn.utils.rnn.pack_padded_sequence(x[:, b : b + 1], lengths[b : b + 1])
        o, hb = functional_call(module, one_set(w, b), (one,))
        refs.append((nn.utils.rnn.pad_packed_sequence(o)[0][:, 0], _states(hb)))
        torch.testing.assert_close(padded[: lengths[b], b], refs[b][0])
        for got, want in zip(_states(h), refs[b][1], strict=True):
            torch.testing.assert_close(got[:, b : b + 1], want)
    g = torch.randn_like(out.data)
    got = torch.autograd.grad((out.data * g).sum() + _states(h)[0].sum(), list(w.values()))
    g_padded = nn.utils.rnn.pad_packed_sequence(out._replace(data=g))[0]
    loss = sum((r[0] * g_padded[: lengths[b], b]).sum() + r[1][0].sum() for b, r in enumerate(refs))
    for a, b in zip(got, torch.autograd.grad(loss, list(w.values())), strict=True):
        torch.testing.assert_close(a, b)

    # ensemble: K weight sets on the same sequences; the output stays packed, K * B sequences,
    # member-major; the final states are (K, layers * directions, B, hidden)
    wk = {k: v[:K] for k, v in w.items()}
    out, h = target.ensemble(wk, packed)
    assert int(out.batch_sizes[0]) == K * B
    padded, _ = nn.utils.rnn.pad_packed_sequence(out)
    for k in range(K):
        o, hk = functional_call(module, one_set(wk, k), (packed,))
        torch.testing.assert_close(padded[:, k * B : (k + 1) * B], nn.utils.rnn.pad_packed_sequence(o)[0])
        for got, want in zip(_states(h), _states(hk), strict=True):
            assert got.shape == (K, *want.shape)
            torch.testing.assert_close(got[k], want)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
def test_ensemble_splits_an_rnns_final_states_at_their_own_batch_dim(cls):
    """h_n (layers * directions, batch, hidden) carries its batch at dim 1 whatever batch_first
    says; with 2 layers, K = 2 and one sample, its dim 0 also has size K * N."""
    torch.manual_seed(0)
    module = cls(3, 4, num_layers=2, batch_first=True)
    target = Target(module)
    K = 2
    w = random_weights(target.spec, K)
    x = torch.randn(1, 6, 3)
    out, h = target.ensemble(w, x)
    assert out.shape == (K, 1, 6, 4)
    for k in range(K):
        o, hk = functional_call(module, one_set(w, k), (x,))
        torch.testing.assert_close(out[k], o)
        for got, want in zip(_states(h), _states(hk), strict=True):
            assert got.shape == (K, 2, 1, 4)
            torch.testing.assert_close(got[k], want)


def _seq_case(name: str):
    """(module, batch_dim, args, kwargs) of an attention, transformer or RNN layer whose masks
    or states keep their batch at a dim of their own; sizes chosen so that a mask's or state's
    other dims equal the batch N = 4 (where a replication at the wrong dim still fits)."""
    g = torch.Generator().manual_seed(3)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    kpm = torch.zeros(4, 4, dtype=torch.bool)
    kpm[0, 3] = kpm[2, 1] = True
    if name == "mha_seq_first_masks":  # (L, N, E), key_padding_mask (N, S), 3-D mask (N*h, L, S)
        x = r(4, 4, 8)
        mask = r(8, 4, 4)
        return nn.MultiheadAttention(8, 2), 1, (x, x, x), {"key_padding_mask": kpm, "attn_mask": mask, "average_attn_weights": False}  # fmt: skip
    if name == "mha_batch_first_masks":  # 2-D mask (L, S) with L == N: shared by every sample
        x = r(4, 4, 8)
        return nn.MultiheadAttention(8, 2, batch_first=True), 0, (x, x, x), {"attn_mask": r(4, 4), "key_padding_mask": kpm}  # fmt: skip
    if name == "mha_batch_first_3d_mask":
        x = r(4, 6, 8)
        return nn.MultiheadAttention(8, 2, batch_first=True), 0, (x, x, x), {"attn_mask": r(8, 6, 6)}
    if name == "encoder_layer_seq_first":
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)
        return layer, 1, (r(4, 4, 8),), {"src_key_padding_mask": kpm, "src_mask": r(4, 4)}
    if name == "decoder_layer_batch_first":
        layer = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        causal = nn.Transformer.generate_square_subsequent_mask(4)
        return layer, 0, (r(4, 4, 8), r(4, 4, 8)), {"tgt_mask": causal, "memory_key_padding_mask": kpm}
    if name == "gru_batch_first_h0":  # h0 (layers, N, H): batch at dim 1
        return nn.GRU(3, 4, num_layers=4, batch_first=True), 0, (r(4, 5, 3), r(4, 4, 4)), {}
    if name == "lstm_time_first_state":
        return nn.LSTM(3, 4), 1, (r(5, 4, 3), (r(1, 4, 4), r(1, 4, 4))), {}
    raise KeyError(name)


SEQ_CASES = [
    "mha_seq_first_masks",
    "mha_batch_first_masks",
    "mha_batch_first_3d_mask",
    "encoder_layer_seq_first",
    "decoder_layer_batch_first",
    "gru_batch_first_h0",
    "lstm_time_first_state",
]


@pytest.mark.parametrize("name", SEQ_CASES)
def test_ensemble_of_attention_transformer_and_rnn_layers_with_masks_and_states_equals_a_loop(name):
    """Each argument is repeated at its own batch dim (masks and states keep theirs), each
    output split at its own: member k equals the plain layer with weight set k."""
    torch.manual_seed(0)
    module, bd, args, kwargs = _seq_case(name)
    module.eval()
    target = Target(module, batch_dim=bd)
    K = 3
    w = {k: v.requires_grad_(True) for k, v in random_weights(target.spec, K).items()}
    got = target.ensemble(w, *args, **kwargs)
    refs = [functional_call(module, one_set(w, k), args, kwargs) for k in range(K)]
    got_leaves = pytree.tree_leaves(got)
    ref_leaves = [pytree.tree_leaves(r) for r in refs]
    assert len(got_leaves) == len(ref_leaves[0])
    for i, leaf in enumerate(got_leaves):
        want = torch.stack([r[i] for r in ref_leaves])
        assert leaf.shape == want.shape, (i, leaf.shape, want.shape)
        torch.testing.assert_close(leaf, want)
    g = [torch.randn_like(leaf) for leaf in got_leaves]
    loss = sum((a * b).sum() for a, b in zip(got_leaves, g))
    ref_loss = sum((torch.stack([r[i] for r in ref_leaves]) * g[i]).sum() for i in range(len(g)))
    for a, b in zip(torch.autograd.grad(loss, list(w.values())), torch.autograd.grad(ref_loss, list(w.values())), strict=True):  # fmt: skip
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kind", ["add_bias_kv", "add_zero_attn"])
def test_attention_under_vmap_splits_masks_and_weights_at_their_own_dims(kind, batch_first):
    """Attention with add_bias_kv or add_zero_attn runs under vmap: a 3-D mask (B*h, L, S) is
    split per sample (also when passed by position) and the attention weights (B, L, S) come
    back with their batch at dim 0 whatever batch_first says."""
    torch.manual_seed(0)
    module = nn.MultiheadAttention(8, 2, batch_first=batch_first, **{kind: True})
    bd = 0 if batch_first else 1
    target = Target(module, batch_dim=bd)
    B, L = 3, 4
    w = random_weights(target.spec, B)
    x = torch.randn(B, L, 8) if batch_first else torch.randn(L, B, 8)
    S = L + 1  # one more key: the learned bias or the zero (the layer pads the mask to match)
    mask = torch.randn(B * 2, L, L)
    for call_kwargs, call_args in (({"attn_mask": mask}, (x, x, x)), ({}, (x, x, x, None, True, mask))):
        out, weights = target(w, *call_args, **call_kwargs)
        for b in range(B):
            xb = x[b : b + 1] if batch_first else x[:, b : b + 1]
            o, wb = functional_call(module, one_set(w, b), (xb, xb, xb), {"attn_mask": mask[2 * b : 2 * b + 2]})
            torch.testing.assert_close(out[b : b + 1] if batch_first else out[:, b : b + 1], o)
            assert weights.shape == (B, L, S)
            torch.testing.assert_close(weights[b : b + 1], wb)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("mode", ["per_sample", "ensemble"])
def test_an_unbatched_rnn_input_with_batched_weights_is_refused(mode):
    target = Target(nn.GRU(3, 4))
    before = state(target.module)
    w = random_weights(target.spec, 5)
    with pytest.raises(ValueError, match=r"GRU with batched weights expected a batched (\(3-D\) )?input.*unbatched"):
        target.run(w, torch.randn(5, 3), mode=mode)  # one sequence of 5 steps, not 5 samples
    assert_unchanged(target.module, before)


def test_a_packed_sequence_is_refused_where_it_cannot_be_split():
    packed = nn.utils.rnn.pack_padded_sequence(torch.randn(5, 3, 3), torch.tensor([2, 5, 4]), enforce_sorted=False)
    vmapped = Target(nn.LSTM(3, 4), per_sample="vmap")
    w = random_weights(vmapped.spec, 3)
    for mode in ("per_sample", "ensemble"):
        with pytest.raises(ValueError, match="LSTM runs under vmap .* got a PackedSequence; pad it first"):
            vmapped.run(w, packed, mode=mode)
    target = Target(nn.LSTM(3, 4))
    with pytest.raises(ValueError, match="at least one weight set with a PackedSequence input, got K = 0"):
        target.ensemble({k: v[:0] for k, v in w.items()}, packed)
    with pytest.raises(ValueError, match="weights have batch 2 but the input has batch 3"):
        target.per_sample({k: v[:2] for k, v in w.items()}, packed)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64, torch.int64])
@pytest.mark.parametrize("entry", ["call", "shared", "per_sample", "ensemble", "materialize"])
def test_weights_of_another_dtype_name_the_tensor(dtype, entry):
    module = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    target = Target(module)
    batched = entry in ("per_sample", "ensemble")
    w = random_weights(target.spec, *((2,) if batched else ()))
    w["1.weight"] = w["1.weight"].to(dtype)
    before = state(module)
    with pytest.raises(TypeError, match=rf"1.weight: expected torch.float32 \(the module's parameter\), got {dtype}"):
        fn = {
            "call": target,
            "shared": target.shared,
            "per_sample": target.per_sample,
            "ensemble": target.ensemble,
            "materialize": lambda w, x: target.materialize(w),
        }[entry]
        fn(w, torch.randn(2, 4))
    assert_unchanged(module, before)


def test_meta_weights_refused():
    target = Target(nn.Linear(4, 3))
    w = random_weights(target.spec)
    w["bias"] = torch.empty(3, device="meta")
    with pytest.raises(ValueError, match=r"bias: expected a tensor on cpu .*got one on meta, which holds no values"):
        target(w, torch.randn(2, 4))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch_dim": "0"}, TypeError, r"batch_dim must be an int >= 0, got '0' \(str\)"),
        ({"batch_dim": True}, TypeError, r"batch_dim must be an int >= 0, got True \(bool\)"),
        ({"batch_dim": -1}, ValueError, r"batch_dim must be an int >= 0, got -1"),
        ({"per_sample": ...}, TypeError, r"per_sample must be 'auto' or 'vmap', got Ellipsis \(ellipsis\)"),
        ({"per_sample": "fast"}, ValueError, r"per_sample must be 'auto' or 'vmap', got 'fast'"),
        ({"channels_last": 1}, TypeError, r"channels_last must be a bool"),
        ({"select": nn.Linear(4, 3)}, TypeError, r"Target: select must be .*got a module instance Linear"),
        ({"select": int}, TypeError, r"Target: select types must be nn.Module subclasses, got \['int'\]"),
        ({"select": 3}, TypeError, r"Target: select must be .*got 3 \(int\)"),
        ({"select": ["0.*", 1]}, TypeError, r"Target: select must be"),
        ({"spec": {"weight": (3, 4)}}, TypeError, r"spec must be a WeightSpec, got dict"),
    ],
)
def test_constructor_arguments_checked(kwargs, error, match):
    with pytest.raises(error, match=match):
        Target(nn.Sequential(nn.Linear(4, 3)), **kwargs)


def test_select_and_spec_together_refused():
    module = nn.Linear(4, 3)
    with pytest.raises(ValueError, match="either select or spec, not both"):
        Target(module, "weight", spec=Target(module).spec)


# ------------------------------------------------------------------ structure changes


def mlp():
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("built_from", ["select", "spec"])
def test_replaced_layer_is_used_not_the_cached_one(built_from):
    torch.manual_seed(0)
    net = mlp()
    target = Target(net) if built_from == "select" else Target(net, spec=Target(net).spec)
    x = torch.randn(4, 6)
    w, wb = random_weights(target.spec), random_weights(target.spec, 4)
    target(w, x), target(wb, x), target.ensemble(wb, x)  # plans cached
    net[2] = nn.Linear(8, 3)
    net[1] = nn.Tanh()
    torch.testing.assert_close(target(w, x), functional_call(net, w, (x,)))
    torch.testing.assert_close(target(wb, x), per_sample_loop(target, wb, x), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(target.ensemble(wb, x), ensemble_loop(target, wb, x), atol=1e-5, rtol=1e-4)
    own = target.default_weights()
    torch.testing.assert_close(own["2.weight"], net[2].weight)


def test_replaced_parameter_object_is_used():
    net = mlp()
    target = Target(net)
    x = torch.randn(4, 6)
    wb = random_weights(target.spec, 4)
    target(wb, x)
    net[2].weight = nn.Parameter(torch.randn(3, 8))
    torch.testing.assert_close(target(wb, x), per_sample_loop(target, wb, x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda net: net.__setitem__(2, nn.Linear(8, 4)), r"Reshaped: \['2.weight: \(3, 8\) -> \(4, 8\)', "),
        (lambda net: net.append(nn.Linear(3, 3)), r"Newly selected: \['3.weight', '3.bias'\]"),
        (lambda net: net.__delitem__(2), r"No longer parameters: \['2.weight', '2.bias'\]"),
        (
            lambda net: parametrize.register_parametrization(net[0], "weight", Double()),
            r"No longer parameters: \['0.weight'\]. Newly selected: \['0.parametrizations.weight.original'\]",
        ),
        (lambda net: nn.utils.weight_norm(net[2]), r"No longer parameters: \['2.weight'\]"),
        (lambda net: setattr(net[0], "bias", None), r"No longer parameters: \['0.bias'\]"),
    ],
)
def test_structure_change_that_breaks_the_spec_is_refused(change, match):
    net = mlp()
    target = Target(net)
    w = random_weights(target.spec)
    x = torch.randn(2, 6)
    target(w, x)
    change(net)
    for fn in (
        lambda: target(w, x),
        lambda: target.run(w, x, mode="shared", validate=False),
        lambda: target.default_weights(),
    ):
        with pytest.raises(ValueError, match="no longer matches its spec") as e:
            fn()
        assert e.match(match)


def test_structure_change_outside_the_selection_replans():
    torch.manual_seed(0)
    net = mlp()
    target = Target(net, "0.*")
    x = torch.randn(4, 6)
    wb = random_weights(target.spec, 4)
    target(wb, x)
    net.append(nn.Linear(3, 2))
    assert target(wb, x).shape == (4, 2)
    torch.testing.assert_close(target(wb, x), per_sample_loop(target, wb, x), atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------ materialize

MATERIALIZE = {**{n: c for n, c in CASES.items()}, **{f"parametrized_{n}": c for n, c in PARAMETRIZED.items()}}


@pytest.mark.parametrize("name", list(MATERIALIZE))
def test_materialize_equals_target_and_round_trips_through_a_state_dict(name):
    torch.manual_seed(0)
    make, data = MATERIALIZE[name]
    module = make()
    target = Target(module)
    before = state(module)
    objects = {n: p for n, p in module.named_parameters()}
    x = data(3)
    w = {k: v.requires_grad_() for k, v in random_weights(target.spec).items()}
    net = target.materialize(w)
    assert type(net) is type(module)
    torch.testing.assert_close(net(x), target(w, x), atol=1e-6, rtol=1e-6)
    for n, p in net.named_parameters():
        assert type(p) is nn.Parameter and p.grad_fn is None, n
        assert p.requires_grad == objects[n].requires_grad, n
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    fresh = make()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    fresh.train(net.training)
    torch.testing.assert_close(fresh(x), net(x), atol=1e-6, rtol=1e-6)
    assert_unchanged(module, before)
    assert all(p is objects[n] for n, p in module.named_parameters())


def test_materialize_keeps_requires_grad_and_ties_and_refuses_batched_weights():
    module = CASES["tied"][0]()
    module.mid.bias.requires_grad_(False)
    target = Target(module)
    net = target.materialize(random_weights(target.spec))
    assert net.out.weight is net.emb.weight
    assert not net.mid.bias.requires_grad and net.mid.weight.requires_grad
    with pytest.raises(ValueError, match=r"got batch shape \(2,\); index one set first"):
        target.materialize(random_weights(target.spec, 2))


class _TiedReadout(nn.Module):
    """A language-model pattern: the embedding's table read directly as the output layer."""

    def __init__(self, V: int = 10, D: int = 6):
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.mix = nn.Linear(D, D)

    def forward(self, idx):
        h = torch.tanh(self.mix(self.emb(idx)))
        assert self.emb.weight.shape == (10, 6)  # metadata reads work in every mode
        return h @ self.emb.weight.T


def test_a_module_reading_a_childs_generated_tensor_is_refused_when_grouped_and_runs_under_vmap():
    # grouped calls give each layer its groups' weights through its own forward; the parent's
    # direct read of self.emb.weight silently got the module's own, never-trained table
    torch.manual_seed(0)
    idx = torch.randint(0, 10, (4, 5))
    module = _TiedReadout()
    target = Target(module)
    w = random_weights(target.spec, 4)
    for call in (lambda: target.per_sample(w, idx), lambda: target.ensemble(w, idx)):
        with pytest.raises(RuntimeError, match=r"\['emb.weight'\] were used outside their own layer's forward \(T\)"):
            call()
    assert isinstance(module.emb.weight, nn.Parameter)  # restored after the error
    vmapped = Target(module, per_sample="vmap")
    want = torch.cat([functional_call(module, {k: v[i] for k, v in w.items()}, (idx[i : i + 1],)) for i in range(4)])
    torch.testing.assert_close(vmapped.per_sample(w, idx), want)
    want_k = torch.stack([functional_call(module, {k: v[i] for k, v in w.items()}, (idx,)) for i in range(4)])
    torch.testing.assert_close(vmapped.ensemble(w, idx), want_k)
    one = {k: v[0] for k, v in w.items()}
    torch.testing.assert_close(target(one, idx), functional_call(module, one, (idx,)))


class _SharedMask(nn.Module):
    """No grouped kernel (it owns a generated tensor): runs under vmap with a second input."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))
        self.conv = nn.Conv2d(2, 3, 3, padding=1)

    def forward(self, x, mask):  # mask (H, W): one mask for every sample
        return self.conv(x) * self.scale.view(1, -1, 1, 1) * mask


def test_a_vmapped_layer_passes_a_tensor_of_another_size_whole_to_every_weight_set():
    # it split every tensor at the batch dim whose size G divided: an ensemble of 4 on 2
    # samples (the mask not repeated, its 4 rows != 8) gave each member a row of the mask
    torch.manual_seed(0)
    module = _SharedMask()
    target = Target(module)
    mask = torch.arange(16.0).reshape(4, 4)
    w = random_weights(target.spec, 4)
    x = torch.randn(2, 2, 4, 4)
    want = torch.stack([functional_call(module, {k: v[i] for k, v in w.items()}, (x, mask)) for i in range(4)])
    torch.testing.assert_close(target.ensemble(w, x, mask), want)
    torch.testing.assert_close(target.ensemble(w, x, mask=mask), want)
    # per sample, a mask whose size at the batch dim differs from the batch's (5 rows, 3 samples)
    w3 = random_weights(target.spec, 3)
    x3, mask5 = torch.randn(3, 2, 5, 4), torch.rand(5, 4)
    want3 = torch.cat(
        [functional_call(module, {k: v[i] for k, v in w3.items()}, (x3[i : i + 1], mask5)) for i in range(3)]
    )
    torch.testing.assert_close(target.per_sample(w3, x3, mask5), want3)


@pytest.mark.parametrize("context", [1, [0, 1, 2, 0]])
def test_embedding_max_norm_inside_a_hypermodel_with_gradients(context):
    # a generated table is a view of the hypernetwork's output: F.embedding's (and the grouped
    # kernel's) in-place renormalisation failed on it whenever gradients were on
    from hyperdnn import MLP, HyperModel, HyperNetwork, TaskEmbedding

    torch.manual_seed(0)
    module = nn.Sequential(nn.Embedding(7, 4, max_norm=0.5), nn.Flatten(), nn.Linear(12, 2))
    target = Target(module)
    model = HyperModel(HyperNetwork(target, TaskEmbedding(3, 4), MLP((8,))), target)
    idx = torch.tensor([[1, 2, 0], [3, 3, 6], [0, 5, 0], [5, 1, 2]])
    out = model(idx, context)
    ids = [context] * 4 if isinstance(context, int) else context
    flat = model.hypernet.generate_flat(torch.tensor(ids))[0]
    gen = model.hypernet.unflatten(flat, True)
    leaves = [{k: v[i].detach().clone().requires_grad_() for k, v in gen.items()} for i in range(4)]
    ref = torch.cat([functional_call(module, leaves[i], (idx[i : i + 1],)) for i in range(4)])
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    (out * g).sum().backward()
    (ref * g).sum().backward()
    # the hypernetwork's gradient is the plain layers' table gradient pulled back through it
    grads = torch.cat([torch.cat([leaves[i][k].grad.reshape(-1) for k in target.spec.names]) for i in range(4)])
    model.zero_grad()
    flat2 = model.hypernet.generate_flat(torch.tensor(ids))[0]
    (flat2 * grads.reshape(flat2.shape)).sum().backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model(idx, context).mul(g).sum().backward()
    for n, grad in want.items():
        torch.testing.assert_close(dict(model.named_parameters())[n].grad, grad, msg=n)


class _OwnerWithBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x)) * self.scale.view(1, -1, 1, 1)


def test_a_batchnorm_with_running_statistics_inside_a_vmapped_module_is_named_in_training():
    # functorch's own message ("Batch norm got a batched tensor ...") named neither the module
    # nor the ways out
    torch.manual_seed(0)
    module = _OwnerWithBatchNorm()
    target = Target(module)
    w = random_weights(target.spec, 4)
    x = torch.randn(4, 3, 5, 5)
    with pytest.raises(
        RuntimeError, match=r"_OwnerWithBatchNorm runs under vmap .* a BatchNorm inside it tracks running"
    ):
        target.per_sample(w, x)
    module.eval()
    want = torch.cat([functional_call(module, {k: v[i] for k, v in w.items()}, (x[i : i + 1],)) for i in range(4)])
    torch.testing.assert_close(target.per_sample(w, x), want)
