"""Fast execution paths: channels-last convolutions, the cached shared-weight swap, the ensemble's
shared first layer and the fused optimizer helper. Each equals the plain path it replaces."""

from __future__ import annotations

import contextlib
import copy
import gc
import math
import weakref

import pytest
import torch
from torch import nn

from hyperdnn import MLP, Chunked, HyperModel, HyperNetwork, Noise, Once, Target, TaskEmbedding
from hyperdnn.target.structure import Chain
from tests.helpers import assert_unchanged, build_case, ensemble_loop, load, per_sample_loop, random_weights, state

CONV_CASES = ["conv2d", "conv2d_bn", "deconv_groupnorm"]


def conv_seq(padding_mode: str = "zeros") -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, padding_mode=padding_mode),
        nn.ReLU(),
        nn.Conv2d(4, 5, 3, stride=2),
        nn.Flatten(),
        nn.Linear(5 * 3 * 3, 2),
    )


class LayoutProbe(nn.Module):
    """Records whether each convolution saw a channels-last input."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 2)
        self.seen: list[bool] = []

    def forward(self, x):
        for conv in (self.conv1, self.conv2):
            self.seen.append(x.is_contiguous(memory_format=torch.channels_last))
            x = torch.relu(conv(x))
        return self.fc(x.flatten(1))


# ------------------------------------------------------------------ channels_last


@pytest.mark.parametrize("name", CONV_CASES)
def test_channels_last_shared_equals_plain_module(name):
    module, target, data = build_case(name, channels_last=True)
    x = data(4)
    w = random_weights(target.spec)
    torch.testing.assert_close(target(w, x), load(module, w)(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", CONV_CASES)
def test_channels_last_per_sample_and_ensemble_equal_loops(name):
    module, target, data = build_case(name, channels_last=True)
    before = state(module)
    B = 6
    x = data(B)
    w = random_weights(target.spec, B)
    out = target(w, x)
    ref = torch.stack([target({k: v[b] for k, v in w.items()}, x[b : b + 1])[0] for b in range(B)])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    xe = data(3)
    ens = target.ensemble(w, xe)
    ref_e = torch.stack([target({k: v[i] for k, v in w.items()}, xe) for i in range(B)])
    torch.testing.assert_close(ens, ref_e, atol=1e-5, rtol=1e-4)
    assert_unchanged(module, before)


def test_channels_last_reaches_every_convolution_in_every_mode():
    torch.manual_seed(0)
    probe = LayoutProbe()
    x = torch.randn(4, 3, 6, 6)
    for channels_last in (False, True):
        target = Target(probe, channels_last=channels_last)
        w1 = random_weights(target.spec)
        wb = random_weights(target.spec, 4)
        for weights, inputs, run in ((w1, x, target), (wb, x, target), (wb, x[:2], target.ensemble)):
            probe.seen.clear()
            run(weights, inputs)
            assert probe.seen == [channels_last] * 2


def test_channels_last_gradients_equal_the_default_layout():
    torch.manual_seed(0)
    module = conv_seq()
    x = torch.randn(5, 3, 7, 7)
    grads = []
    for channels_last in (False, True):
        target = Target(module, channels_last=channels_last)
        w = {k: v.requires_grad_() for k, v in random_weights(target.spec, 5).items()}
        target(w, x).square().sum().backward()
        grads.append({k: v.grad for k, v in w.items()})
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], atol=1e-5, rtol=1e-4)


def test_channels_last_must_be_a_bool():
    with pytest.raises(TypeError, match="channels_last must be a bool"):
        Target(nn.Conv2d(1, 2, 3), channels_last="yes")


# ------------------------------------------------------------------ shared swap


def test_shared_call_restores_parameters_after_success_and_failure():
    module = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    params = dict(module.named_parameters())
    before = state(module)
    target = Target(module)
    w = random_weights(target.spec)
    target(w, torch.randn(3, 4))
    with pytest.raises(RuntimeError):
        target(w, torch.randn(3, 7))  # wrong input width fails inside the module
    assert dict(module.named_parameters()) == params
    assert all(isinstance(p, nn.Parameter) for p in module.parameters())
    assert_unchanged(module, before)


def test_shared_call_follows_tied_parameters():
    module, target, data = build_case("tied")
    w = random_weights(target.spec)
    x = data(3)
    torch.testing.assert_close(target(w, x), load(module, w)(x))
    assert module.out.weight is module.emb.weight


# ------------------------------------------------------------------ ensemble first layer


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)),
        lambda: conv_seq(),
        lambda: conv_seq("reflect"),
    ],
    ids=["linear", "conv", "conv_reflect"],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_ensemble_shared_first_layer_equals_loop_and_its_gradients(make, channels_last):
    torch.manual_seed(0)
    module = make()
    target = Target(module, channels_last=channels_last)
    first = module[0]
    x = torch.randn(4, 6) if isinstance(first, nn.Linear) else torch.randn(4, 3, 7, 7)
    K = 3
    w = {k: v.requires_grad_() for k, v in random_weights(target.spec, K).items()}
    out = target.ensemble(w, x)
    torch.testing.assert_close(out, ensemble_loop(target, w, x), atol=1e-5, rtol=1e-4)
    out.square().sum().backward()
    got = {k: v.grad.clone() for k, v in w.items()}
    # the same call through the replicated-input path: per sample on K copies of x
    w2 = {k: v.detach().clone().requires_grad_() for k, v in w.items()}
    rep = {k: v.repeat_interleave(x.shape[0], dim=0) for k, v in w2.items()}
    target(rep, x.repeat(K, *[1] * (x.dim() - 1))).square().sum().backward()
    for k in got:
        torch.testing.assert_close(got[k], w2[k].grad, atol=1e-4, rtol=1e-4)


def test_ensemble_first_layer_with_module_owned_bias():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    target = Target(module, select=["0.weight", "2.*"])
    w = random_weights(target.spec, 4)
    x = torch.randn(5, 6)
    torch.testing.assert_close(target.ensemble(w, x), ensemble_loop(target, w, x), atol=1e-5, rtol=1e-4)


def test_ensemble_with_hooks_keeps_them_running():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    calls = []
    handle = module[0].register_forward_hook(lambda m, i, o: calls.append(o.shape))
    try:
        target = Target(module)
        w = random_weights(target.spec, 4)
        x = torch.randn(5, 6)
        out = target.ensemble(w, x)
        assert calls == [torch.Size([20, 8])]  # the hook saw the replicated batch
        calls.clear()
        torch.testing.assert_close(out, ensemble_loop(target, w, x), atol=1e-5, rtol=1e-4)
    finally:
        handle.remove()


def test_noise_hypermodel_ensemble_uses_the_first_layer_path_and_trains():
    torch.manual_seed(0)
    target = Target(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)))
    model = HyperModel(HyperNetwork(target, Noise(4), MLP(()), Chunked(16, 4, (8,))), target)
    z = torch.randn(5, 4)
    x = torch.randn(7, 6)
    out = model(x, z)
    assert out.shape == (5, 7, 3)
    torch.testing.assert_close(out, ensemble_loop(target, model.hypernet(z), x), atol=1e-5, rtol=1e-4)
    out.sum().backward()
    assert all(p.grad is not None for p in model.hypernet.head.parameters())


# ------------------------------------------------------------------ HyperModel


def task_model() -> HyperModel:
    target = Target(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)))
    return HyperModel(HyperNetwork(target, TaskEmbedding(3, 5), MLP((8,))), target)


def test_adam_is_fused_on_cpu_and_steps_like_plain_adam():
    torch.manual_seed(0)
    model = task_model()
    twin = copy.deepcopy(model)
    opt = model.adam(lr=1e-2)
    assert opt.defaults["fused"] is True
    assert [p for g in opt.param_groups for p in g["params"]] == model.trainable_parameters()
    ref = torch.optim.Adam(twin.trainable_parameters(), lr=1e-2, foreach=False)
    x = torch.randn(5, 4)
    for m, o in ((model, opt), (twin, ref)):
        for _ in range(3):
            o.zero_grad()
            m(x, 1).square().mean().backward()
            o.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_adam_respects_an_explicit_implementation():
    model = task_model()
    assert model.adam(fused=False).defaults["fused"] is False
    assert model.adam(foreach=True).defaults["foreach"] is True
    assert model.adam(weight_decay=0.1).defaults["weight_decay"] == 0.1


def test_hypermodel_modes_still_reject_wrong_batching():
    model = task_model()
    x = torch.randn(3, 4)
    # refused by HyperModel, naming the forced mode (the target's message named Target.*)
    with pytest.raises(ValueError, match="mode='ensemble' runs a batch of contexts"):
        model(x, 1, mode="ensemble")
    with pytest.raises(ValueError, match="mode='per_sample' runs a batch of contexts"):
        model(x, 1, mode="per_sample")
    with pytest.raises(ValueError, match="mode='shared' runs one unbatched context, got a batch of 3"):
        model(x, torch.tensor([0, 1, 2]), mode="shared")
    with pytest.raises(
        ValueError, match="TaskEmbedding runs one weight set per input sample .* the context has 2 items and x has 3"
    ):
        model(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="weights have batch 2 but the input has batch 3"):
        model(x, torch.tensor([0, 1]), mode="per_sample")
    assert model(x, torch.tensor([0, 1, 2])).shape == (3, 2)
    assert model(x, torch.tensor([0, 1]), mode="ensemble").shape == (2, 3, 2)


# ------------------------------------------------------------------ hyperfan affine


@pytest.mark.parametrize("raw_shape", [(3, 7), (1, 7), (7,)])
def test_hyperfan_affine_matches_addcmul_with_first_and_second_derivatives(raw_shape):
    from hyperdnn.hypernet import _Affine

    torch.manual_seed(0)
    mean, scale = (torch.randn(7, dtype=torch.double, requires_grad=True) for _ in range(2))
    raw = torch.randn(*raw_shape, dtype=torch.double, requires_grad=True)
    torch.testing.assert_close(_Affine.apply(mean, scale, raw), torch.addcmul(mean, scale, raw))
    assert torch.autograd.gradcheck(_Affine.apply, (mean, scale, raw))
    assert torch.autograd.gradgradcheck(_Affine.apply, (mean, scale, raw))


def test_hyperfan_affine_under_vmap_and_with_a_learned_theta0():
    from torch.func import grad, vmap

    from hyperdnn.hypernet import _Affine

    mean, scale, raw = torch.randn(7), torch.rand(7), torch.randn(5, 7)
    per_row = vmap(grad(lambda r: _Affine.apply(mean, scale, r).square().sum()))(raw)
    torch.testing.assert_close(per_row, 2 * (mean + scale * raw) * scale)
    target = Target(nn.Sequential(nn.Linear(4, 3)))
    hnet = HyperNetwork(target, TaskEmbedding(2, 3), MLP((5,)), residual="target", learn_theta0=True)
    hnet(torch.tensor([0, 1, 1]))["0.weight"].sum().backward()
    assert hnet.theta_mean.grad is not None and hnet.theta_mean.grad.shape == hnet.theta_mean.shape


def test_hypernet_gives_the_same_weights_and_gradients_either_side_of_the_affine_threshold(monkeypatch):
    import hyperdnn.hypernet as hypernet

    torch.manual_seed(0)
    target = Target(nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 2)))
    hnet = HyperNetwork(target, TaskEmbedding(3, 5), MLP((8,)), Chunked(7, 3))
    ids = torch.tensor([0, 2, 1])
    results = []
    for threshold in (0, 1 << 40):
        monkeypatch.setattr(hypernet, "_AFFINE_FUNCTION_MIN_NUMEL", threshold)
        hnet.zero_grad()
        w = hnet(ids)
        sum((v * torch.arange(v.numel()).reshape(v.shape)).sum() for v in w.values()).backward()
        results.append(({k: v.detach() for k, v in w.items()}, {n: p.grad.clone() for n, p in hnet.named_parameters()}))
    for a, b in zip(results[0], results[1]):
        for k in a:
            torch.testing.assert_close(a[k], b[k])


@pytest.mark.parametrize("head", ["chunked", "once"])
def test_generated_weights_follow_every_write_to_theta_mean(head):
    # eager mode once skipped the mean while it was zero, keyed on the buffer's version: a
    # write through ``.data`` (in place or assigned) does not bump it and was silently ignored
    torch.manual_seed(0)
    target = Target(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)))
    hnet = HyperNetwork(target, TaskEmbedding(3, 5), MLP((8,)), Chunked(7, 3) if head == "chunked" else Once())
    assert not bool(hnet.theta_mean.any())

    def expected():  # reads the mean without the ``hnet.theta_mean`` attribute
        raw = hnet.head(hnet.trunk(hnet.conditioner(1).c))
        return torch.addcmul(hnet._mean(), hnet.theta_scale, raw).squeeze(0)

    def check(mean: float) -> None:
        got = hnet.spec.flatten(hnet(1))
        torch.testing.assert_close(got, expected())
        torch.testing.assert_close(got - mean, expected() - hnet._mean())
        hnet(1)  # the shortcut's state as it is after a call, before the next write

    check(0.0)
    state = hnet.state_dict()
    state["theta_mean"] = torch.full_like(state["theta_mean"], 0.5)
    hnet.load_state_dict(state)  # an in-place copy
    check(0.5)
    assert float(hnet.spec.flatten(hnet(1)).detach().mean()) > 0.3
    with torch.no_grad():
        hnet.state_dict()["theta_mean"].zero_()  # shares the buffer's version counter
    check(0.0)
    hnet.theta_mean.data.fill_(0.25)  # in place, the version counter untouched
    check(0.25)
    hnet.theta_mean.data = torch.full_like(hnet._mean(), -0.5)  # new data, same tensor object
    check(-0.5)


def test_hypernet_under_torch_func_transforms():
    from torch.func import functional_call, grad

    torch.manual_seed(0)
    target = Target(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)))
    hnet = HyperNetwork(target, TaskEmbedding(3, 5), MLP((8,)))
    params = {k: v.detach() for k, v in hnet.named_parameters()}
    buffers = dict(hnet.named_buffers())

    def loss(p):
        return sum(w.square().sum() for w in functional_call(hnet, {**p, **buffers}, (1,)).values())

    g = grad(loss)(params)
    loss_eager = sum(w.square().sum() for w in hnet(1).values())
    loss_eager.backward()
    for k, p in hnet.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(g[k], p.grad)


def _once_weights_and_grads(hnet: HyperNetwork, context: torch.Tensor, folded: bool):
    """Flat weights and parameter gradients, through ``hnet`` (``folded``) or through the
    unfolded reference ``theta_scale * head(trunk(c))``."""
    hnet.zero_grad()
    if folded:
        flat = hnet.generate_flat(context)[0]
    else:
        flat = hnet.theta_scale * hnet.head(hnet.trunk(hnet.conditioner(context).c))
    (flat * torch.linspace(-1, 1, flat.numel()).reshape(flat.shape)).sum().backward()
    return flat.detach(), {n: p.grad.clone() for n, p in hnet.named_parameters()}


@pytest.mark.parametrize("bias", [True, False])
def test_generate_once_folds_the_hyperfan_scale_for_many_contexts_with_the_same_weights_and_gradients(bias):
    # more contexts (16) than features (8): the scale goes into the head's weight (8 x 62
    # numbers) instead of the output (16 x 62); the same math, so the same weights and gradients
    from hyperdnn.conditioners import Continuous

    torch.manual_seed(0)
    target = Target(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 8 if bias else 2)))
    hnet = HyperNetwork(target, Continuous(3), MLP((8,)))
    if not bias:
        hnet.head.linear.bias = None
    c = torch.rand(16, 3)
    calls = []
    original = torch.nn.functional.linear

    def spy(x, w, b=None):
        calls.append(tuple(w.shape))
        return original(x, w, b)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.nn.functional, "linear", spy)
        got, got_grads = _once_weights_and_grads(hnet, c, folded=True)
    assert (hnet.spec.numel, 8) in calls  # the folded call: F.linear with the scaled weight
    want, want_grads = _once_weights_and_grads(hnet, c, folded=False)
    torch.testing.assert_close(got, want)
    assert got_grads.keys() == want_grads.keys()
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], msg=name)


def test_generate_once_does_not_fold_for_few_contexts_or_hooks_and_folds_a_mean_into_the_bias():
    from hyperdnn.conditioners import Continuous

    torch.manual_seed(0)
    target = Target(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)))
    hnet = HyperNetwork(target, Continuous(3), MLP((8,)))
    h = hnet.trunk(hnet.conditioner(torch.rand(16, 3)).c)
    assert hnet._folded_once(hnet.head, h) is not None
    assert hnet._folded_once(hnet.head, h[:8]) is None  # no more contexts than features: nothing to save
    seen = []
    handle = hnet.head.linear.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    assert hnet._folded_once(hnet.head, h) is None
    hnet.generate_flat(torch.rand(16, 3))
    assert seen == [(16, hnet.spec.numel)]  # the hook ran
    handle.remove()
    with torch.no_grad():
        hnet.theta_mean.copy_(torch.linspace(-0.5, 0.5, hnet.spec.numel))
    c = torch.rand(16, 3)
    want = hnet.theta_mean + hnet.theta_scale * hnet.head(hnet.trunk(hnet.conditioner(c).c))
    torch.testing.assert_close(hnet._folded_once(hnet.head, hnet.trunk(hnet.conditioner(c).c)), want)
    torch.testing.assert_close(hnet.generate_flat(c)[0], want)
    # a learnable mean (residual form) gets the same gradient folded or not
    hnet.theta_mean = nn.Parameter(hnet.theta_mean.clone())
    grads = []
    for folded in (True, False):
        hnet.zero_grad()
        flat = hnet.generate_flat(c)[0] if folded else hnet._affine(hnet.head(hnet.trunk(hnet.conditioner(c).c)))
        (flat * torch.linspace(-1, 1, flat.numel()).reshape(flat.shape)).sum().backward()
        grads.append({n: p.grad.clone() for n, p in hnet.named_parameters()})
    assert grads[0].keys() == grads[1].keys() and "theta_mean" in grads[0]
    for name in grads[1]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


def test_empty_mlp_trunk_passes_the_context_through_and_keeps_its_hooks():
    torch.manual_seed(0)
    target = Target(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)))
    hnet = HyperNetwork(target, TaskEmbedding(2, 5), MLP(()), Chunked(16, 4))
    c = torch.randn(3, 5)
    assert hnet.trunk(c) is c
    seen = []
    handle = hnet.trunk.register_forward_hook(lambda m, args, out: seen.append(out))
    flat, _ = hnet.generate_flat(1)
    handle.remove()
    assert len(seen) == 1 and torch.equal(seen[0], hnet.conditioner(1).c)
    # the same weights as a hypernet whose trunk runs an (empty) Sequential
    assert torch.equal(flat, hnet.head(hnet.trunk.net(hnet.conditioner(1).c)) * hnet.theta_scale)


def test_token_encoder_checks_the_embeddings_it_is_given():
    from hyperdnn.heads import TokenEncoder

    enc = TokenEncoder(in_features=6, num_tokens=3, embed_dim=4, width=5)
    h = torch.randn(2, 6)
    assert enc(h).shape == (2, 3, 5)
    assert enc(h, torch.randn(7, 4)).shape == (2, 7, 5)
    with pytest.raises(ValueError, match=r"expected embeddings of shape \(n, 4\), got \(7, 3\)"):
        enc(h, torch.randn(7, 3))
    with pytest.raises(ValueError, match=r"expected embeddings of shape \(n, 4\), got \(4,\)"):
        enc(h, torch.randn(4))
    external = TokenEncoder(in_features=6, num_tokens=None, embed_dim=4, width=5)
    with pytest.raises(ValueError, match="holds no embeddings"):
        external(h)


def test_a_learned_zero_mean_frozen_for_one_call_still_trains_after_unfreezing():
    # the zero-mean shortcut's cache did not hold requires_grad: a learned theta0 of zeros seen
    # once while frozen was skipped for good (no gradient, never trained)
    torch.manual_seed(0)
    target = Target(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)))
    hnet = HyperNetwork(target, TaskEmbedding(2, 4), MLP((8,)), residual="neutral", learn_theta0=True)
    assert not bool(hnet.theta_mean.detach().any())
    hnet.requires_grad_(False)
    hnet(0)
    hnet.requires_grad_(True)
    sum(w.sum() for w in hnet(0).values()).backward()
    assert hnet.theta_mean.grad is not None
    torch.testing.assert_close(hnet.theta_mean.grad, torch.ones_like(hnet.theta_mean))


@pytest.mark.parametrize("head", [Once(), Chunked(3, 2, (8,))])
def test_a_forward_mode_tangent_of_an_all_zero_mean_reaches_the_weights(head):
    # the zero-mean shortcut skipped a dual theta_mean of zeros: its tangent was lost (None)
    import torch.autograd.forward_ad as fwAD

    torch.manual_seed(0)
    target = Target(nn.Linear(3, 2))
    hnet = HyperNetwork(target, TaskEmbedding(2, 4), MLP((8,)), head)
    tangent = torch.randn(target.spec.numel)
    with fwAD.dual_level():
        hnet.theta_mean = fwAD.make_dual(torch.zeros(target.spec.numel), tangent)
        flat, _ = hnet.generate_flat(0)
        got = fwAD.unpack_dual(flat).tangent
    assert got is not None
    torch.testing.assert_close(got, tangent.unsqueeze(0))


# ------------------------------------------------------------------ the shared chain


def chain_mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Sequential(nn.Linear(8, 8), nn.GELU()), nn.Linear(8, 3)
    )


def _uses_chain(target: Target) -> bool:
    structure = target._current()
    return structure.chain is not None and structure.chain.usable()


@contextlib.contextmanager
def _without_chain(target: Target):
    """The target's calls through the paths the chain replaces (the chain is rebuilt after)."""
    structure = target._current()
    structure._chain = None
    try:
        yield
    finally:
        structure._chain = False


