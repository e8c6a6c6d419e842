"""The set encoder and the description encoder: invariant to the order of a set's items and of a
description's words, equal to plain PyTorch pooling, and one clear error for bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hyperdnn import DescriptionEncoder, Execution, HyperModel, HyperNetwork, SetEncoder, Target

pytestmark = pytest.mark.usefixtures("one_thread")


def _encoder(pooling: str) -> SetEncoder:
    torch.manual_seed(0)
    phi = nn.Sequential(nn.Flatten(), nn.Linear(9, 8), nn.ReLU(), nn.Linear(8, 8))
    return SetEncoder(phi, 8, item_shape=(1, 3, 3), pooling=pooling, heads=2)


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_the_set_encoder_is_invariant_to_the_order_of_the_support_set(pooling: str) -> None:
    enc = _encoder(pooling).eval()
    support = torch.randn(5, 4, 1, 3, 3)  # 5 sets (classes) of 4 items
    with torch.no_grad():
        c = enc(support)
        assert c.batched and c.c.shape == (5, 8)
        for seed in range(5):
            perm = torch.randperm(4, generator=torch.Generator().manual_seed(seed))
            torch.testing.assert_close(enc(support[:, perm]).c, c.c, atol=1e-6, rtol=1e-5)
        # one set alone is unbatched and gives its row
        alone = enc(support[2])
        assert not alone.batched
        torch.testing.assert_close(alone.c[0], c.c[2], atol=1e-6, rtol=1e-5)
        # ... and the order of the sets is the order of the rows
        torch.testing.assert_close(enc(support.flip(0)).c, c.c.flip(0), atol=1e-6, rtol=1e-5)
    # the weights a hypernetwork generates for a set do not depend on the order of its items
    target = Target(nn.Linear(8, 1))
    hnet = HyperNetwork(target, enc).eval()
    with torch.no_grad():
        w, w_perm = hnet(support), hnet(support[:, torch.tensor([3, 1, 0, 2])])
    for name in w:
        torch.testing.assert_close(w_perm[name], w[name], atol=1e-5, rtol=1e-5)


def test_pooling_equals_plain_pytorch() -> None:
    support = torch.randn(3, 6, 1, 3, 3)
    mean = _encoder("mean")
    torch.testing.assert_close(mean(support).c, mean.item_encoder(support.flatten(0, 1)).view(3, 6, 8).mean(1))
    att = _encoder("attention")
    codes = att.item_encoder(support.flatten(0, 1)).view(3, 6, 8)
    mha = att.pool.attention
    reference = mha(att.pool.query.expand(3, 1, 8), codes, codes)[0][:, 0]
    torch.testing.assert_close(att(support).c, reference)
    # by hand: softmax over the items of q.k / sqrt(d per head), per head, then the output projection
    q, k, v = (x @ w.T + b for x, w, b in zip((att.pool.query.expand(3, 1, 8), codes, codes), mha.in_proj_weight.chunk(3), mha.in_proj_bias.chunk(3)))  # fmt: skip
    heads = [
        torch.softmax(q[..., h * 4 : h * 4 + 4] @ k[..., h * 4 : h * 4 + 4].transpose(1, 2) / 2.0, -1)
        @ v[..., h * 4 : h * 4 + 4]  # fmt: skip
        for h in range(2)
    ]
    torch.testing.assert_close(att(support).c, mha.out_proj(torch.cat(heads, -1))[:, 0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_sets_of_unequal_sizes_pool_each_set_over_its_own_items(pooling: str) -> None:
    enc = _encoder(pooling).eval()
    sizes = (1, 4, 2, 5)
    sets = [torch.randn(n, 1, 3, 3) for n in sizes]
    seen = []
    enc.item_encoder.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    c = enc(sets)
    assert c.batched and c.c.shape == (4, 8)
    assert seen == [sum(sizes)]  # the item encoder sees the real items, no padding
    for b, one in enumerate(sets):
        torch.testing.assert_close(c.c[b], enc(one).c[0], atol=1e-6, rtol=1e-5)
        perm = torch.randperm(sizes[b], generator=torch.Generator().manual_seed(b))
        shuffled = [*sets[:b], one[perm], *sets[b + 1 :]]
        torch.testing.assert_close(enc(shuffled).c, c.c, atol=1e-6, rtol=1e-5)
    # equal sizes as a list: exactly the stacked tensor
    equal = [torch.randn(3, 1, 3, 3) for _ in range(4)]
    assert torch.equal(enc(equal).c, enc(torch.stack(equal)).c)
    assert torch.equal(enc(tuple(equal)).c, enc(torch.stack(equal)).c)
    # gradients: each item's gradient is what its set alone gives it
    leaves = [s.clone().requires_grad_() for s in sets]
    (enc(leaves).c * torch.arange(1.0, 5.0).unsqueeze(1)).sum().backward()
    for b, one in enumerate(sets):
        alone = one.clone().requires_grad_()
        ((b + 1.0) * enc(alone).c).sum().backward()
        torch.testing.assert_close(leaves[b].grad, alone.grad, atol=1e-5, rtol=1e-5)


def test_a_hypernetwork_generates_for_sets_of_unequal_sizes() -> None:
    torch.manual_seed(0)
    enc = SetEncoder(nn.Linear(4, 8), 8, item_shape=(4,), pooling="attention", heads=2)
    target = Target(nn.Linear(4, 1))
    model = HyperModel(HyperNetwork(target, enc), target).eval()
    sets = [torch.randn(2, 4), torch.randn(5, 4), torch.randn(1, 4)]
    x = torch.randn(7, 4)
    out = model(x, sets)
    assert out.shape == (3, 7, 1)
    for b, one in enumerate(sets):
        torch.testing.assert_close(out[b], model(x, one), atol=1e-6, rtol=1e-5)


def test_the_set_encoder_names_bad_lists_of_sets() -> None:
    enc = _encoder("mean")
    good = torch.randn(2, 1, 3, 3)
    with pytest.raises(ValueError, match="SetEncoder: expected a list of at least one set, got an empty list"):
        enc([])
    with pytest.raises(ValueError, match=r"SetEncoder: set 1 of the list must have shape \(S, 1, 3, 3\), got \(2, 1, 4, 4\)"):  # fmt: skip
        enc([good, torch.randn(2, 1, 4, 4)])
    with pytest.raises(ValueError, match="SetEncoder: a set needs at least one item, set 2 of the list has none"):
        enc([good, good, torch.randn(0, 1, 3, 3)])
    with pytest.raises(TypeError, match=r"SetEncoder: set 0 of the list must be a float tensor \(S, 1, 3, 3\), got ndarray"):  # fmt: skip
        enc([good.numpy(), good])
    with pytest.raises(TypeError, match=r"every set of the list must have set 0's dtype and device \(torch.float32, cpu\), set 1 has \(torch.float64, cpu\)"):  # fmt: skip
        enc([good, good.double()])


def test_the_set_encoder_names_bad_sets() -> None:
    enc = _encoder("mean")
    with pytest.raises(ValueError, match=r"SetEncoder: expected a set \(S, 1, 3, 3\), sets \(B, S, 1, 3, 3\) or a list of sets \(S_b, 1, 3, 3\) of items of shape \(1, 3, 3\), got \(5, 2, 1, 4, 4\)"):  # fmt: skip
        enc(torch.randn(5, 2, 1, 4, 4))  # images of the wrong size
    with pytest.raises(
        ValueError, match=r"SetEncoder: a set needs at least one item, got sets of shape \(5, 0, 1, 3, 3\)"
    ):
        enc(torch.randn(5, 0, 1, 3, 3))
    with pytest.raises(
        TypeError,
        match="SetEncoder: expected a float tensor of sets or a list of sets, got a tensor of dtype torch.int64",
    ):
        enc(torch.zeros(5, 2, 1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="SetEncoder: the item encoder must return \\(10, 8\\) for 10 items, returned \\(10, 9\\)"):  # fmt: skip
        SetEncoder(nn.Flatten(), 8, item_shape=(1, 3, 3))(torch.randn(5, 2, 1, 3, 3))
    with pytest.raises(ValueError, match="SetEncoder: heads must divide the pooled width 8, got heads=3"):
        SetEncoder(nn.Identity(), 8, item_shape=(8,), pooling="attention", heads=3)
    with pytest.raises(ValueError, match="SetEncoder: pooling must be 'mean' or 'attention', got 'max'"):
        SetEncoder(nn.Identity(), 8, item_shape=(8,), pooling="max")
    assert enc.execution(True) is Execution.ENSEMBLE and enc.execution(False) is Execution.SHARED
    assert SetEncoder(nn.Identity(), 8, item_shape=(8,), execution="per_sample").execution(True) is Execution.PER_SAMPLE


WORDS = ["script:latin", "script:greek", "case:capital", "case:small", "letter:a", "letter:alpha", "mark:acute"]


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_the_description_encoder_ignores_word_order_and_pads_correctly(pooling: str) -> None:
    torch.manual_seed(0)
    enc = DescriptionEncoder(WORDS, 6, pooling=pooling, heads=2)
    texts = ["script:latin case:capital letter:a mark:acute", "script:greek letter:alpha"]
    c = enc(texts)
    assert c.batched and c.c.shape == (2, 6)
    torch.testing.assert_close(
        enc(["mark:acute letter:a case:capital script:latin", "letter:alpha script:greek"]).c, c.c
    )
    # a short description padded in a batch equals it alone
    alone = enc(texts[1])
    assert not alone.batched
    torch.testing.assert_close(alone.c[0], c.c[1], atol=1e-6, rtol=1e-5)
    if pooling == "mean":  # the mean of the words' embeddings
        ids = [WORDS.index(w) for w in texts[0].split()]
        torch.testing.assert_close(c.c[0], enc.embedding.weight[ids].mean(0))


def test_the_description_encoder_names_bad_descriptions() -> None:
    enc = DescriptionEncoder(WORDS, 4)
    with pytest.raises(
        ValueError, match=r"DescriptionEncoder: description 1 is empty \(' '\); expected at least one word"
    ):
        enc(["script:latin", " "])
    with pytest.raises(ValueError, match=r"description 0 \('script:latn letter:a'\) has a word outside the vocabulary: 'script:latn' \(did you mean 'script:latin'\?\); the vocabulary has 7 words"):  # fmt: skip
        enc("script:latn letter:a")
    with pytest.raises(ValueError, match="DescriptionEncoder: expected at least one description, got none"):
        enc([])
    with pytest.raises(
        TypeError, match="DescriptionEncoder: expected a description \\(str\\) or a list of them, got int"
    ):
        enc(3)
    with pytest.raises(ValueError, match=r"vocabulary must be distinct words without whitespace, got \['two words'\]"):
        DescriptionEncoder(["a", "two words"], 4)
    with pytest.raises(ValueError, match=r"vocabulary must be distinct words without whitespace, got \['a'\]"):
        DescriptionEncoder(["a", "a"], 4)
    assert enc.probe(9)[:2] == ["script:latin", "script:greek"] and len(enc.probe(9)) == 9
