"""The zeroshot recipe and its pieces: the hypernetwork method and the baselines against plain
PyTorch, unseen classes described by seen words only, --quick end to end with resume, the saved
model, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn.baselines import DeViSE, DirectAttributePrediction
from hyperdnn.data.classes import attribute_matrix
from hyperdnn.engine import load_model
from hyperdnn.methods import HypernetZeroShot
from hyperdnn.recipes._class_data import load_class_data
from hyperdnn.recipes.zeroshot import ZeroShotConfig, class_accuracy, load_split
from tests.helpers import assert_refused, interrupt_then_resume, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (1, 8, 8)
WORDS = ("script:latin", "script:greek", "case:capital", "case:small", "letter:a", "letter:b", "mark:acute")
TEXTS = ["script:latin case:capital letter:a", "script:greek case:small letter:b mark:acute", "script:latin letter:b"]


def _net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.Tanh())


# ---------------------------------------------------------------------- the methods against plain PyTorch
def test_the_hypernetwork_writes_classifiers_that_run_like_plain_layers() -> None:
    torch.manual_seed(0)
    learner = HypernetZeroShot(_net(), 6, SHAPE, WORDS, embed_dim=8, trunk=(16,)).eval()
    x = torch.rand(5, *SHAPE)
    with torch.no_grad():
        scores = learner.scores(x, TEXTS)
        weights = learner.classifiers(TEXTS)
        for c in range(3):  # class c's generated classifier, loaded into a plain nn.Linear
            plain = nn.Linear(6, 1)
            plain.load_state_dict({k: v[c] for k, v in weights.items()})
            torch.testing.assert_close(scores[:, c], plain(learner.backbone(x))[:, 0])
        # a class's classifier depends on its description only, not on the other classes asked
        torch.testing.assert_close(learner.scores(x, TEXTS[::-1]), scores.flip(1))
        torch.testing.assert_close(learner.scores(x, [TEXTS[1]])[:, 0], scores[:, 1])


def test_trunk_dropout_acts_in_training_only() -> None:
    torch.manual_seed(0)
    plain = HypernetZeroShot(_net(), 6, SHAPE, WORDS, embed_dim=8, trunk=(16,))
    torch.manual_seed(0)
    dropped = HypernetZeroShot(_net(), 6, SHAPE, WORDS, embed_dim=8, trunk=(16,), dropout=0.5)
    assert sum(isinstance(m, nn.Dropout) for m in dropped.modules()) == 1
    assert dropped.state_dict().keys() == plain.state_dict().keys()
    x = torch.rand(5, *SHAPE)
    with torch.no_grad():
        # in eval mode the same parameters give the same scores with or without dropout
        torch.testing.assert_close(dropped.eval().scores(x, TEXTS), plain.eval().scores(x, TEXTS))
        dropped.train()
        assert not torch.equal(dropped.classifiers(TEXTS)["weight"], dropped.classifiers(TEXTS)["weight"])


def test_devise_is_linear_in_the_description() -> None:
    torch.manual_seed(0)
    model = DeViSE(_net(), 6, SHAPE, WORDS)
    x = torch.rand(5, *SHAPE)
    a = attribute_matrix(TEXTS, WORDS)
    expected = model.projection(model.backbone(x)) @ (a / a.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(model.scores(x, TEXTS), expected)


def test_dap_scores_the_attribute_posterior() -> None:
    torch.manual_seed(0)
    model = DirectAttributePrediction(_net(), 6, SHAPE, WORDS)
    x, y = torch.rand(5, *SHAPE), torch.tensor([0, 1, 2, 0, 1])
    a = attribute_matrix(TEXTS, WORDS)
    loss = model.loss(x, y, TEXTS)  # records the priors of the classes it trains on
    p = torch.sigmoid(model.attributes(model.backbone(x)))
    torch.testing.assert_close(loss, F.binary_cross_entropy(p, a[y]))
    prior = a.mean(0).clamp(1e-4, 1 - 1e-4)
    expected = torch.stack(
        [
            ((p.log() * a[c] + (1 - p).log() * (1 - a[c])) - (prior.log() * a[c] + (1 - prior).log() * (1 - a[c]))).sum(
                1
            )
            for c in range(3)
        ],  # fmt: skip
        1,
    )
    torch.testing.assert_close(model.scores(x, TEXTS), expected, atol=1e-5, rtol=1e-5)


def test_descriptions_that_do_not_fit_are_one_clear_error() -> None:
    learner = HypernetZeroShot(_net(), 6, SHAPE, WORDS, embed_dim=8, trunk=(16,))
    x = torch.rand(2, *SHAPE)
    with pytest.raises(ValueError, match=r"description 1 \('script:latin letter:z'\) has a word outside the vocabulary: 'letter:z'"):  # fmt: skip
        learner.scores(x, [TEXTS[0], "script:latin letter:z"])
    with pytest.raises(ValueError, match="DescriptionEncoder: description 0 is empty"):
        learner.scores(x, [""])
    with pytest.raises(ValueError, match=r"attribute_matrix: description 0 \('letter:z'\) has words outside the vocabulary of 7: \['letter:z'\]"):  # fmt: skip
        DeViSE(_net(), 6, SHAPE, WORDS).scores(x, ["letter:z"])
    with pytest.raises(
        ValueError, match=r"HypernetZeroShot.scores: expected examples \(N, 1, 8, 8\), got \(2, 1, 9, 9\)"
    ):
        learner.scores(torch.rand(2, 1, 9, 9), TEXTS)


def test_class_accuracy_averages_over_classes() -> None:
    scores = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert class_accuracy(scores, torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)  # (1 + 0.5) / 2


# ---------------------------------------------------------------------- the recipe
QUICK = ["--quick", "--progress", "false", "--threads", "1"]


def test_unseen_classes_are_described_by_seen_words() -> None:
    cfg = ZeroShotConfig(quick=True)
    data = load_class_data("glyphs", "", cfg.samples, cfg.scripts, 3)
    split = load_split(cfg, data, 3)
    assert not set(split.seen) & set(split.unseen) and len(split.seen) + len(split.unseen) == data.num_classes
    seen_words = {w for c in split.seen for w in data.descriptions[c].split()}
    assert all(set(data.descriptions[c].split()) <= seen_words for c in split.unseen)
    # training images are seen classes' only; held-out seen images and unseen images are apart
    assert set(data.y[split.train].tolist()) == set(split.seen) == set(data.y[split.seen_test].tolist())
    assert set(data.y[split.unseen_test].tolist()) == set(split.unseen)
    assert not set(split.train.tolist()) & set(split.seen_test.tolist())


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zeroshot") / "run"
    code, err = run_cli(["zeroshot", *QUICK, "--out", str(out)])
    assert code == 0, err
    return out


def test_quick_run_writes_every_method(quick_run: Path) -> None:
    metrics = json.loads((quick_run / "results.json").read_text())["metrics"]
    assert set(metrics["accuracy"]) == {"hnet", "devise", "dap"}
    assert all(0.0 <= v <= 1.0 for got in metrics["accuracy"].values() for v in got.values())
    assert metrics["classes"]["unseen"] == len(metrics["unseen_classes"]) > 0
    for name in ("summary.md", "accuracy.png", "training_loss.png", "unseen.png", "hnet.safetensors"):
        assert (quick_run / name).stat().st_size > 0, name


def test_the_saved_hypernetwork_loads_and_scores_any_described_class(quick_run: Path) -> None:
    learner = load_model(quick_run, "hnet")
    assert isinstance(learner, HypernetZeroShot) and not learner.training
    words = learner.hypernet.conditioner.vocabulary
    with torch.no_grad():
        assert learner.scores(torch.rand(3, 1, 28, 28), [words[0], f"{words[1]} {words[2]}"]).shape == (3, 2)


def test_resume_ends_with_the_same_results(tmp_path: Path, monkeypatch, quick_run: Path) -> None:
    # stopped inside devise's training (two saves per unit: after its first epoch, at its end)
    resumed = interrupt_then_resume(monkeypatch, "zeroshot", QUICK, tmp_path / "run", stop_at=3)
    uninterrupted = json.loads((quick_run / "results.json").read_text())["metrics"]
    assert resumed["accuracy"] == uninterrupted["accuracy"] and resumed["parameters"] == uninterrupted["parameters"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "omniglot"], "--data: omniglot describes no class"),
        (["--data", "digits"], "--data: 'digits' has no class-level view"),
        (["--data", "awa2", "--data_root", "/nonexistent"], "--data awa2: AwA2 not found in '/nonexistent'"),
        (
            ["--scripts", "armenian", "--unseen", "0.01"],
            "--unseen: 0.01 of the 75 classes of armenian holds out fewer than 2",
        ),  # fmt: skip
        (["--heads", "5"], "--heads: expected a divisor of --embed_dim 384, got 5"),
        (
            ["--pooling", "attention", "--embed_dim", "64", "--heads", "3"],
            "--heads: expected a divisor of --embed_dim 64, got 3",
        ),
        (["--unseen", "1.5"], "--unseen"),
        (["--dropout", "1"], "--dropout"),
        (["--methods", "sje"], "--methods"),
    ],
)
def test_bad_input_is_one_line_and_nothing_is_written(tmp_path: Path, argv: list[str], message: str) -> None:
    assert_refused(tmp_path, ["zeroshot", *argv], message)
