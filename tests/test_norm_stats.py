"""BatchNorm running statistics across contexts: per context, per batch, shared."""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from hyperdnn import (
    MLP,
    Chunked,
    Continuous,
    DataEncoder,
    HyperModel,
    HyperNetwork,
    LearnedLatent,
    Noise,
    NormStats,
    Once,
    Target,
    TaskEmbedding,
)
from hyperdnn.norm_stats import resolve_norm_stats

STATS = ("running_mean", "running_var", "num_batches_tracked")


def bn_net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 6), nn.BatchNorm1d(6))


def task_model(norm_stats: str = "auto", num_tasks: int = 3, seed: int = 0) -> HyperModel:
    torch.manual_seed(seed)
    target = Target(bn_net())
    return HyperModel(HyperNetwork(target, TaskEmbedding(num_tasks, 4), MLP((16,)), Chunked(32, 4)), target, norm_stats)


def buffers_of(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.named_buffers()}


def bn_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The BatchNorm statistics of a plain module, keyed like NormStats.statistics."""
    return {
        path: {name: m._buffers[name] for name in STATS}
        for path, m in module.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    }


def assert_stats_equal(got, expected):
    assert got.keys() == expected.keys()
    for path in got:
        for name in STATS:
            torch.testing.assert_close(got[path][name], expected[path][name])


# ------------------------------------------------------------------ modes


@pytest.mark.parametrize(
    "make_conditioner,with_bn,expected",
    [
        (lambda: TaskEmbedding(2, 4), True, "per_context"),
        (lambda: DataEncoder(nn.Linear(4, 3), 3), True, "batch"),
        (lambda: Noise(3), True, "batch"),
        (lambda: Continuous(1), True, "batch"),
        (lambda: LearnedLatent(3), True, "shared"),
        (lambda: TaskEmbedding(2, 4), False, "shared"),
    ],
)
def test_auto_resolves_from_the_conditioner_and_the_target(make_conditioner, with_bn, expected):
    net = bn_net() if with_bn else nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    target = Target(net)
    model = HyperModel(HyperNetwork(target, make_conditioner(), MLP((8,))), target)
    assert model.norm_stats.mode == expected
    assert resolve_norm_stats("auto", make_conditioner(), net) == expected


def test_per_context_needs_task_ids():
    target = Target(bn_net())
    with pytest.raises(
        ValueError,
        match=r"norm_stats='per_context' .* needs a conditioner whose contexts are keys .* got Noise \(policy 'batch'\)",
    ):
        HyperModel(HyperNetwork(target, Noise(3), MLP((8,))), target, norm_stats="per_context")
    with pytest.raises(TypeError, match=r"norm_stats must be .* \(a string\), got None"):
        HyperModel(HyperNetwork(target, Noise(3), MLP((8,))), target, norm_stats=None)
    with pytest.raises(TypeError, match="NormStats: module must be an nn.Module, got int"):
        NormStats(3, "shared")
    with pytest.raises(TypeError, match="per-context statistics need an int key, got None"):
        with NormStats(bn_net(), "per_context").use(None):
            pass


def test_per_context_statistics_match_a_plain_batchnorm_per_task():
    model = task_model("per_context")
    net = model.target.module
    initial = buffers_of(net)
    weights = {t: {k: v.detach() for k, v in model.hypernet(t).items()} for t in (0, 1)}
    refs = {t: copy.deepcopy(net) for t in (0, 1)}
    torch.manual_seed(1)
    calls = [(0, torch.randn(16, 4)), (1, torch.randn(16, 4) * 3 + 2), (0, torch.randn(16, 4) - 1)]
    for task, x in calls:
        out = model(x, task)
        torch.testing.assert_close(out, functional_call(refs[task], weights[task], (x,)))
    for task in (0, 1):
        assert_stats_equal(model.norm_stats.statistics(task), bn_state(refs[task]))
    assert model.norm_stats.keys() == [0, 1]
    assert bool(model.norm_stats.statistics(0)["1"]["num_batches_tracked"] == 2)
    # the module's own statistics never moved
    for k, v in buffers_of(net).items():
        assert torch.equal(v, initial[k]), k
    model.eval()
    x = torch.randn(5, 4)
    for task in (0, 1):
        torch.testing.assert_close(model(x, task), functional_call(refs[task].eval(), weights[task], (x,)))
    # a task never seen uses the module's initial statistics
    torch.testing.assert_close(model(x, 2), functional_call(copy.deepcopy(net).eval(), model.hypernet(2), (x,)))


def test_evaluating_a_task_never_trained_adds_no_state():
    model = task_model("per_context", num_tasks=4)
    model(torch.randn(16, 4), 0)  # task 0 trains its statistics
    model.eval()
    keys = set(model.state_dict())
    x = torch.randn(5, 4)
    own = copy.deepcopy(model.target.module).eval()
    for context in (2, [3, 0, 3, 2, 0]):
        out = model(x, context)
        ids = torch.as_tensor([context] * 5 if isinstance(context, int) else context)
        weights = model.hypernet(ids)
        for i, t in enumerate(ids.tolist()):
            if t == 0:
                continue  # task 0 uses its own statistics (tested above)
            one = {k: v[i] for k, v in weights.items()}
            torch.testing.assert_close(out[i : i + 1], functional_call(own, one, (x[i : i + 1],)))
    assert model.norm_stats.keys() == [0]
    assert set(model.state_dict()) == keys
    # in train mode a new task gets its own copy, as before
    model.train()
    model(torch.randn(16, 4), 2)
    assert model.norm_stats.keys() == [0, 2]


def test_mixed_task_ids_run_one_group_per_task():
    model = task_model("per_context")
    twin = copy.deepcopy(model)
    torch.manual_seed(2)
    x = torch.randn(10, 4)
    ids = [0, 2, 0, 2, 2, 0, 0, 2, 0, 0]
    out = model(x, ids)
    # reference: each task's samples on their own, through a plain copy of the module
    net = twin.target.module
    refs = {t: copy.deepcopy(net) for t in (0, 2)}
    weights = twin.hypernet(torch.tensor(ids))
    expected = torch.empty_like(out)
    for task in (0, 2):
        rows = torch.tensor([i for i, t in enumerate(ids) if t == task])
        w = {k: v[rows] for k, v in weights.items()}
        expected[rows] = _per_sample_reference(refs[task], w, x[rows])
    torch.testing.assert_close(out, expected)
    for task in (0, 2):
        assert_stats_equal(model.norm_stats.statistics(task), bn_state(refs[task]))
    assert model.norm_stats.keys() == [0, 2]
    # eval: every sample normalised with its own task's statistics, as a loop of single calls
    model.eval()
    out = model(x, ids)
    loop = torch.cat([model(x[i : i + 1], t) for i, t in enumerate(ids)])
    torch.testing.assert_close(out, loop)
    # ensemble mode: member i is task ids[i] on the whole input
    members = model(x, torch.tensor(ids[:4]), mode="ensemble")
    assert members.shape == (4, 10, 6)
    for i, t in enumerate(ids[:4]):
        torch.testing.assert_close(members[i], model(x, t))
    out.sum().backward()  # gradients flow through the regrouping
    assert model.hypernet.conditioner.embeddings[2].grad is not None


def _per_sample_reference(module: nn.Module, weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Per-sample weights with BatchNorm statistics over the whole group, written out by hand:
    Linear -> BatchNorm1d -> ReLU -> Linear -> BatchNorm1d (the module's own BN updates)."""
    bn1, bn2 = module[1], module[4]
    h = torch.einsum("bi,boi->bo", x, weights["0.weight"]) + weights["0.bias"]
    h = F.batch_norm(h, bn1.running_mean, bn1.running_var, None, None, True, bn1.momentum, bn1.eps)
    bn1.num_batches_tracked.add_(1)
    h = torch.relu(h * weights["1.weight"] + weights["1.bias"])
    h = torch.einsum("bi,boi->bo", h, weights["3.weight"]) + weights["3.bias"]
    h = F.batch_norm(h, bn2.running_mean, bn2.running_var, None, None, True, bn2.momentum, bn2.eps)
    bn2.num_batches_tracked.add_(1)
    return h * weights["4.weight"] + weights["4.bias"]