def _assert_equal_values_and_gradients(call, reference, weights) -> torch.Tensor:
    """``call(weights)`` equals ``reference(weights)`` bit for bit, and so do the weights'
    gradients; returns ``call``'s output."""
    w = {k: v.detach().clone().requires_grad_() for k, v in weights.items()}
    w_ref = {k: v.detach().clone().requires_grad_() for k, v in weights.items()}
    out, ref = call(w), reference(w_ref)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    out.square().sum().backward()
    ref.square().sum().backward()
    for k in w:
        torch.testing.assert_close(w[k].grad, w_ref[k].grad, rtol=0, atol=0)
    return out


@pytest.mark.parametrize("select", [None, ["1.weight", "4.*"]])
def test_shared_chain_equals_the_module_with_the_weights_loaded_values_and_gradients(select):
    torch.manual_seed(0)
    module = chain_mlp()
    target = Target(module, select)
    assert _uses_chain(target)
    x = torch.randn(5, 3, 4)
    _assert_equal_values_and_gradients(
        lambda weights: target(weights, x),
        lambda weights: torch.func.functional_call(module, weights, (x,)),
        random_weights(target.spec),
    )
    # the layers' own (not generated) parameters get their gradients too, and keep their values
    own = [p for n, p in module.named_parameters() if n not in target.spec.names]
    assert (select is None) == (not own)
    assert all(p.grad is not None for p in own)


