"""The fewshot recipe and its pieces: the hypernetwork method and the baselines against plain
PyTorch, the hypernetwork's degenerate case (ProtoNet), episodes that keep test classes out of
training, --quick end to end with resume, the saved model, and bad input."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn.baselines import FirstOrderMAML, PretrainedFineTuning, ProtoNet
from hyperdnn.baselines.pretrained_finetune import fit_linear_head
from hyperdnn.data import ClassData, EpisodeSampler
from hyperdnn.data.episodes import Episode
from hyperdnn.engine import load_model
from hyperdnn.methods import HypernetFewShot, evaluate_episodes
from hyperdnn.methods.fewshot import MetricScorer
from hyperdnn.recipes.fewshot import METHODS, EpisodeWork, FewShotConfig, load_classes, plan
from tests.helpers import assert_refused, interrupt_then_resume, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (1, 8, 8)


def _net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.Tanh())


def _episode(ways: int = 3, shots: int = 2, queries: int = 4, seed: int = 0) -> Episode:
    g = torch.Generator().manual_seed(seed)
    return Episode(
        torch.rand(ways, shots, *SHAPE, generator=g),
        torch.rand(ways * queries, *SHAPE, generator=g),
        torch.arange(ways).repeat_interleave(queries),
        torch.arange(ways),
    )


# ---------------------------------------------------------------------- the methods against plain PyTorch
def test_the_hypernetwork_writes_scorers_that_run_like_plain_modules() -> None:
    torch.manual_seed(0)
    learner = HypernetFewShot(_net(), 6, SHAPE, ways=3, trunk=(16,)).eval()
    ep = _episode()
    with torch.no_grad():
        weights = learner.classifiers(ep.support)
        logits = learner.predict(ep.support, ep.query)
        embedded = learner.backbone(ep.query)
        for n in range(3):  # class n's scorer, loaded into a plain MetricScorer
            plain = MetricScorer(6)
            plain.load_state_dict({k: v[n] for k, v in weights.items()})
            torch.testing.assert_close(logits[:, n], plain(embedded)[:, 0])
        # the generated centre is the class mean plus the hypernetwork's offset
        mean = learner.backbone(ep.support.flatten(0, 1)).view(3, 2, 6).mean(1)
        raw = learner.hypernet(learner.backbone(ep.support.flatten(0, 1)).view(3, 2, 6))
        torch.testing.assert_close(weights["center"], mean + raw["center"])
        # the order of a class's support examples does not matter
        torch.testing.assert_close(learner.predict(ep.support.flip(1), ep.query), logits)


def test_the_hypernetwork_at_zero_is_protonet() -> None:
    """With its output layer at zero the hypernetwork writes ProtoNet's scorers: the same logits
    up to a constant per query (softmax-equal) and the same training step."""
    torch.manual_seed(0)
    hnet = HypernetFewShot(_net(), 6, SHAPE, ways=3, trunk=(16,))
    for p in hnet.hypernet.head.parameters():
        nn.init.zeros_(p)
    proto = ProtoNet(copy.deepcopy(hnet.backbone), SHAPE, ways=3)
    ep = _episode()
    a, b = hnet.predict(ep.support, ep.query), proto.predict(ep.support, ep.query)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)  # exp(0) = 1 per feature, bias 0
    torch.testing.assert_close(hnet.loss(ep), proto.loss(ep))


def test_protonet_is_the_nearest_class_mean() -> None:
    torch.manual_seed(0)
    learner = ProtoNet(_net(), SHAPE, ways=3)
    ep = _episode()
    f = learner.backbone
    means = torch.stack([f(ep.support[n]).mean(0) for n in range(3)])
    expected = -((f(ep.query)[:, None, :] - means[None]) ** 2).sum(-1)
    torch.testing.assert_close(learner.predict(ep.support, ep.query), expected, atol=1e-5, rtol=1e-5)


def test_protonet_logits_do_not_depend_on_how_many_queries_a_batch_holds() -> None:
    # cdist's matmul formula (above 25 rows) lost float32 precision for embeddings far from
    # the origin: a query's logits changed with the batch (up to 0.06 here)
    class Offset(nn.Module):
        def forward(self, x):
            return 100.0 + 0.1 * x.flatten(1)[:, :16]

    learner = ProtoNet(Offset(), SHAPE, ways=5)
    g = torch.Generator().manual_seed(0)
    support, query = torch.randn(5, 2, *SHAPE, generator=g), torch.randn(30, *SHAPE, generator=g)
    batch = learner.predict(support, query)
    one_by_one = torch.cat([learner.predict(support, query[i : i + 1]) for i in range(30)])
    torch.testing.assert_close(batch, one_by_one, rtol=0, atol=1e-5)
    exact = -((Offset()(query).double()[:, None] - learner.prototypes(support).double()[None]) ** 2).sum(-1)
    torch.testing.assert_close(batch.double(), exact, rtol=0, atol=2e-4)


def test_first_order_maml_equals_a_plain_loop() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    learner = FirstOrderMAML(copy.deepcopy(net), SHAPE, ways=3, inner_lr=0.3, inner_steps=2, test_steps=3)
    ep = _episode()
    x, y = ep.support.flatten(0, 1), ep.support_labels()

    def adapted(steps: int) -> nn.Module:  # plain SGD on a copy, BatchNorm on the batch's statistics
        model = copy.deepcopy(net).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.3)
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        return model

    plain = adapted(3)
    learner.eval()
    torch.testing.assert_close(learner.predict(ep.support, ep.query), plain(ep.query), atol=1e-5, rtol=1e-5)
    assert not learner.network[2].training  # its mode is back
    # the first-order update: the query gradient at the adapted weights, applied to the initial ones
    learner.train()
    opt = torch.optim.SGD(learner.parameters(), lr=0.01)
    before = {k: v.clone() for k, v in learner.network.state_dict().items()}
    learner.train_step(ep, opt)
    model = adapted(2)
    model.zero_grad()
    F.cross_entropy(model(ep.query), ep.query_labels).backward()
    for (name, p), q in zip(learner.network.named_parameters(), model.parameters()):
        torch.testing.assert_close(p, net.state_dict()[name] - 0.01 * q.grad, atol=1e-6, rtol=1e-5)
    # running statistics are never touched (MAML does not read them)
    for k in ("2.running_mean", "2.running_var"):
        assert torch.equal(learner.network.state_dict()[k], before[k])


def test_fine_tuning_fits_a_new_linear_classifier_on_frozen_features() -> None:
    torch.manual_seed(0)
    learner = PretrainedFineTuning(_net(), 6, SHAPE, ways=3, classes=[4, 7, 9, 11], steps=20, lr=0.05).eval()
    ep = _episode()
    with torch.no_grad():
        train, test = learner.backbone(ep.support.flatten(0, 1)), learner.backbone(ep.query)
    head = nn.Linear(6, 3)
    nn.init.zeros_(head.weight), nn.init.zeros_(head.bias)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(20):
        opt.zero_grad()
        F.cross_entropy(head(train), ep.support_labels()).backward()
        opt.step()
    torch.testing.assert_close(learner.predict(ep.support, ep.query), head(test).detach())
    # its training step: the episode's images among all training classes
    classes_ep = Episode(ep.support, ep.query, ep.query_labels, torch.tensor([9, 4, 11]))
    logits = learner.classifier(learner.backbone(torch.cat([ep.support.flatten(0, 1), ep.query])))
    labels = torch.tensor([2, 0, 3])[torch.cat([ep.support_labels(), ep.query_labels])]
    torch.testing.assert_close(learner.loss(classes_ep), F.cross_entropy(logits, labels))
    with pytest.raises(ValueError, match=r"the episode's classes \[9, 5, 11\] are not all training classes"):
        learner.loss(Episode(ep.support, ep.query, ep.query_labels, torch.tensor([9, 5, 11])))


def test_the_hand_written_head_fit_is_adam_on_a_linear_layer_bit_for_bit() -> None:
    g = torch.Generator().manual_seed(3)
    for ways, shots, features in ((5, 1, 32), (5, 5, 32), (3, 4, 7)):
        x = torch.randn(ways * shots, features, generator=g)
        y = torch.arange(ways).repeat_interleave(shots)  # balanced: the bias gradient is rounding only
        head = nn.Linear(features, ways)
        nn.init.zeros_(head.weight), nn.init.zeros_(head.bias)
        opt = torch.optim.Adam(head.parameters(), lr=0.01)
        for _ in range(100):
            opt.zero_grad()
            F.cross_entropy(head(x), y).backward()
            opt.step()
        weight, bias = fit_linear_head(x, y, ways, 100, 0.01)
        assert torch.equal(weight, head.weight.detach()) and torch.equal(bias, head.bias.detach())


def test_a_support_set_that_does_not_fit_is_one_clear_error() -> None:
    learner = HypernetFewShot(_net(), 6, SHAPE, ways=3, trunk=(16,))
    ep = _episode(ways=4)
    with pytest.raises(ValueError, match=r"HypernetFewShot.predict: expected a support set of 3 classes, \(3, shots, 1, 8, 8\), got \(4, 2, 1, 8, 8\) \(4 classes\)"):  # fmt: skip
        learner.predict(ep.support, ep.query)
    with pytest.raises(ValueError, match=r"ProtoNet.predict: expected a support set of 3 classes, \(3, shots, 1, 8, 8\), got \(3, 2, 1, 9, 9\)"):  # fmt: skip
        ProtoNet(_net(), SHAPE, 3).predict(torch.rand(3, 2, 1, 9, 9), torch.rand(5, 1, 8, 8))
    with pytest.raises(ValueError, match=r"FirstOrderMAML.predict: expected queries \(Q, 1, 8, 8\), got \(5, 64\)"):
        FirstOrderMAML(nn.Sequential(_net(), nn.Linear(6, 3)), SHAPE, 3).predict(torch.rand(3, 1, *SHAPE), torch.rand(5, 64))  # fmt: skip


def test_evaluate_episodes_restores_the_mode() -> None:
    data = ClassData("toy", torch.rand(40, *SHAPE), torch.arange(40) // 10, tuple("abcd"), ("",) * 4)
    learner = ProtoNet(_net(), SHAPE, 2).train()
    accs = evaluate_episodes(learner, EpisodeSampler(data, [0, 1, 2, 3], 2, 1, 2), 4, torch.Generator().manual_seed(0))
    assert accs.shape == (4,) and learner.training and set(accs.tolist()) <= {0.0, 0.25, 0.5, 0.75, 1.0}


# ---------------------------------------------------------------------- the recipe
QUICK = ["--quick", "--progress", "false", "--threads", "1"]


def test_training_episodes_never_show_a_test_class() -> None:
    cfg = FewShotConfig(quick=True)
    data, train, test = load_classes(cfg, 5)
    assert not set(train) & set(test) and len(train) + len(test) == data.num_classes == 194

    class Ctx:  # what EpisodeWork reads of a run context
        device = torch.device("cpu")

        def seed_everything(self, *keys):
            torch.manual_seed(0)

    for unit in plan(cfg):
        work = EpisodeWork(Ctx(), cfg, data, (train, test), unit)  # type: ignore[arg-type]
        g = torch.Generator().manual_seed(1)
        seen = {int(c) for _ in range(50) for c in work.train_sampler.sample(g).classes}
        assert seen <= set(train), unit.key


def test_the_default_keeps_its_time_budget() -> None:
    # measured on 2 CPU cores (docs/fewshot.md): 400 training episodes per method and setting,
    # the full test protocol, fit in 10 minutes of one-thread CPU time; 1,000 did not (12-14 min)
    cfg = FewShotConfig()
    assert (cfg.epochs, cfg.episodes) == (8, 50)
    assert (cfg.test_episodes, cfg.shots, cfg.ways, cfg.queries) == (600, (1, 5), 5, 15)
    assert (cfg.maml_steps, cfg.maml_test_steps, cfg.finetune_steps, cfg.channels) == (5, 10, 100, 32)
    assert cfg.methods == tuple(METHODS)
    # every method trains on as many episodes in total: fine-tuning's one model on both settings'
    assert [(u.key, u.epochs) for u in plan(cfg)][-2:] == [("maml/5-shot", 8), ("finetune", 16)]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fewshot") / "run"
    code, err = run_cli(["fewshot", *QUICK, "--out", str(out)])
    assert code == 0, err
    return out


def test_quick_run_writes_every_method_and_setting(quick_run: Path) -> None:
    metrics = json.loads((quick_run / "results.json").read_text())["metrics"]
    assert set(metrics["accuracy"]) == {"hnet", "protonet", "maml", "finetune"}
    for method, settings in metrics["accuracy"].items():
        assert set(settings) == {"1-shot", "2-shot"}, method
        for got in settings.values():
            assert 0.0 <= got["mean"] <= 1.0 and got["ci95"] > 0.0
    assert len(metrics["episodes"]["hnet"]["1-shot"]) == 10
    for name in ("summary.md", "accuracy.png", "training_loss.png", "episode.png"):
        assert (quick_run / name).stat().st_size > 0, name
    assert "| ProtoNet |" in (quick_run / "summary.md").read_text()
    assert not (quick_run / "checkpoints").exists()


def test_the_saved_hypernetwork_loads_and_predicts(quick_run: Path) -> None:
    learner = load_model(quick_run, "hnet-1shot")
    assert isinstance(learner, HypernetFewShot) and not learner.training
    with torch.no_grad():
        assert learner.predict(torch.rand(5, 1, 1, 28, 28), torch.rand(4, 1, 28, 28)).shape == (4, 5)


def test_resume_ends_with_the_same_results(tmp_path: Path, monkeypatch, quick_run: Path) -> None:
    # stopped inside maml/1-shot (two saves per unit: after its first epoch, at its end)
    resumed = interrupt_then_resume(monkeypatch, "fewshot", QUICK, tmp_path / "run", stop_at=5)
    uninterrupted = json.loads((quick_run / "results.json").read_text())["metrics"]
    assert resumed["accuracy"] == uninterrupted["accuracy"] and resumed["episodes"] == uninterrupted["episodes"]
    assert resumed["parameters"] == uninterrupted["parameters"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--ways", "1"], "--ways: expected an int >= 2, got 1"),
        (["--data", "digits"], "--data: 'digits' has no class-level view"),
        (
            ["--data", "omniglot", "--data_root", "/nonexistent"],
            "--data omniglot: Omniglot not found in '/nonexistent'",
        ),
        (["--samples", "10"], "--samples: an episode needs shots + queries = 20 images per class, got 10"),
        (
            ["--scripts", "armenian", "--ways", "30"],
            "--ways: expected at most the classes of each side (53 training, 22 test), got 30",
        ),  # fmt: skip
        (["--pooling", "attention", "--heads", "5"], "--heads: expected a divisor of --channels 32, got 5"),
        (["--shots", "1,1"], "--shots"),
        (["--methods", "reptile"], "--methods"),
    ],
)
def test_bad_input_is_one_line_and_nothing_is_written(tmp_path: Path, argv: list[str], message: str) -> None:
    assert_refused(tmp_path, ["fewshot", *argv], message)
