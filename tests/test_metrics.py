"""Metrics: classification accuracy and the continual-learning summaries, against plain
computations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hyperdnn.data.streams import Task
from hyperdnn.metrics import accuracy, accuracy_summary, model_accuracy, task_accuracies


def test_accuracy_is_the_float32_mean_of_correct_arg_maxes() -> None:
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(449, 10, generator=g), torch.randint(0, 10, (449,), generator=g)
    assert accuracy(logits, labels) == float((logits.argmax(1) == labels).float().mean())
    with pytest.raises(ValueError, match=r"expected logits \(N, C\), got shape \(3,\)"):
        accuracy(torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected labels of shape \(3,\) for logits \(3, 2\), got \(4,\)"):
        accuracy(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))


def test_model_accuracy_runs_in_eval_mode_and_restores_the_mode() -> None:
    net = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.9))
    x, y = torch.randn(50, 4), torch.randint(0, 3, (50,))
    with torch.no_grad():
        expected = accuracy(net[0](x), y)  # dropout is off in eval mode
    assert model_accuracy(net, x, y) == expected and net.training
    net.eval()
    model_accuracy(net, x, y)
    assert not net.training


def test_accuracy_summary() -> None:
    m = torch.tensor([[0.9, float("nan")], [0.7, 0.8]], dtype=torch.float64)
    s = accuracy_summary(m)
    assert s["final_avg"] == pytest.approx(0.75) and s["bwt"] == pytest.approx(-0.2)
    assert s["just_trained"] == pytest.approx(0.85)
    joint = torch.full((2, 2), float("nan"), dtype=torch.float64)
    joint[-1] = 0.9
    assert accuracy_summary(joint)["final_avg"] == pytest.approx(0.9)
    one = accuracy_summary(torch.tensor([[0.5]], dtype=torch.float64))
    assert one["final_avg"] == 0.5 and one["bwt"] != one["bwt"]  # NaN: no earlier task
    with pytest.raises(ValueError, match=r"expected a square \(T, T\) matrix, got \(2, 3\)"):
        accuracy_summary(torch.zeros(2, 3))


def test_average_forgetting_is_the_drop_from_each_tasks_best_accuracy() -> None:
    nan = float("nan")
    # task 0 peaks after task 1 (0.95), task 1 after its own training; task 2 is the last
    m = torch.tensor([[0.9, nan, nan], [0.95, 0.8, nan], [0.7, 0.85, 0.9]], dtype=torch.float64)
    s = accuracy_summary(m)
    by_hand = ((0.95 - 0.7) + (0.8 - 0.85)) / 2
    assert s["forgetting"] == pytest.approx(by_hand)
    assert s["forgetting"] >= -s["bwt"]  # at least the drop from the diagonal
    # a random lower-triangular matrix against a loop over the definition
    g = torch.Generator().manual_seed(0)
    for T in (2, 3, 6):
        a = torch.rand(T, T, generator=g, dtype=torch.float64).tril() + torch.full((T, T), nan).triu(1).double()
        loop = sum(max(float(a[row, j]) for row in range(j, T - 1)) - float(a[T - 1, j]) for j in range(T - 1)) / (
            T - 1
        )
        assert accuracy_summary(a)["forgetting"] == pytest.approx(loop)
    joint = torch.full((3, 3), nan, dtype=torch.float64)
    joint[-1] = 0.9
    assert math.isnan(accuracy_summary(joint)["forgetting"])  # earlier rows not measured
    assert math.isnan(accuracy_summary(torch.tensor([[0.5]], dtype=torch.float64))["forgetting"])


def test_task_accuracies_is_a_row_of_the_matrix_in_each_scenario() -> None:
    g = torch.Generator().manual_seed(0)
    tasks = [Task(t, f"t{t}", (0, 1), torch.zeros(4, 3), torch.zeros(4, dtype=torch.long),
                  torch.randn(5 + t, 3, generator=g), torch.randint(0, 2, (5 + t,), generator=g)) for t in range(2)]  # fmt: skip
    calls = []

    def predict(x, task, seen, scenario):
        calls.append((task, seen, scenario, x.shape[0]))
        local = (x[:, 0] > 0).long()
        inferred = torch.full((x.shape[0],), task) if scenario != "CL1" else None
        return (local + 2 * task if scenario == "CL3" else local), inferred

    for scenario in ("CL1", "CL3"):
        row, inferred = task_accuracies(predict, tasks, scenario, 2, batch_size=4)
        plain = [float(((t.x_test[:, 0] > 0).long() == t.y_test).float().sum()) / len(t.y_test) for t in tasks]
        assert row == pytest.approx(plain)
        assert inferred == (None if scenario == "CL1" else 1.0)
    assert [c for c in calls if c[2] == "CL1"] == [
        (0, 2, "CL1", 4),
        (0, 2, "CL1", 1),
        (1, 2, "CL1", 4),
        (1, 2, "CL1", 2),
    ]


def test_metrics_refuse_shapes_that_would_broadcast() -> None:
    g = torch.Generator().manual_seed(0)
    task = Task(0, "t0", (0, 1), torch.zeros(4, 3), torch.zeros(4, dtype=torch.long),
                torch.randn(10, 3, generator=g), torch.randint(0, 2, (10,), generator=g))  # fmt: skip

    def column(x, task, seen, scenario):
        return torch.zeros(x.shape[0], 1, dtype=torch.long), None  # (N, 1): would broadcast to (N, N)

    with pytest.raises(ValueError, match=r"predict must return labels \(and inferred tasks\) of shape \(10,\) for 10 inputs, got \(10, 1\)"):  # fmt: skip
        task_accuracies(column, [task], "CL1", 2)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\) for logits of 3 classes, got 0..3"):
        accuracy(torch.zeros(4, 3), torch.tensor([0, 1, 2, 3]))