def test_shared_chain_dropout_follows_the_training_flag():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.5), nn.Linear(16, 2))
    target = Target(module)
    x = torch.randn(8, 6)
    w = random_weights(target.spec)
    torch.manual_seed(1)
    out = target(w, x)
    torch.manual_seed(1)
    ref = torch.func.functional_call(module, w, (x,))
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    module.eval()
    torch.testing.assert_close(target(w, x), torch.func.functional_call(module, w, (x,)), rtol=0, atol=0)


def _chain_case() -> tuple[nn.Sequential, Target, torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    module = chain_mlp()
    target = Target(module)
    return module, target, torch.randn(5, 12), random_weights(target.spec)


def test_shared_chain_leaves_to_the_module_what_a_hook_or_an_instance_forward_changes():
    module, target, x, w = _chain_case()
    plain = target(w, x)
    handle = module[2].register_forward_hook(lambda m, i, o: o + 1.0)
    assert not _uses_chain(target)
    hooked_out = target(w, x)
    torch.testing.assert_close(hooked_out, torch.func.functional_call(module, w, (x,)))
    assert not torch.allclose(hooked_out, plain)
    handle.remove()
    handle = nn.modules.module.register_module_forward_hook(lambda m, i, o: o)  # a global hook
    try:
        assert not _uses_chain(target)
    finally:
        handle.remove()
    module[1].forward = lambda inp: nn.Linear.forward(module[1], inp) * 2.0
    assert not _uses_chain(target)
    torch.testing.assert_close(target(w, x), torch.func.functional_call(module, w, (x,)))
    del module[1].forward
    assert _uses_chain(target)
    torch.testing.assert_close(target(w, x), plain, rtol=0, atol=0)


@pytest.mark.parametrize("cls", [nn.Linear, nn.ReLU])
def test_shared_chain_steps_aside_when_a_layer_forward_is_patched(monkeypatch, cls):
    # libraries that patch nn.Linear.forward (quantisation, adapters) see their patch run
    module, target, x, w = _relu_chain_case()
    plain = target(w, x)
    original = cls.forward
    monkeypatch.setattr(cls, "forward", lambda self, inp: original(self, inp) + 1.0)
    assert not _uses_chain(target)
    patched = target(w, x)
    torch.testing.assert_close(patched, torch.func.functional_call(module, w, (x,)), rtol=0, atol=0)
    assert not torch.allclose(patched, plain)


def test_shared_chain_follows_a_replaced_layer():
    module, target, x, w = _chain_case()
    target(w, x)
    module[2] = nn.Sigmoid()  # no parameters change: the spec still holds
    torch.testing.assert_close(target(w, x), torch.func.functional_call(module, w, (x,)), rtol=0, atol=0)


class TwiceLinear(nn.Linear):
    """A Linear subclass with a forward of its own."""

    def forward(self, x):
        return 2 * super().forward(x)


class CalledNotForwarded(nn.Module):
    """A leaf whose call is not its forward."""

    def __call__(self, x):
        return x + 1.0

    def forward(self, x):
        return x


class Scaled(nn.Module):
    """A leaf without parameters that reads a tensor held as a plain attribute."""

    def __init__(self, scale: torch.Tensor):
        super().__init__()
        self.__dict__["scale"] = scale

    def forward(self, x):
        return x * self.scale


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)),  # a leaf with buffers
        lambda: nn.Sequential(TwiceLinear(4, 4), nn.Linear(4, 2)),  # a Linear subclass
        lambda: nn.Sequential(nn.Linear(4, 4), Scaled(torch.ones(4))),  # a tensor attribute
        lambda: nn.Sequential(nn.Linear(4, 4), nn.PReLU()),  # a leaf with a parameter
        lambda: nn.Sequential(nn.Linear(4, 4), CalledNotForwarded()),  # its own __call__
    ],
)
def test_modules_that_are_not_plain_chains_run_as_modules(make):
    torch.manual_seed(0)
    module = make()
    target = Target(module)
    assert target._current().chain is None
    x = torch.randn(6, 4)
    w = random_weights(target.spec)
    torch.testing.assert_close(target(w, x), torch.func.functional_call(module, w, (x,)), rtol=0, atol=0)


