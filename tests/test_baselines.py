"""The continual-learning baselines, each against a plain PyTorch reference: fine-tuning and joint
training are cross-entropy on the scenario's outputs, EWC's penalty and Fisher information are
their formulas, separate networks are networks trained alone."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from hyperdnn.baselines import EWC, FineTuning, JointTraining, SeparateNetworks, scenario_outputs
from hyperdnn.data.streams import Task
from hyperdnn.networks import mlp


def _batch(seed: int, n: int = 16, features: int = 5, classes: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, features, generator=g), torch.randint(0, classes, (n,), generator=g)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("scenario", ["CL1", "CL2", "CL3"])
def test_fine_tuning_is_cross_entropy_on_the_scenarios_outputs(scenario) -> None:
    torch.manual_seed(0)
    k, T = 2, 3
    learner = FineTuning(mlp(5, (8,), scenario_outputs(scenario, k, T)), scenario, k, T)
    plain = copy.deepcopy(learner.model)
    learner.begin_task(1)  # the second task: CL3 trains on its 4 classes seen so far
    opt = torch.optim.SGD(learner.parameters_for(1), lr=0.1)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.1)
    for step in range(3):
        x, y = _batch(step)
        logs = learner.train_step(1, x, y, torch.ones_like(y), opt, torch.Generator())
        logits = plain(x)
        out = {"CL1": logits[:, 2:4], "CL2": logits, "CL3": logits[:, :4]}[scenario]
        target = y + 2 if scenario == "CL3" else y
        loss = F.cross_entropy(out, target)
        plain_opt.zero_grad()
        loss.backward()
        plain_opt.step()
        assert logs == {"loss": pytest.approx(loss.item())}
    assert _same(learner.model, plain)
    x, _ = _batch(9)
    pred, inferred = learner.predict(x, 1, 2, scenario)
    with torch.no_grad():
        logits = plain(x)
    expected = {"CL1": logits[:, 2:4], "CL2": logits, "CL3": logits[:, :4]}[scenario].argmax(-1)
    assert torch.equal(pred, expected) and inferred is None


def test_joint_training_mixes_tasks_in_a_batch_each_on_its_head() -> None:
    torch.manual_seed(0)
    learner = JointTraining(mlp(5, (8,), 6), "CL1", 2, 3)
    plain = copy.deepcopy(learner.model)
    learner.begin_task(2)
    x, y = _batch(0)
    ids = torch.arange(16) % 3
    opt, plain_opt = torch.optim.SGD(learner.parameters_for(2), lr=0.1), torch.optim.SGD(plain.parameters(), lr=0.1)
    learner.train_step(2, x, y, ids, opt, torch.Generator())
    logits = plain(x)
    per_sample = torch.stack([logits[i, 2 * int(t) : 2 * int(t) + 2] for i, t in enumerate(ids)])
    plain_opt.zero_grad()
    F.cross_entropy(per_sample, y).backward()
    plain_opt.step()
    assert _same(learner.model, plain)


def test_ewc_penalty_and_fisher_are_their_formulas() -> None:
    torch.manual_seed(0)
    learner = EWC(mlp(5, (8,), 2), "CL2", 2, 2, ewc_lambda=3.0, gamma=0.5, fisher_samples=12)
    x, y = _batch(0, n=20)
    task = Task(0, "toy", (0, 1), x, y, x, y)
    model = copy.deepcopy(learner.model)
    learner.end_task(0, task, torch.Generator().manual_seed(7))
    # the plain loop: the same samples and labels, one autograd.grad per sample
    g = torch.Generator().manual_seed(7)
    idx = torch.randperm(20, generator=g)[:12]
    with torch.no_grad():
        probs = model(x[idx]).softmax(-1)
    labels = torch.multinomial(probs, 1, generator=g).squeeze(1)
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for xi, yi in zip(x[idx], labels):
        grads = torch.autograd.grad(model(xi[None]).log_softmax(-1)[0, yi], list(model.parameters()))
        for (n, _), gr in zip(model.named_parameters(), grads):
            fisher[n] += gr.pow(2) / 12
    assert all(torch.allclose(learner.fisher[n], fisher[n], atol=1e-6) for n in fisher)
    assert float(learner.penalty().detach()) == 0.0  # at the anchor
    with torch.no_grad():
        for p in learner.model.parameters():
            p.add_(0.1)
    expected = 1.5 * sum((fisher[n] * 0.01).sum() for n in fisher)
    assert torch.allclose(learner.penalty(), expected, rtol=1e-4)
    # a second task: F <- gamma F + F_t
    before = {n: v.clone() for n, v in learner.fisher.items()}
    learner.end_task(1, task, torch.Generator().manual_seed(8))
    fresh = learner.fisher_information(1, task, torch.Generator().manual_seed(8))
    assert all(torch.allclose(learner.fisher[n], 0.5 * before[n] + fresh[n]) for n in before)


def test_separate_networks_are_networks_trained_alone() -> None:
    torch.manual_seed(0)
    learner = SeparateNetworks(lambda: mlp(5, (8,), 2), 2)
    plain = []
    for t in range(2):
        torch.manual_seed(t)
        learner.begin_task(t)
        torch.manual_seed(t)
        plain.append(mlp(5, (8,), 2))
        opt, plain_opt = (
            torch.optim.SGD(learner.parameters_for(t), lr=0.1),
            torch.optim.SGD(plain[t].parameters(), lr=0.1),
        )
        x, y = _batch(t)
        learner.train_step(t, x, y, torch.full_like(y, t), opt, torch.Generator())
        plain_opt.zero_grad()
        F.cross_entropy(plain[t](x), y).backward()
        plain_opt.step()
        assert _same(learner.nets[t], plain[t])
    x, _ = _batch(5)
    with torch.no_grad():
        assert torch.equal(learner.predict(x, 0, 2, "CL1")[0], plain[0](x).argmax(-1))
    tensors, meta = learner.state()
    other = SeparateNetworks(lambda: mlp(5, (8,), 2), 2)
    other.load_state(tensors, meta)
    assert len(other.nets) == 2 and _same(other.nets, learner.nets)


def test_baselines_check_their_arguments_and_saved_states() -> None:
    with pytest.raises(ValueError, match=r"scenario must be one of \('CL1', 'CL2', 'CL3'\), got 'CL9'"):
        FineTuning(mlp(5, (), 2), "CL9", 2, 2)
    with pytest.raises(ValueError, match="num_tasks must be an int >= 1, got 0"):
        scenario_outputs("CL1", 2, 0)
    with pytest.raises(TypeError, match="FineTuning: model must be an nn.Module, got str"):
        FineTuning("net", "CL1", 2, 2)  # type: ignore[arg-type]
    wrong = FineTuning(mlp(5, (), 3), "CL1", 2, 2)
    with pytest.raises(ValueError, match="the model gives 3 outputs; scenario CL1 with 2 tasks of 2 classes needs 4"):
        wrong.predict(torch.zeros(1, 5), 0, 1, "CL1")
    for kwargs, message in [
        ({"ewc_lambda": -1.0}, "ewc_lambda must be a finite float >= 0, got -1.0"),
        ({"ewc_lambda": 1.0, "gamma": 2.0}, r"gamma must be a float in \[0, 1\], got 2.0"),
        ({"ewc_lambda": 1.0, "fisher_samples": 0}, "fisher_samples must be an int >= 1, got 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            EWC(mlp(5, (), 2), "CL2", 2, 2, **kwargs)
    with pytest.raises(TypeError, match="make_network must be callable, got int"):
        SeparateNetworks(3, 2)  # type: ignore[arg-type]
    learner = FineTuning(mlp(5, (), 4), "CL1", 2, 2)
    with pytest.raises(ValueError, match="the saved state does not fit the finetune network"):
        learner.load_state({"model.nope": torch.ones(1)}, {"active": 2})
    ewc = EWC(mlp(5, (), 2), "CL2", 2, 2, ewc_lambda=1.0)
    tensors, meta = ewc.state()
    with pytest.raises(ValueError, match=r"Fisher information does not fit the network: missing \['0.bias'\]"):
        ewc.load_state({**tensors, "fisher.0.weight": torch.ones(2, 5)}, meta)


def test_sequential_learners_train_one_task_at_a_time_and_joint_training_the_active_ones() -> None:
    x, y = _batch(0, n=4)
    for learner in (FineTuning(mlp(5, (), 4), "CL1", 2, 2), EWC(mlp(5, (), 4), "CL1", 2, 2, ewc_lambda=1.0)):
        opt = torch.optim.SGD(learner.parameters_for(0), lr=0.1)
        with pytest.raises(ValueError, match=r"trains one task at a time: expected task ids 0, got \[1\] too"):
            learner.train_step(0, x, y, torch.tensor([0, 1, 0, 1]), opt, torch.Generator())
    joint = JointTraining(mlp(5, (), 6), "CL3", 2, 3)
    joint.begin_task(1)
    with pytest.raises(ValueError, match=r"JointTraining: task ids must lie in \[0, 1\], got \[2\]"):
        joint.train_step(1, x, y, torch.tensor([0, 1, 2, 2]), torch.optim.SGD(joint.parameters_for(1)), None)
