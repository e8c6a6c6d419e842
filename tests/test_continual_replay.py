"""Generative replay in the continual recipe: HNET+R (a VAE whose decoder a task-conditioned
hypernetwork generates, protected by the output regulariser) and DGR (the VAE fine-tuned with its
own replay)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from hyperdnn.data.streams import make_stream
from hyperdnn.engine import run_command
from hyperdnn.engine.loop import Unit
from hyperdnn.methods.generative_replay import HypernetReplay, ReplayLearner, VAEReplay, vae_loss
from hyperdnn.networks import mlp
from hyperdnn.optim import adam
from hyperdnn.recipes.continual import ContinualConfig, count_parameters, make_learner, make_optimizer, plan
from tests.helpers import interrupt_then_resume

SMALL = {
    "benchmark": "split", "data": "digits", "hidden": (16,), "trunk": (16,), "chunk_hidden": (16,),
    "chunk_size": 200, "chunk_embed_dim": 4, "task_embed_dim": 8, "vae_hidden": (32,), "vae_latent": 4,
    "dropout": 0.0,
}  # fmt: skip
TINY = [
    "--benchmark", "split", "--data", "digits", "--hidden", "16", "--trunk", "16", "--chunk_hidden", "16",
    "--chunk_size", "200", "--chunk_embed_dim", "4", "--task_embed_dim", "8", "--epochs", "2",
    "--batch_size", "32", "--vae_hidden", "32", "--vae_latent", "4", "--progress", "false", "--threads", "1",
]  # fmt: skip


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    code = run_command(argv, stdout=io.StringIO(), stderr=err)
    return code, err.getvalue()


def _learner(method: str, scenario: str = "CL3", **overrides) -> tuple[ReplayLearner, object]:
    cfg = ContinualConfig(**{**SMALL, **overrides})
    stream = make_stream("split", "digits", 2)
    torch.manual_seed(0)
    learner = make_learner(Unit(f"{method}/{scenario}", ("a", "b"), 1), cfg, stream, torch.device("cpu"))
    assert isinstance(learner, ReplayLearner)
    return learner, stream


def _train(
    learner: ReplayLearner, stream, t: int, steps: int, seed: int = 0, lr: float = 1e-2
) -> list[dict[str, float]]:
    opt = adam(learner.parameters_for(t), lr=lr)
    g = torch.Generator().manual_seed(seed)
    logs = []
    for idx in torch.randperm(stream[t].num_train, generator=g).split(32)[:steps]:
        x, y = stream[t].train_batch(idx)
        logs.append(learner.train_step(t, x, y, torch.full_like(y, t), opt, g))
    return logs


def test_the_replay_models_regulariser_is_zero_right_after_its_snapshot() -> None:
    learner, stream = _learner("hnet+r", replay_beta=0.1)
    learner.begin_task(0)
    assert all(log["reg"] == 0.0 for log in _train(learner, stream, 0, 5))
    learner.begin_task(1)
    replay = learner.replay
    assert isinstance(replay, HypernetReplay) and replay.regularizer.num_tasks == 1
    assert not replay.embeddings[0].requires_grad and replay.embeddings[1].requires_grad
    logs = _train(learner, stream, 1, 2)
    assert logs[0]["reg"] == 0.0  # the snapshot is what the hypernetwork generates for task 0 now
    assert logs[1]["reg"] > 0.0  # the first step moved it


def _decoder_drift(beta: float) -> float:
    """How far the decoder generated for task 0 moves (norm of the change over its norm) while
    task 1 trains 20 steps at Adam's 1e-3."""
    learner, stream = _learner("hnet+r", replay_beta=beta)
    learner.begin_task(0)
    _train(learner, stream, 0, 8)
    replay = learner.replay
    assert isinstance(replay, HypernetReplay)
    with torch.no_grad():
        before = replay.hnet.generate_flat(torch.tensor([0]))[0].clone()
    learner.begin_task(1)
    _train(learner, stream, 1, 20, lr=1e-3)
    with torch.no_grad():
        after = replay.hnet.generate_flat(torch.tensor([0]))[0]
    return float((after - before).norm() / before.norm())


def test_the_generated_decoder_of_an_old_task_stays_within_tolerance_while_a_new_one_trains() -> None:
    protected, free = _decoder_drift(beta=1.0), _decoder_drift(beta=0.0)
    assert protected < 0.01, protected
    assert free > 5 * protected, (free, protected)  # without the regulariser it moves