@pytest.mark.parametrize(
    "select,shape",
    [
        (None, (5, 12)),
        (None, (5, 3, 12)),  # tokens per sample: (B, T, in)
        (["1.weight", "3.0.bias", "4.*"], (5, 12)),  # a weight without its bias, a bias without its weight
    ],
)
def test_per_sample_chain_equals_the_grouped_engine_values_and_gradients(select, shape):
    torch.manual_seed(0)
    module = chain_mlp()
    module[0] = nn.Identity()
    target = Target(module, select)
    assert _uses_chain(target)
    x = torch.randn(*shape)
    w = random_weights(target.spec, shape[0])

    def grouped(weights):
        with _without_chain(target):
            return target.per_sample(weights, x)

    out = _assert_equal_values_and_gradients(lambda weights: target.per_sample(weights, x), grouped, w)
    # and both equal a loop of plain calls, one weight set per sample
    torch.testing.assert_close(out, per_sample_loop(target, w, x), atol=1e-6, rtol=1e-5)


def test_per_sample_chain_steps_aside_for_vmap_and_hooks(monkeypatch):
    def refuse(*args):
        raise AssertionError("the chain ran")

    monkeypatch.setattr(Chain, "run_per_sample", refuse)
    torch.manual_seed(0)
    x = torch.randn(4, 12)
    target = Target(chain_mlp(), per_sample="vmap")  # asked for: the whole module under vmap
    w = random_weights(target.spec, 4)
    torch.testing.assert_close(target.per_sample(w, x), per_sample_loop(target, w, x), atol=1e-6, rtol=1e-5)
    module = chain_mlp()
    target = Target(module)
    calls = []
    module[3][0].register_forward_pre_hook(lambda m, i: calls.append(1))
    torch.testing.assert_close(target.per_sample(w, x), per_sample_loop(target, w, x), atol=1e-6, rtol=1e-5)
    assert calls  # the hook ran in the per-sample call too


