"""The hypernetwork architectures: what each token mixer and readout does, and bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from hyperdnn import (
    CNN,
    MLP,
    RNN,
    Attention,
    Chunked,
    ComponentWise,
    HyperNetwork,
    LearnedLatent,
    MultiHead,
    Once,
    Target,
    TaskEmbedding,
    WeightSpec,
    create_head,
    create_trunk,
)
from hyperdnn.heads import TokenGenerator
from hyperdnn.trunks import AttentionMixer, DeconvReadout, RecurrentMixer

pytestmark = pytest.mark.usefixtures("one_thread")


def small_target() -> Target:
    return Target(nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3)))


# ----------------------------------------------------------------- the MLP path is unchanged


def test_mlp_trunk_keeps_single_linear_once_and_fused_chunks():
    hnet = HyperNetwork(small_target(), LearnedLatent(4), MLP((8,)), Once())
    assert isinstance(hnet.head.linear, nn.Linear) and hnet.head.generator is None
    gen = TokenGenerator(8, 5, 3, (), 7)
    assert gen.fused and gen.final_layers() == [gen.proj_h, gen.proj_e]
    assert not TokenGenerator(8, 5, 3, (), 7, trunk=RNN(width=8)).fused


# ----------------------------------------------------------------- token mixers


def test_recurrent_mixer_generates_in_order():
    """Step i depends on tokens 0..i only: changing token 5 leaves tokens 0..4 as they were."""
    torch.manual_seed(0)
    mixer = RecurrentMixer(8, cell="lstm")
    z = torch.randn(2, 9, 8)
    z2 = z.clone()
    z2[:, 5] += 1.0
    a, b = mixer(z), mixer(z2)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert (a[:, 5:] - b[:, 5:]).abs().amax(dim=(0, 2)).min() > 1e-4


def test_attention_mixer_lets_every_token_see_every_other():
    torch.manual_seed(0)
    mixer = AttentionMixer(8, heads=2, layers=1)
    z = torch.randn(2, 6, 8)
    z2 = z.clone()
    z2[:, -1] += torch.randn(8)  # not a constant shift, which LayerNorm would remove
    changed = (mixer(z) - mixer(z2)).abs().amax(dim=(0, 2))
    assert bool((changed > 1e-4).all())


@pytest.mark.parametrize(
    "trunk,earlier_change",
    [(MLP((8,)), False), (RNN((8,), width=8), False), (Attention((8,), width=8, heads=2, layers=1), True)],
)
def test_components_depend_on_each_other_as_the_architecture_says(trunk, earlier_change):
    """Perturb the last component's embedding: with independent (MLP) or recurrent (RNN)
    generation the earlier components stay as they were; with attention they change."""
    torch.manual_seed(0)
    hnet = HyperNetwork(small_target(), LearnedLatent(4), trunk, ComponentWise("unit", embed_dim=4))
    with torch.no_grad():
        before = hnet()["0.weight"].clone()
        hnet.head.generator.embeddings[-1] += 1.0
        after = hnet()["0.weight"]
    assert bool((before - after).abs().max() > 1e-6) == earlier_change


def test_multihead_with_rnn_generates_layer_after_layer():
    torch.manual_seed(0)
    hnet = HyperNetwork(small_target(), LearnedLatent(4), RNN((8,), width=8), MultiHead("layer"))
    assert len(hnet.head.heads) == 2
    with torch.no_grad():
        before = hnet()
        hnet.head.encoder.embeddings[1] += 1.0  # the second layer's token
        after = hnet()
    torch.testing.assert_close(after["0.weight"], before["0.weight"])
    assert not torch.allclose(after["2.weight"], before["2.weight"])


# ----------------------------------------------------------------- deconvolution


def test_circular_deconvolution_gives_every_pixel_the_same_taps():
    readout = DeconvReadout(4, 100, channels=(3, 2), base=3)  # 12 x 12 images
    deconv = readout.stages[1].conv
    with torch.no_grad():
        deconv.weight.fill_(1.0)
        deconv.bias.zero_()
        out = readout.stages[1](torch.ones(1, 3, 3, 3))
    assert out.shape == (1, 2, 6, 6)
    torch.testing.assert_close(out, torch.full_like(out, 4 * 3))  # 2 x 2 taps of 3 channels, everywhere


def test_deconv_token_is_the_top_left_block_of_its_image():
    """A 64-number component (an 8x8 input filter) is the image's top-left 8x8 block."""
    torch.manual_seed(0)
    readout = DeconvReadout(6, 64, channels=(4, 4), base=4)  # 16 x 16 images
    z = torch.randn(3, 6)
    feats = readout.stages(readout.lift(z).reshape(3, 4, 4, 4))  # (3, 4, 16, 16)
    block = feats[:, :, :8, :8].reshape(3, 4, 64)
    expected = torch.einsum("nck,kc->nk", block, readout.pixel.weight) + readout.pixel.bias
    torch.testing.assert_close(readout(z), expected)