def test_dgr_replays_from_the_decoder_as_it_was_when_the_task_began() -> None:
    learner, stream = _learner("dgr")
    learner.begin_task(0)
    _train(learner, stream, 0, 3)
    learner.begin_task(1)
    replay = learner.replay
    assert isinstance(replay, VAEReplay)
    first = replay.sample(16, 1, torch.Generator().manual_seed(5))
    _train(learner, stream, 1, 5)
    assert torch.equal(replay.sample(16, 1, torch.Generator().manual_seed(5)), first)
    assert not torch.equal(replay.previous[0].weight, replay.decoder[0].weight)  # the live decoder moved


def test_replayed_inputs_are_labelled_by_the_classifier_from_before_the_task(monkeypatch) -> None:
    learner, stream = _learner("hnet+r")
    learner.begin_task(0)
    _train(learner, stream, 0, 5)
    learner.begin_task(1)
    seen = {}
    original = torch.nn.functional.cross_entropy

    def spy(logits, labels, *a, **k):
        seen.setdefault("calls", []).append((logits.detach().clone(), labels.clone()))
        return original(logits, labels, *a, **k)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", spy)
    replayed = learner.replay.sample(32, 1, torch.Generator().manual_seed(0))
    monkeypatch.setattr(learner.replay, "sample", lambda n, t, g: replayed[:n])
    previous = learner.previous
    assert previous is not None
    _train(learner, stream, 1, 1)
    logits, labels = seen["calls"][-1]  # the replay term: 4 classes active, labels of task 0's 2
    assert logits.shape == (32, 4)
    assert torch.equal(labels, previous(replayed)[:, :2].argmax(-1))


def test_the_vae_loss_by_hand() -> None:
    torch.manual_seed(0)
    encoder, decoder = mlp(6, (5,), 2 * 3), mlp(3, (5,), 6)
    x = torch.rand(4, 6)
    loss = vae_loss(encoder, decoder, x, torch.Generator().manual_seed(1))
    mu, logvar = encoder(x).chunk(2, dim=-1)
    z = mu + torch.randn(4, 3, generator=torch.Generator().manual_seed(1)) * torch.exp(logvar / 2)
    p = torch.sigmoid(decoder(z))
    recon = -(x * p.log() + (1 - x) * (1 - p).log()).sum()
    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum()
    assert torch.allclose(loss, (recon + kl) / 24, atol=1e-5)


@pytest.mark.parametrize(
    ("methods", "generator"), [(("hnet+r", "dgr"), 0), (("hnet", "finetune", "hnet+r"), 0), (("hnet", "hnet+r"), 24)]
)
def test_parameter_counts_of_the_replay_methods(methods, generator) -> None:
    cfg = ContinualConfig(
        **{**SMALL, "scenarios": ("CL1", "CL2", "CL3"), "methods": methods, "replay_chunk_hidden": generator}
    )
    stream = make_stream(cfg.benchmark, cfg.data, cfg.tasks)
    built = {}
    for unit in plan(cfg, cfg.tasks):
        learner = make_learner(unit, cfg, stream, torch.device("cpu"))
        for t in range(cfg.tasks):
            learner.begin_task(t)
        built[unit.key] = learner.num_parameters()
    assert count_parameters(cfg) == built
    assert not any(k.endswith("/CL1") for k in built if k.split("/")[0] in ("hnet+r", "dgr"))


def test_hnet_r_defaults_to_its_best_measured_replay_hypernetwork() -> None:
    cfg = ContinualConfig()
    assert (cfg.replay_lr, cfg.replay_beta, cfg.replay_chunk_hidden, cfg.replay_generator) == (3e-3, 0.01, 300, (300,))
    learner, _ = _learner("hnet+r")  # SMALL's --chunk_hidden 16 is the classifier hypernetwork's only
    replay = learner.replay
    assert isinstance(replay, HypernetReplay) and replay.hnet.head.generator.hidden == (300,)
    assert replay.regularizer.beta == 0.01
    old = ContinualConfig(replay_lr=0.0, replay_beta=0.003, replay_chunk_hidden=0)  # the earlier defaults
    assert (old.replay_lr, old.replay_beta, old.replay_generator) == (0.0, 0.003, old.chunk_hidden)
    quick = ContinualConfig(quick=True)  # the smoke run keeps a small generator
    assert quick.replay_generator == (32,) and quick.replay_generator == quick.chunk_hidden