def test_ensemble_chain_after_the_shared_first_layer_equals_the_grouped_engine():
    torch.manual_seed(0)
    module = chain_mlp()[1:]  # starts with its Linear: the shared-first-layer path
    target = Target(module)
    assert _uses_chain(target)
    x = torch.randn(5, 12)
    w = random_weights(target.spec, 3)

    def grouped(weights):
        with _without_chain(target):
            return target.ensemble(weights, x)

    out = _assert_equal_values_and_gradients(lambda weights: target.ensemble(weights, x), grouped, w)
    torch.testing.assert_close(out, ensemble_loop(target, w, x), atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------ per-tensor scales in the chain


def _reference_model_output(model: HyperModel, x: torch.Tensor, context) -> torch.Tensor:
    """The target run per sample on the hypernetwork's scaled weights, through the grouped
    engine (no chain, nothing deferred)."""
    weights = model.hypernet(context)
    with _without_chain(model.target):
        return model.target.per_sample(weights, x)


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same_output_and_gradients(model: nn.Module, out: torch.Tensor, reference) -> None:
    """``out`` equals ``reference()`` (run afterwards on the same model), and so do the model's
    parameter gradients of the two outputs' sums of squares."""
    out.square().sum().backward()
    got = _grads(model)
    model.zero_grad(set_to_none=True)
    ref = reference()
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    ref.square().sum().backward()
    want = _grads(model)
    assert set(got) == set(want) and got
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("head", [Once(), Chunked(40, 4)])
@pytest.mark.parametrize("shape", [(6, 12), (6, 5, 12)])
def test_per_sample_chain_takes_the_hyperfan_scales_values_and_gradients(head, shape, monkeypatch):
    from hyperdnn.conditioners import DataEncoder
    from hyperdnn.target import kernels

    torch.manual_seed(0)
    module = chain_mlp()
    module[0] = nn.Identity()
    target = Target(module)
    x = torch.randn(*shape)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape[1:]), 7))
    hnet = HyperNetwork(target, DataEncoder(encoder, 7), MLP((16,)), head)
    model = HyperModel(hnet, target)
    scales = hnet._tensor_scales()
    assert scales is not None and set(scales) == set(target.spec.names)
    seen = []
    plain = kernels.grouped_linear

    def spy(*args):
        seen.append(args[6:])
        return plain(*args)

    monkeypatch.setattr("hyperdnn.target.structure.grouped_linear", spy)
    out = model(x)
    # every generated Linear took its two scales; none was 1 (they were folded, not applied)
    assert len(seen) == 3 and all(len(s) == 2 and 1.0 not in s for s in seen)
    _assert_same_output_and_gradients(model, out, lambda: _reference_model_output(model, x, x))