def test_cnn_serves_rows_of_a_digit_filter_as_images():
    target = Target(nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)))
    hnet = HyperNetwork(target, LearnedLatent(8), CNN((16,), channels=(8, 4), base=2), ComponentWise("unit"))
    assert hnet.trunk_config.image_size == 8
    assert hnet()["0.weight"].shape == (16, 64)


# ----------------------------------------------------------------- bad input


def test_cnn_refuses_tokens_larger_than_its_image():
    big = Target(nn.Sequential(nn.Linear(20, 20), nn.ReLU(), nn.Linear(20, 3)))  # 483 numbers
    with pytest.raises(ValueError, match=r"483 numbers does not fit .* 16x16 = 256-pixel output"):
        HyperNetwork(big, LearnedLatent(4), CNN(channels=(8, 4), base=4), Once())
    with pytest.raises(ValueError, match=r"300 numbers does not fit .* 16x16 = 256"):
        HyperNetwork(big, LearnedLatent(4), CNN(channels=(8, 4), base=4), Chunked(300))
    HyperNetwork(big, LearnedLatent(4), CNN(channels=(8, 4), base=4), Chunked(256))  # fits


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: Attention(width=10, heads=4), r"width must be divisible by heads, got width=10, heads=4"),
        (lambda: RNN(cell="transformer"), r"cell must be 'gru' or 'lstm', got 'transformer'"),
        (lambda: RNN(width=0), r"width must be an int >= 1, got 0"),
        (lambda: CNN(channels=()), r"at least one upsampling stage"),
        (lambda: CNN(base=0), r"base must be an int >= 1, got 0"),
        (lambda: CNN(hidden=(8, -1)), r"hidden must be positive ints, got \(8, -1\)"),
        (lambda: Attention(dropout=1.5), r"dropout must be in \[0, 1\), got 1.5"),
    ],
)
def test_bad_trunk_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_head_build_rejects_a_non_trunk_and_a_non_spec():
    spec = WeightSpec.from_module(nn.Linear(3, 2))
    with pytest.raises(TypeError, match="trunk must be a Trunk or None, got Linear"):
        Chunked(4).build(spec, 8, nn.Linear(1, 1))
    with pytest.raises(TypeError, match="ChunkedModule: spec must be a WeightSpec, got dict"):
        Chunked(4).build({"weight": (2, 3)}, 8)
    with pytest.raises(TypeError, match=r"RNN.build: in_features must be an int >= 1, got '8' \(str\)"):
        RNN().build("8")


@pytest.mark.parametrize("trunk", ["mlp", "rnn", "attention", "cnn"])
@pytest.mark.parametrize("head", ["once", "chunked", "componentwise", "multihead"])
def test_descriptions_build_complete_independent_modules(trunk, head):
    spec = WeightSpec.from_module(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)))
    t = create_trunk(trunk, hidden=(8,))
    h = create_head(head, **({"chunk_size": 8} if head == "chunked" else {}))
    assert not isinstance(t, nn.Module) and not isinstance(h, nn.Module)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.hidden = (4,)
    encoders = [t.build(5), t.build(5)]
    heads = [h.build(spec, encoders[0].out_features, t) for _ in range(2)]
    assert encoders[0].out_features == 8 and encoders[0](torch.randn(3, 5)).shape == (3, 8)
    assert heads[0](torch.randn(3, 8)).shape == (3, spec.numel)
    for a, b in (encoders, heads):
        assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters()) > 0
        assert not {id(p) for p in a.parameters()} & {id(p) for p in b.parameters()}


def test_every_architecture_trains_a_small_target():
    """A few steps of Adam lower the loss of a tiny regression for every architecture."""
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    y = x @ torch.randn(5, 3)
    for trunk in (MLP((16,)), RNN((16,), width=16), Attention((16,), width=16, heads=2, layers=1), CNN((16,), (8, 4))):
        target = small_target()
        hnet = HyperNetwork(target, TaskEmbedding(1, 4), trunk, Chunked(16, 4))
        opt = torch.optim.Adam(hnet.parameters(), lr=1e-2)
        losses = []
        for _ in range(60):
            loss = nn.functional.mse_loss(target(hnet(0), x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.2 * losses[0], (type(trunk).__name__, losses[0], losses[-1])