def test_batch_statistics_in_eval_too_and_the_module_untouched():
    torch.manual_seed(0)
    target = Target(bn_net())
    model = HyperModel(HyperNetwork(target, Noise(3), MLP((8,)), Once()), target)
    assert model.norm_stats.mode == "batch"
    initial = buffers_of(target.module)
    z, x = torch.randn(3, 3), torch.randn(12, 4)
    train_out = model(x, z)
    model.eval()
    eval_out = model(x, z)
    torch.testing.assert_close(eval_out, train_out)
    weights = model.hypernet(z)
    for k in range(3):
        ref = copy.deepcopy(target.module).train()  # train mode: the batch's own statistics
        torch.testing.assert_close(eval_out[k], functional_call(ref, {n: w[k] for n, w in weights.items()}, (x,)))
    for k, v in buffers_of(target.module).items():
        assert torch.equal(v, initial[k]), k
    assert model.norm_stats.keys() == []


# ------------------------------------------------------------------ nothing half-changed


class Boom(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.bn = nn.BatchNorm1d(6)
        self.fail = False

    def forward(self, x):
        h = self.bn(self.fc(x))
        if self.fail:
            raise RuntimeError("boom")
        return h


@pytest.mark.parametrize("norm_stats,context", [("per_context", 1), ("per_context", [0, 1, 1, 0]), ("batch", None)])
@pytest.mark.parametrize("training", [True, False])
def test_buffers_are_restored_when_the_forward_raises(norm_stats, context, training):
    torch.manual_seed(0)
    target = Target(Boom())
    cond = TaskEmbedding(2, 4) if norm_stats == "per_context" else Continuous(1)
    model = HyperModel(HyperNetwork(target, cond, MLP((8,))), target, norm_stats).train(training)
    context = torch.tensor([0.5]) if context is None else context
    bn = target.module.bn
    objects = dict(bn._buffers)
    values = {k: v.clone() for k, v in objects.items()}
    x = torch.randn(4, 4)
    model(x, context)  # a successful call restores them too
    assert all(bn._buffers[k] is objects[k] for k in objects)
    target.module.fail = True
    with pytest.raises(RuntimeError, match="boom"):
        model(x, context)
    assert all(bn._buffers[k] is objects[k] for k in objects)
    for k, v in values.items():
        assert torch.equal(bn._buffers[k], v), k


# ------------------------------------------------------------------ state_dict, .to()


def test_state_dict_round_trip_into_a_fresh_model():
    model = task_model("per_context")
    torch.manual_seed(3)
    for task in (0, 1, 0):
        model(torch.randn(8, 4) + task, task)
    state = model.state_dict()
    assert {k for k in state if k.startswith("norm_stats.")} == {
        f"norm_stats.contexts.{t}.{i}.{name}" for t in (0, 1) for i in (0, 1) for name in STATS
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh = task_model("per_context", seed=1)
    fresh.load_state_dict(torch.load(buffer))
    assert fresh.norm_stats.keys() == [0, 1]
    for task in (0, 1):
        assert_stats_equal(fresh.norm_stats.statistics(task), model.norm_stats.statistics(task))
    model.eval()
    fresh.eval()
    x = torch.randn(5, 4)
    for task in (0, 1):
        torch.testing.assert_close(fresh(x, task), model(x, task))
    # a task without stored statistics starts from the module's initial ones
    initial = bn_state(copy.deepcopy(bn_net()))
    assert_stats_equal(fresh.norm_stats.statistics(2), initial)
    fresh.train()
    x = torch.randn(8, 4)
    ref = copy.deepcopy(fresh.target.module)
    fresh(x, 2)
    functional_call(ref, {k: v.detach() for k, v in fresh.hypernet(2).items()}, (x,))
    assert_stats_equal(fresh.norm_stats.statistics(2), bn_state(ref))
    # strict loading still names what does not fit
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*norm_stats.contexts"):
        task_model("shared").load_state_dict(state)


def test_per_context_statistics_move_with_to():
    model = task_model("per_context")
    model(torch.randn(8, 4), 0)
    model.double()
    stats = model.norm_stats.statistics(0)["1"]
    assert stats["running_mean"].dtype == torch.float64 and stats["num_batches_tracked"].dtype == torch.int64
    model(torch.randn(8, 4, dtype=torch.float64), 1)  # a new key follows the module's dtype
    assert model.norm_stats.statistics(1)["4"]["running_var"].dtype == torch.float64
    model.to("meta")
    assert all(
        t.device.type == "meta" for key in (0, 1) for s in model.norm_stats.statistics(key).values() for t in s.values()
    )


# ------------------------------------------------------------------ the warning


def test_shared_statistics_warn_once_when_a_second_task_arrives():
    model = task_model("shared")
    x = torch.randn(6, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(x, 0)
        model(x, torch.tensor([0, 0, 0, 0, 0, 0]))
    with pytest.warns(UserWarning, match=r"BatchNorm layers \['1', '4'\] share one set .* norm_stats='per_context'"):
        model(x, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(x, 2)
        model(x, [0, 1, 2, 0, 1, 2])
        task_model("per_context")(x, [0, 1, 2, 0, 1, 2])  # per-context statistics: nothing to warn about
    with pytest.warns(UserWarning, match="share one set"):
        task_model("shared")(x, [0, 1, 0, 1, 0, 1])  # two tasks in one batch


# ------------------------------------------------------------------ the acceptance test


def rotated_digits_tasks():
    from hyperdnn.data import load_digits

    d = load_digits()

    def images(x, task):
        img = x.reshape(-1, 1, 8, 8)
        return img if task == 0 else torch.rot90(img, 1, dims=(2, 3))

    return d, images


def train_two_tasks(norm_stats: str) -> dict[int, tuple[float, float]]:
    """Digits (task 0) and digits rotated 90 degrees (task 1), alternating batches; returns
    (eval-mode, train-mode) test accuracy in percent per task."""
    d, images = rotated_digits_tasks()
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10),
    )
    target = Target(net)
    model = HyperModel(HyperNetwork(target, TaskEmbedding(2, 8), MLP((32,)), Once()), target, norm_stats)
    opt = model.adam(lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(8):
        perm = torch.randperm(len(d.x_train), generator=g)
        for i in range(0, len(perm), 64):
            rows = perm[i : i + 64]
            for task in (0, 1):
                loss = F.cross_entropy(model(images(d.x_train[rows], task), task), d.y_train[rows])
                opt.zero_grad()
                loss.backward()
                opt.step()
    result = {}
    with torch.no_grad():
        for task in (0, 1):
            x = images(d.x_test, task)
            accuracy = {}
            for training in (False, True):
                m = copy.deepcopy(model).train(training)  # a train-mode pass would move the statistics
                accuracy[training] = 100 * float((m(x, task).argmax(1) == d.y_test).float().mean())
            result[task] = (accuracy[False], accuracy[True])
    return result


def test_per_task_statistics_keep_eval_accuracy_at_train_mode_accuracy():
    pytest.importorskip("sklearn")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        per_task = train_two_tasks("auto")  # auto: per-context statistics for task ids
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the shared-statistics warning
            shared = train_two_tasks("shared")
    finally:
        torch.set_num_threads(threads)
    for task, (evaluated, trained) in per_task.items():
        assert trained > 90, (task, per_task)
        assert abs(evaluated - trained) <= 2.0, (task, per_task)
    # one set of statistics for both tasks: eval mode falls behind train mode
    gaps = [trained - evaluated for evaluated, trained in shared.values()]
    assert max(gaps) > 5.0, shared
    assert sum(gaps) > sum(abs(t - e) for e, t in per_task.values()) + 5.0, (shared, per_task)


@pytest.mark.parametrize(
    "conditioner, context",
    [
        (lambda: DataEncoder(nn.Linear(4, 3), 3), None),
        (lambda: Noise(3), torch.randn(3)),
        (lambda: Continuous(2), torch.rand(1, 2)),
    ],
)
def test_batch_statistics_on_a_batch_of_one_in_eval_name_the_setting(conditioner, context):
    # torch's own message ("when training") was all a user got, in eval mode
    torch.manual_seed(0)
    target = Target(bn_net())
    model = HyperModel(HyperNetwork(target, conditioner(), MLP((8,))), target).eval()
    assert model.norm_stats.mode == "batch"
    with pytest.raises(ValueError, match=r"norm_stats='batch' normalises every batch with its own statistics, in eval"):
        model(torch.randn(1, 4), context)
    shared = HyperModel(HyperNetwork(target, conditioner(), MLP((8,))), target, norm_stats="shared").eval()
    assert shared(torch.randn(1, 4), context).shape[-1] == 6