def test_grouped_linear_puts_the_weight_scale_on_the_smaller_operand():
    from hyperdnn.target.kernels import grouped_linear

    torch.manual_seed(0)
    w, b = torch.randn(3, 4, 6), torch.randn(3, 4)
    for x in (torch.randn(3, 6), torch.randn(3, 50, 6)):  # input smaller than the weight / larger
        want = grouped_linear(x, 3, w * 0.3, b * 0.7, True, True)
        torch.testing.assert_close(grouped_linear(x, 3, w, b, True, True, 0.3, 0.7), want)
    x = torch.randn(3, 6)
    own_w, own_b = torch.randn(4, 6), torch.randn(4)
    torch.testing.assert_close(
        grouped_linear(x, 3, own_w, b, False, True, 1.0, 0.7), grouped_linear(x, 3, own_w, b * 0.7, False, True)
    )
    torch.testing.assert_close(
        grouped_linear(x, 3, w, own_b, True, False, 0.3, 1.0), grouped_linear(x, 3, w * 0.3, own_b, True, False)
    )


def test_tensor_scales_follow_theta_scale_and_refuse_what_is_not_one_scale_per_tensor():
    torch.manual_seed(0)
    target = Target(chain_mlp())
    hnet = HyperNetwork(target, TaskEmbedding(3, 4), MLP((8,)))
    scales = hnet._tensor_scales()
    first = target.spec.names[0]
    assert scales[first] == pytest.approx(float(hnet.theta_scale[0]))
    # written in place (the version counter), through .data after a read, or replaced
    hnet.load_state_dict({**hnet.state_dict(), "theta_scale": hnet.theta_scale * 2})
    assert hnet._tensor_scales()[first] == pytest.approx(2 * scales[first])
    hnet.theta_scale.data.mul_(0.5)
    assert hnet._tensor_scales()[first] == pytest.approx(scales[first])
    hnet.theta_scale.data[0] += 1.0  # no longer one scale over the first tensor
    assert hnet._tensor_scales() is None
    # a mean that is not zero, or check_finite (which reads the scaled weights): nothing deferred
    assert HyperNetwork(target, TaskEmbedding(3, 4), MLP((8,)), residual="target")._tensor_scales() is None
    assert HyperNetwork(target, TaskEmbedding(3, 4), MLP((8,)), check_finite=True)._tensor_scales() is None


def test_per_sample_chain_with_scales_steps_aside_for_hooks_even_ones_added_during_generation():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))
    target = Target(module)
    hnet = HyperNetwork(target, TaskEmbedding(4, 3), MLP((8,)))
    model = HyperModel(hnet, target)
    x, ids = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 0, 1])
    ref = per_sample_loop(target, hnet(ids), x)
    calls = []
    handle = module[2].register_forward_hook(lambda m, i, o: calls.append(1))
    torch.testing.assert_close(model(x, ids), ref, atol=1e-6, rtol=1e-5)
    assert len(calls) == 1
    handle.remove()
    # a hook that a hypernetwork hook registers on the target while the weights are generated
    added = []

    def add_target_hook(m, i, o):
        added.append(module[0].register_forward_hook(lambda m, i, o: calls.append(2)))

    hnet.head.register_forward_hook(add_target_hook)
    torch.testing.assert_close(model(x, ids), ref, atol=1e-6, rtol=1e-5)
    assert calls[-1] == 2


def test_hypermodel_lean_calls_keep_the_checks_of_the_full_path():
    torch.manual_seed(0)
    target = Target(nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2)))
    model = HyperModel(HyperNetwork(target, TaskEmbedding(4, 3), MLP((8,))), target)
    with pytest.raises(ValueError, match="the context has 3 items and x has 4 samples"):
        model(torch.randn(4, 5), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="task ids must be in"):
        model(torch.randn(4, 5), 4)
    with pytest.raises(ValueError, match="task ids must be in"):
        model(torch.randn(4, 5), -1)
    # an empty batch of data-conditioned weights: the full path's empty call
    from hyperdnn.conditioners import DataEncoder

    model = HyperModel(HyperNetwork(target, DataEncoder(nn.Linear(5, 3), 3), MLP((8,))), target)
    assert model(torch.randn(0, 5)).shape == (0, 2)


def test_hypermodel_calls_a_subclass_generate_flat():
    class Doubled(HyperNetwork):
        def generate_flat(self, context=None):
            flat, batched = super().generate_flat(context)
            return 2 * flat, batched

    torch.manual_seed(0)
    target = Target(nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2)))
    hnet = Doubled(target, TaskEmbedding(4, 3), MLP((8,)))
    model = HyperModel(hnet, target)
    x = torch.randn(3, 5)
    for ctx in (1, torch.tensor([0, 1, 2])):
        weights = hnet.unflatten(*hnet.generate_flat(ctx))
        run = target.shared if isinstance(ctx, int) else target.per_sample
        torch.testing.assert_close(model(x, ctx), run(weights, x), atol=1e-6, rtol=1e-5)


def test_hypernetwork_hidden_layers_run_as_a_chain_with_the_module_results_and_hooks():
    from hyperdnn.target.structure import call_sequential

    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(5, 4, requires_grad=True)
    out = call_sequential(seq, x)
    assert seq.__dict__["_hyperdnn_chain"].chain is not None  # it ran as a chain
    torch.testing.assert_close(out, seq(x), rtol=0, atol=0)
    g = torch.autograd.grad(out.sum(), [x, *seq.parameters()])
    g_ref = torch.autograd.grad(seq(x).sum(), [x, *seq.parameters()])
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    calls = []
    handle = seq[2].register_forward_hook(lambda m, i, o: calls.append(1))
    call_sequential(seq, x)
    assert calls == [1]
    handle.remove()
    seq[1] = nn.Tanh()  # a replaced layer: the chain is rebuilt
    torch.testing.assert_close(call_sequential(seq, x), seq(x), rtol=0, atol=0)
    # parameters swapped for non-leaf tensors (functional_call): their values are used, none
    # is kept, and the module still deep-copies and pickles
    moved = {n: p.detach() + 1.0 for n, p in seq.named_parameters()}
    kept = seq.__dict__["_hyperdnn_chain"]
    with torch.nn.utils.stateless._reparametrize_module(seq, moved):
        swapped = call_sequential(seq, x)
    assert seq.__dict__["_hyperdnn_chain"] is kept  # the same layout: not rebuilt
    torch.testing.assert_close(swapped, torch.func.functional_call(seq, moved, (x,)), rtol=0, atol=0)
    gone = weakref.ref(moved["0.weight"])
    del moved, swapped
    gc.collect()
    assert gone() is None  # the kept chain holds no tensor
    twin = copy.deepcopy(seq)
    torch.testing.assert_close(call_sequential(twin, x), seq(x), rtol=0, atol=0)
    assert twin.__dict__["_hyperdnn_chain"].fingerprint.modules[0] is twin
    import pickle

    torch.testing.assert_close(call_sequential(pickle.loads(pickle.dumps(seq)), x), seq(x), rtol=0, atol=0)
    # in a hypernetwork: the head's hidden layers and the trunk give the module calls' weights
    target = Target(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)))
    hnet = HyperNetwork(target, TaskEmbedding(2, 5), MLP((6,)), Chunked(16, 4, hidden=(12,)))
    h = hnet.trunk.net(hnet.conditioner(1).c)
    torch.testing.assert_close(hnet.trunk(hnet.conditioner(1).c), h, rtol=0, atol=0)
    body = hnet.head.generator.body
    z = hnet.head.generator.encoder(h)
    torch.testing.assert_close(body(z), body.net(z), rtol=0, atol=0)