def test_hnet_r_has_its_own_chunk_generator_and_learning_rate() -> None:
    learner, _ = _learner("hnet+r", replay_chunk_hidden=24, replay_lr=0.01, lr=0.002)
    replay = learner.replay
    assert isinstance(replay, HypernetReplay)
    assert replay.hnet.head.generator.hidden == (24,)  # the classifier hypernetwork's is --chunk_hidden, 16
    learner.begin_task(0)
    cfg = ContinualConfig(**{**SMALL, "replay_lr": 0.01, "lr": 0.002})
    opt = make_optimizer(cfg, "hnet+r/CL3", learner, 0)
    (classifier, vae) = opt.param_groups
    assert classifier["lr"] == 0.002 and vae["lr"] == 0.01
    assert {id(p) for p in classifier["params"]} == {id(p) for p in learner.model.parameters()}
    assert {id(p) for p in vae["params"]} == {id(p) for p in replay.parameters_for(0)}
    default = make_optimizer(ContinualConfig(**{**SMALL, "lr": 0.002}), "hnet+r/CL3", learner, 0)
    assert [g["lr"] for g in default.param_groups] == [0.002, 3e-3]  # the default --replay_lr 3e-3
    same = make_optimizer(ContinualConfig(**{**SMALL, "lr": 0.002, "replay_lr": 0.0}), "hnet+r/CL3", learner, 0)
    assert len(same.param_groups) == 1 and same.param_groups[0]["lr"] == 0.002  # --replay_lr 0: --lr
    dgr, _ = _learner("dgr")
    dgr.begin_task(0)
    assert [g["lr"] for g in make_optimizer(cfg, "dgr/CL3", dgr, 0).param_groups] == [0.002]  # DGR: --lr
    with pytest.raises(ValueError, match="replay_lr must be >= 0, got -0.1"):
        learner.param_groups(0, 0.002, -0.1)


def test_bad_input() -> None:
    code, err = _run(["continual", *TINY, "--methods", "hnet+r,dgr", "--scenarios", "CL1", "--out", "/nonexistent/x"])
    assert code == 2 and "--methods hnet+r,dgr train in CL2 and CL3 only" in err and "--scenarios CL1" in err
    with pytest.raises(ValueError, match="scenario must be CL2 or CL3"):
        ReplayLearner(mlp(4, (4,), 2), "CL1", 2, 1, VAEReplay(mlp(4, (4,), 2), mlp(1, (4,), 4), 1))
    with pytest.raises(TypeError, match="replay must be a ReplayModel, got Linear"):
        ReplayLearner(mlp(4, (4,), 2), "CL2", 2, 1, torch.nn.Linear(1, 1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="latent must be an int >= 1, got 0"):
        VAEReplay(mlp(4, (4,), 2), mlp(1, (4,), 4), 0)


# ---------------------------------------------------------------------- a run, and its resume
_RESUME = TINY + ["--num_tasks", "2", "--scenarios", "CL2,CL3", "--methods", "hnet+r,dgr", "--checkpoint_every", "1"]
_RESUME += ["--replay_lr", "0.002", "--replay_chunk_hidden", "24"]  # HNET+R's optimizer of two parameter groups


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("replay") / "full"
    code, err = _run(["continual", *_RESUME, "--out", str(out)])
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert "| hnet+r |" in (out / "summary.md").read_text()
    return results


def test_a_run_measures_both_replay_methods_in_cl2_and_cl3(uninterrupted: dict) -> None:
    m = uninterrupted["metrics"]
    assert set(m["methods"]) == {"hnet+r", "dgr"}
    for method in ("hnet+r", "dgr"):
        assert set(m["methods"][method]) == {"CL2", "CL3"}
        assert m["methods"][method]["CL3"]["task_inference"] is not None  # the predicted class's task
        assert m["methods"][method]["CL2"]["task_inference"] is None
        assert 0 < m["compression"][f"{method}/CL3"]


# 4 checkpoints per unit of 2 tasks (inside task 1, between the tasks, inside task 2, after the
# unit); units hnet+r/CL2, hnet+r/CL3, dgr/CL2, dgr/CL3: 7 is inside HNET+R's second CL3 task
# (snapshot and previous classifier saved), 15 inside DGR's (previous decoder saved)
@pytest.mark.parametrize("stop_after", [7, 15])
def test_resume_ends_with_the_same_results(tmp_path: Path, monkeypatch, uninterrupted: dict, stop_after: int) -> None:
    resumed = interrupt_then_resume(monkeypatch, "continual", _RESUME, tmp_path / "run", stop_after)
    assert resumed["methods"] == uninterrupted["metrics"]["methods"]
    assert resumed["parameters"] == uninterrupted["metrics"]["parameters"]
