"""The methods a user imports: the output regulariser, the look-ahead step, task inference by
entropy, and the hypernetwork learner, each against a plain PyTorch reference."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn import MLP, Chunked, HyperNetwork, Noise, Target, TaskEmbedding
from hyperdnn.methods import (
    HypernetLearner,
    OutputRegularizer,
    adam_candidate_step,
    entropy_task_inference,
    predict_with_task_inference,
)


def _small_hnet(num_tasks: int = 3) -> HyperNetwork:
    torch.manual_seed(0)
    target = Target(nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)))
    return HyperNetwork(target, TaskEmbedding(num_tasks, 4), MLP((8,)), Chunked(10, 4, hidden=(8,)))


# ---------------------------------------------------------------------- the regulariser
def test_regularizer_is_zero_after_snapshot_and_grows_with_drift() -> None:
    hnet = _small_hnet()
    reg = OutputRegularizer(beta=0.5)
    assert float(reg(hnet).detach()) == 0.0  # no snapshot yet: no earlier tasks
    reg.snapshot(hnet, 3)
    assert reg.num_tasks == 3 and float(reg(hnet).detach()) == 0.0
    base = {n: p.detach().clone() for n, p in hnet.named_parameters()}
    g = torch.Generator().manual_seed(1)
    noise = {n: torch.randn(p.shape, generator=g) for n, p in base.items() if not n.startswith("conditioner.")}
    values = []
    for scale in (0.0, 1e-3, 1e-2, 1e-1, 1.0):
        with torch.no_grad():
            for n, p in hnet.named_parameters():
                p.copy_(base[n] + scale * noise[n] if n in noise else base[n])
        values.append(float(reg(hnet).detach()))
    assert values[0] == 0.0
    assert all(a < b for a, b in zip(values, values[1:])), values
    # the definition: beta * mean over tasks of the squared distance of the flat weights
    flat = torch.stack([hnet.spec.flatten(hnet(k)) for k in range(3)])
    assert torch.allclose(reg(hnet), 0.5 * (flat - reg.targets).pow(2).sum(1).mean())
    # gradients reach the hypernetwork, not the frozen targets
    reg(hnet).backward()
    assert all(hnet.get_parameter(n).grad is not None for n in noise)


def test_regularizer_is_one_batched_pass_with_lookahead_and_subsets() -> None:
    hnet = _small_hnet(4)
    reg = OutputRegularizer(beta=1.0)
    reg.snapshot(hnet, 4)
    calls: list[int] = []
    handle = hnet.trunk.register_forward_hook(lambda m, i, o: calls.append(int(i[0].shape[0])))
    d = {n: 0.05 * torch.randn_like(p) for n, p in hnet.named_parameters() if not n.startswith("conditioner.")}
    lookahead = reg(hnet, delta=d)
    handle.remove()
    assert calls == [4]  # every earlier task in one pass of batch 4
    # regularising at Theta + dTheta equals moving the parameters there
    moved = copy.deepcopy(hnet)
    with torch.no_grad():
        for n, p in moved.named_parameters():
            if n in d:
                p.add_(d[n])
    assert torch.allclose(lookahead, reg(moved), rtol=1e-5, atol=1e-7)
    assert torch.equal(reg(hnet, delta={n: torch.zeros_like(v) for n, v in d.items()}), reg(hnet))
    with pytest.raises(ValueError, match="unknown hypernetwork parameters"):
        reg(hnet, delta={"nope": torch.zeros(1)})
    sub = OutputRegularizer(beta=1.0, num_sampled=2)
    sub.snapshot(hnet, 4)
    ids = sub.task_ids(torch.Generator().manual_seed(0))
    assert ids.tolist() == sorted(set(ids.tolist())) and len(ids) == 2 and int(ids.max()) < 4


def test_adam_candidate_step_is_the_step_adam_takes() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        opt.step()
    opt.zero_grad()
    model(torch.randn(8, 4)).pow(2).mean().backward()
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    predicted = adam_candidate_step(opt, params, [p.grad for p in params])
    opt.step()
    for p, b, d in zip(params, before, predicted):
        assert torch.allclose(p.detach() - b, d, atol=1e-7)


def test_entropy_task_inference_picks_the_most_certain_task() -> None:
    logits = torch.zeros(3, 2, 4)
    logits[1, 0, 2] = 10.0  # input 0: task 1 is certain
    logits[2, 1, 0] = 5.0  # input 1: task 2 is certain
    assert entropy_task_inference(logits).tolist() == [1, 2]
    with pytest.raises(ValueError, match=r"expected logits \(K, N, C\)"):
        entropy_task_inference(torch.zeros(2, 3))


def test_predictions_in_each_scenario_follow_the_most_certain_task() -> None:
    logits = torch.zeros(3, 2, 4)  # 3 task models, 2 inputs, 4 classes
    logits[0, :, 1] = 1.0  # task 0 leans to class 1 on both inputs
    logits[2, 0, 3] = 9.0  # task 2 is certain of class 3 on input 0
    logits[1, 1, 2] = 9.0  # task 1 is certain of class 2 on input 1
    calls = []

    def task_logits(x, ids):
        calls.append(ids.tolist())
        return logits[ids]

    x = torch.zeros(2, 5)
    pred, inferred = predict_with_task_inference(task_logits, x, 0, 3, "CL1", 4)
    assert pred.tolist() == [1, 1] and inferred is None and calls[-1] == [0]  # the given task only
    pred, inferred = predict_with_task_inference(task_logits, x, 0, 3, "CL2", 4)
    assert inferred.tolist() == [2, 1] and pred.tolist() == [3, 2] and calls[-1] == [0, 1, 2]
    pred, _ = predict_with_task_inference(task_logits, x, 0, 3, "CL3", 4)
    assert pred.tolist() == [2 * 4 + 3, 1 * 4 + 2]  # task * classes + local
    with pytest.raises(ValueError, match=r"scenario must be one of \('CL1', 'CL2', 'CL3'\), got 'CL4'"):
        predict_with_task_inference(task_logits, x, 0, 3, "CL4", 4)


def test_method_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="beta must be a finite float >= 0, got -1"):
        OutputRegularizer(-1)
    with pytest.raises(ValueError, match="num_sampled must be an int >= 0, got 1.5"):
        OutputRegularizer(0.1, 1.5)  # type: ignore[arg-type]
    target = Target(nn.Linear(3, 2))
    with pytest.raises(TypeError, match="hnet needs a TaskEmbedding conditioner, got Noise"):
        HypernetLearner(HyperNetwork(target, Noise(4)), target, 2, 0.1)
    with pytest.raises(ValueError, match="classes_per_task must be an int >= 1, got 0"):
        HypernetLearner(HyperNetwork(target, TaskEmbedding(1, 4)), target, 0, 0.1)
    model = nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    with pytest.raises(ValueError, match="expected one gradient per parameter, got 1 for 2"):
        adam_candidate_step(opt, list(model.parameters()), [None])
    with pytest.raises(ValueError, match=r"parameters \[0\] \(by position\) are not in the optimizer"):
        adam_candidate_step(opt, [nn.Parameter(torch.ones(1))], [torch.ones(1)])
    # Adam-like optimizers that step otherwise: Adam's formula would predict a wrong step
    for other in (torch.optim.NAdam, torch.optim.RAdam, torch.optim.Adamax, torch.optim.SGD):
        with pytest.raises(TypeError, match=f"expected a torch.optim.Adam .*, got {other.__name__}"):
            adam_candidate_step(other(model.parameters(), lr=0.1), list(model.parameters()), [None, None])


def test_the_regularizer_is_zero_right_after_its_snapshot_with_dropout_in_the_trunk() -> None:
    # the snapshot is taken in eval mode; the penalty was computed in train mode, so a trunk's
    # dropout gave it a random, non-zero value with no change to the hypernetwork
    torch.manual_seed(0)
    target = Target(nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)))
    hnet = HyperNetwork(target, TaskEmbedding(3, 4), MLP((16, 16), dropout=0.3))
    reg = OutputRegularizer(beta=1.0)
    reg.snapshot(hnet, 2)
    hnet.train()
    assert [float(reg(hnet).detach()) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert hnet.training


def test_the_hypernetwork_learner_keeps_batchnorm_statistics_per_task() -> None:
    # it ran the bare target: one set of running statistics for every task, so an old task
    # was evaluated with the last task's statistics
    torch.manual_seed(0)
    target = Target(nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)))
    learner = HypernetLearner(HyperNetwork(target, TaskEmbedding(1, 4), MLP((8,))), target, 2, beta=0.1)
    g = torch.Generator().manual_seed(1)
    for t, (scale, shift) in enumerate(((1.0, 0.0), (5.0, 3.0))):
        learner.begin_task(t)
        opt = torch.optim.Adam(learner.parameters_for(t), lr=1e-2)
        for _ in range(5):
            x, y = torch.randn(16, 6, generator=g) * scale + shift, torch.randint(0, 2, (16,), generator=g)
            learner.train_step(t, x, y, torch.full_like(y, t), opt, g)
    learner.hnet.eval()
    target.eval()
    x = torch.randn(10, 6, generator=g)
    logits = learner.task_logits(x, torch.tensor([0, 1]))
    for t in (0, 1):
        plain = learner.model.materialize(t).eval()  # task t's weights and its own statistics
        torch.testing.assert_close(logits[t], plain(x))
    stats = [learner.model.materialize(t)[1].running_mean for t in (0, 1)]
    assert not torch.allclose(stats[0], stats[1], atol=0.1)
    tensors, meta = learner.state()
    other = HypernetLearner(HyperNetwork(copy.deepcopy(target), TaskEmbedding(1, 4), MLP((8,))), target, 2, beta=0.1)
    other.load_state(tensors, meta)
    other.hnet.eval()
    torch.testing.assert_close(other.task_logits(x, torch.tensor([0, 1])), logits)


def test_the_hypernetwork_learner_on_its_first_task_is_ordinary_hypernetwork_training() -> None:
    torch.manual_seed(0)
    target = Target(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2)))
    hnet = HyperNetwork(target, TaskEmbedding(1, 4), MLP((8,)))
    plain = copy.deepcopy(hnet)
    learner = HypernetLearner(hnet, target, 2, beta=0.1)
    learner.begin_task(0)
    opt = torch.optim.Adam(learner.parameters_for(0), lr=1e-2)
    plain_opt = torch.optim.Adam(plain.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        x, y = torch.randn(16, 6, generator=g), torch.randint(0, 2, (16,), generator=g)
        assert learner.train_step(0, x, y, torch.zeros_like(y), opt, g)["reg"] == 0.0
        plain_opt.zero_grad()
        F.cross_entropy(target(plain(0), x), y).backward()
        plain_opt.step()
    for (n, a), b in zip(learner.hnet.named_parameters(), plain.parameters()):
        assert torch.equal(a, b), n
    # its state round-trips into a fresh learner
    tensors, meta = learner.state()
    other = HypernetLearner(copy.deepcopy(plain), target, 2, beta=0.1)
    other.load_state(tensors, meta)
    assert all(torch.equal(a, b) for a, b in zip(other.hnet.parameters(), learner.hnet.parameters()))
    with pytest.raises(ValueError, match="the saved state does not fit the hypernetwork"):
        other.load_state({"hnet.nope": torch.ones(1)}, meta)


def test_the_learner_warns_once_when_the_optimizer_leaves_the_tasks_embedding_fixed() -> None:
    # one optimizer built before task 1 began: task 1's embedding never moved, without a word
    torch.manual_seed(0)
    target = Target(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    learner = HypernetLearner(HyperNetwork(target, TaskEmbedding(1, 4), MLP((16,))), target, 2, beta=0.1)
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    learner.begin_task(0)
    opt = torch.optim.Adam(learner.parameters_for(0), lr=1e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learner.train_step(0, x, y, torch.zeros_like(y), opt, torch.Generator())
    learner.begin_task(1)
    with pytest.warns(UserWarning, match="does not hold task 1's embedding, which stays fixed"):
        learner.train_step(1, x, y, torch.ones_like(y), opt, torch.Generator())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per task
        learner.train_step(1, x, y, torch.ones_like(y), opt, torch.Generator())