def _relu_chain_case() -> tuple[nn.Sequential, Target, torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(inplace=True), nn.Linear(6, 2))
    target = Target(module)
    return module, target, torch.randn(5, 4), random_weights(target.spec)


def test_chain_relu_is_the_modules_relu():
    module, target, x, w = _relu_chain_case()
    assert _uses_chain(target)
    _assert_equal_values_and_gradients(
        lambda weights: target(weights, x), lambda weights: torch.func.functional_call(module, weights, (x,)), w
    )


@pytest.mark.parametrize("n", [5, 40])  # the first layer's scale on the shared input, or on the weights
def test_ensemble_chain_takes_the_hyperfan_scales_values_and_gradients(n, monkeypatch):
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2))
    target = Target(module)
    hnet = HyperNetwork(target, Noise(6), MLP((16,)), Chunked(10, 4))
    model = HyperModel(hnet, target)
    z, x = torch.randn(4, 6), torch.randn(n, 4)
    seen = []
    plain = Chain.run_ensemble

    def spy(self, weights, x, K, scales=None):
        seen.append(scales)
        return plain(self, weights, x, K, scales)

    monkeypatch.setattr(Chain, "run_ensemble", spy)
    out = model(x, z)
    assert out.shape == (4, n, 2) and len(seen) == 1 and seen[0] is not None

    def reference():
        weights = hnet(z)
        with _without_chain(target):
            ref = target.ensemble(weights, x)
        torch.testing.assert_close(ref, ensemble_loop(target, weights, x), atol=1e-6, rtol=1e-5)
        return ref

    _assert_same_output_and_gradients(model, out, reference)


def test_ensemble_chain_with_scales_keeps_an_own_bias_and_other_targets_get_scaled_weights():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.randn(5, 4)
    # the first layer's bias is the module's own: repeated for the K sets, never scaled
    target = Target(module, ["0.weight", "2.*"])
    w = random_weights(target.spec, 3)
    scales = {name: 0.5 + i for i, name in enumerate(target.spec.names)}
    scaled = {name: t * scales[name] for name, t in w.items()}
    structure = target._current()
    out = target._ensemble(structure, w, 3, (x,), {}, scales)
    torch.testing.assert_close(out, ensemble_loop(target, scaled, x), atol=1e-6, rtol=1e-5)
    # a target whose chain does not start with a generated Linear: the weights are scaled first
    target = Target(nn.Sequential(nn.Tanh(), nn.Linear(4, 2)))
    w = random_weights(target.spec, 3)
    scales = {name: 0.25 for name in target.spec.names}
    out = target._ensemble(target._current(), w, 3, (x,), {}, scales)
    torch.testing.assert_close(out, ensemble_loop(target, {k: v * 0.25 for k, v in w.items()}, x), atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------ one context, generate once


def _row_case(out_features: int, bias: bool = True, dtype=torch.float32):
    torch.manual_seed(0)
    w = torch.randn(out_features, 40, dtype=dtype, requires_grad=True)
    b = torch.randn(out_features, dtype=dtype, requires_grad=True) if bias else None
    x = torch.randn(1, 40, dtype=dtype, requires_grad=True)
    return x, w, b


@pytest.mark.parametrize("bias", [True, False])
def test_row_linear_equals_linear_in_values_and_gradients(bias):
    from hyperdnn.target import kernels

    x, w, b = _row_case(2 * kernels.MV_MIN_NUMEL // 40, bias)
    g = torch.randn(1, w.shape[0])
    leaves = [t for t in (x, w, b) if t is not None]
    out = kernels.row_linear(x, w, b)
    grads = torch.autograd.grad(out, leaves, g)
    ref = torch.nn.functional.linear(x, w, b)
    ref_grads = torch.autograd.grad(ref, leaves, g)
    assert out.shape == ref.shape == (1, w.shape[0])
    torch.testing.assert_close(out, ref)
    for a, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, r)


def test_row_linear_takes_the_matrix_vector_product_only_where_it_applies(monkeypatch):
    from hyperdnn.target import kernels

    used = []
    real_addmv = torch.addmv
    monkeypatch.setattr(torch, "addmv", lambda *a, **k: used.append(1) or real_addmv(*a, **k))
    x, w, b = _row_case(2 * kernels.MV_MIN_NUMEL // 40)
    kernels.row_linear(x, w, b)
    assert used == [1]
    small = _row_case(8)
    kernels.row_linear(*small)  # a small weight: the ordinary product
    kernels.row_linear(torch.randn(2, 40), w, b)  # two rows
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert kernels.row_linear(x, w, b).dtype == torch.bfloat16  # autocast's product, its dtype
    assert used == [1]
    with pytest.raises(RuntimeError):  # a dtype mismatch gets F.linear's own error
        kernels.row_linear(x.double(), w, b)


def _once_model(out_features: int = 2000) -> HyperModel:
    torch.manual_seed(0)
    target = Target(nn.Sequential(nn.Linear(20, out_features // 20), nn.ReLU(), nn.Linear(out_features // 20, 3)))
    return HyperModel(HyperNetwork(target, TaskEmbedding(4, 8), MLP((48,)), Once()), target)


def _values_and_grads(model: HyperModel, x: torch.Tensor, task: int):
    model.zero_grad(set_to_none=True)
    out = model(x, task)
    out.square().sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_generate_once_for_one_context_matches_the_module_call(monkeypatch):
    from hyperdnn.target import kernels

    model = _once_model()
    linear = model.hypernet.head.linear
    assert linear.weight.numel() >= kernels.MV_MIN_NUMEL
    x = torch.randn(5, 20)
    used = []
    real = kernels.row_linear
    monkeypatch.setattr("hyperdnn.heads.row_linear", lambda *a: used.append(1) or real(*a))
    out, grads = _values_and_grads(model, x, 2)
    assert used == [1]
    handle = linear.register_forward_hook(lambda m, i, o: used.append("hook"))  # forces the module call
    ref, ref_grads = _values_and_grads(model, x, 2)
    handle.remove()
    assert used == [1, "hook"]
    torch.testing.assert_close(out, ref)
    assert grads.keys() == ref_grads.keys()
    assert "hypernet.head.linear.weight" in grads and "hypernet.conditioner.embeddings.2" in grads
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], msg=name)


def test_generate_once_for_one_context_leaves_a_patched_linear_to_its_patch(monkeypatch):
    model = _once_model()
    hnet = model.hypernet
    head = hnet.head.linear
    plain, _ = hnet.generate_flat(1)
    original = nn.Linear.forward
    # a patch of Linear.forward (as quantisation and adapter libraries make) runs for the head
    monkeypatch.setattr(nn.Linear, "forward", lambda self, inp: original(self, inp) + (1.0 if self is head else 0.0))
    patched, _ = hnet.generate_flat(1)
    torch.testing.assert_close(patched - plain, hnet.theta_scale.expand_as(plain))


# ------------------------------------------------------------------ a chunked head's padding


def test_unflatten_prefix_reads_the_first_numel_numbers_and_refuses_fewer():
    from hyperdnn.spec import WeightSpec

    spec = WeightSpec.from_module(nn.Linear(3, 2))
    flat = torch.randn(4, spec.numel + 5)
    got = spec.unflatten_prefix(flat)
    ref = spec.unflatten(flat[:, : spec.numel])
    assert got.keys() == ref.keys()
    for name in ref:
        assert torch.equal(got[name], ref[name])
    exact = torch.randn(spec.numel)
    assert all(torch.equal(a, b) for a, b in zip(spec.unflatten_prefix(exact).values(), spec.unflatten(exact).values()))
    with pytest.raises(ValueError, match=r"n >= 8"):
        spec.unflatten_prefix(torch.randn(2, spec.numel - 1))
    with pytest.raises(ValueError, match=r"n >= 8"):
        spec.unflatten_prefix(torch.tensor(1.0))


def _chunked_model(cond, module: nn.Module | None = None, **hnet_kwargs) -> HyperModel:
    torch.manual_seed(0)
    target = Target(module if module is not None else nn.Sequential(nn.Linear(6, 7), nn.ReLU(), nn.Linear(7, 3)))
    hnet = HyperNetwork(target, cond, MLP((12,)), Chunked(16, 4, (10,)), **hnet_kwargs)
    assert target.spec.numel % 16  # the last chunk has a tail to cut
    return HyperModel(hnet, target)


def _unpadded(model: HyperModel) -> HyperModel:
    """The same model, generating through the slice (the path before the padded one)."""
    other = copy.deepcopy(model)
    hn = other.hypernet
    hn._generate = lambda c, d=None, padded=False: HyperNetwork._generate(hn, c, d, False)
    return other


PADDED_CASES = {
    "shared chain": (lambda: TaskEmbedding(3, 5), lambda: 1, None),
    "per sample": (lambda: TaskEmbedding(3, 5), lambda: torch.tensor([0, 2, 1, 2, 0]), None),
    "ensemble": (lambda: Noise(5), lambda: torch.randn(4, 5), None),
    "shared, not a chain": (
        lambda: TaskEmbedding(3, 5),
        lambda: 2,
        lambda: nn.Sequential(nn.Linear(6, 7), nn.LayerNorm(7), nn.Linear(7, 3)),
    ),
}


@pytest.mark.parametrize("case", list(PADDED_CASES))
def test_padded_chunk_output_gives_the_same_values_and_gradients(case, monkeypatch):
    cond, context, module = PADDED_CASES[case]
    model = _chunked_model(cond(), module() if module else None)
    ref_model = _unpadded(model)
    padded_calls = []
    real = model.hypernet.head.forward_padded
    monkeypatch.setattr(model.hypernet.head, "forward_padded", lambda h: padded_calls.append(1) or real(h))
    x = torch.randn(5, 6)
    c = context()
    out, ref = model(x, c), ref_model(x, c)
    assert padded_calls == [1]
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    out.square().sum().backward()
    ref.square().sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    ref_grads = {n: p.grad for n, p in ref_model.named_parameters() if p.grad is not None}
    assert grads.keys() == ref_grads.keys() and any("head" in n for n in grads)
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-7, rtol=1e-6, msg=name)


def test_padded_scale_follows_theta_scale_and_steps_aside_where_it_cannot_apply():
    model = _chunked_model(TaskEmbedding(3, 5))
    hnet = model.hypernet
    width = hnet.head.num_chunks * hnet.head.chunk_size
    x = torch.randn(4, 6)

    def check():  # the padded call against the slice, after each change
        torch.testing.assert_close(model(x, 1), _unpadded(model)(x, 1), atol=0, rtol=0)

    first = hnet._padded_scale(width)
    assert first.shape == (width,) and torch.equal(first[: hnet.spec.numel], hnet.theta_scale)
    assert not first[hnet.spec.numel :].any()
    check()
    # written in place (the version counter), through .data after a read, or replaced
    hnet.load_state_dict({**hnet.state_dict(), "theta_scale": hnet.theta_scale * 2})
    assert torch.equal(hnet._padded_scale(width)[: hnet.spec.numel], hnet.theta_scale)
    check()
    hnet.theta_scale.data.mul_(0.5)
    assert torch.equal(hnet._padded_scale(width)[: hnet.spec.numel], hnet.theta_scale)
    check()
    handle = hnet.theta_scale  # kept from before the next call: a write through it shows in the version only
    model(x, 1)
    with torch.no_grad():
        handle.mul_(3.0)
    check()
    # a copy holds no padded scale of its own until it runs
    assert copy.deepcopy(hnet).__dict__["_padded_scale_memo"].value is None
    # a trainable scale (its gradient must reach it) or a mean that is not zero: the slice
    hnet.theta_scale.requires_grad_(True)
    assert hnet._padded_scale(width) is None
    hnet.theta_scale.requires_grad_(False)
    residual = _chunked_model(TaskEmbedding(3, 5), residual="target")
    assert residual.hypernet._padded_scale(width) is None
    torch.testing.assert_close(residual(x, 1), _unpadded(residual)(x, 1), atol=0, rtol=0)


def test_padded_chunk_output_steps_aside_for_a_hook_on_the_head():
    model = _chunked_model(TaskEmbedding(3, 5))
    seen = []
    model.hypernet.head.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    model(torch.randn(2, 6), 0)
    assert seen == [(1, model.hypernet.spec.numel)]  # the hook saw the head's own output
