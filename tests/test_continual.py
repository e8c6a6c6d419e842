"""The continual recipe and its pieces: the output regulariser, degenerate cases, resume, task
streams, loaders."""

from __future__ import annotations

import copy
import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hyperdnn.data import Split
from hyperdnn.data.mnist import load_mnist_idx, read_idx
from hyperdnn.data.streams import make_stream, permuted_stream, split_stream
from hyperdnn.engine import derive_seed, make_generator, run_command
from hyperdnn.methods import HypernetLearner
from hyperdnn.metrics import trained_parameters
from hyperdnn.networks import mlp, mlp_parameters
from hyperdnn.recipes.continual import ContinualConfig, count_parameters, estimate_memory, make_learner, plan
from tests.helpers import interrupt_then_resume

#: a tiny, fast configuration of the recipe (SplitMNIST from scikit-learn digits)
TINY = [
    "--benchmark", "split", "--data", "digits", "--hidden", "16", "--trunk", "16", "--chunk_hidden", "16",
    "--chunk_size", "200", "--chunk_embed_dim", "4", "--task_embed_dim", "8", "--epochs", "2",
    "--batch_size", "32", "--fisher_samples", "32", "--progress", "false", "--threads", "1",
]  # fmt: skip


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    code = run_command(argv, stdout=io.StringIO(), stderr=err)
    return code, err.getvalue()


# ---------------------------------------------------------------------- degenerate case
def test_one_task_reduces_to_ordinary_training(tmp_path: Path) -> None:
    out = tmp_path / "one"
    code, err = _run(
        ["continual", *TINY, "--num_tasks", "1", "--methods", "finetune,ewc,separate", "--out", str(out), "--seed", "3"]
    )
    assert code == 0, err
    methods = json.loads((out / "results.json").read_text())["metrics"]["methods"]
    accs = {m: methods[m]["CL1"]["matrix"][0][0] for m in ("finetune", "ewc", "separate")}
    # the plain loop: same initialisation, same batches, Adam, cross-entropy
    stream = make_stream("split", "digits", 1, seed=3)
    task = stream[0]
    torch.manual_seed(derive_seed(3, "init", "task", 0))
    net = mlp(stream.in_features, (16,), 2, dropout=0.2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
    for epoch in range(2):
        torch.manual_seed(derive_seed(3, "dropout", 0, epoch))
        for idx in torch.randperm(task.num_train, generator=make_generator(3, "batches", 0, epoch)).split(32):
            x, y = task.train_batch(idx)
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        plain = float((net(task.x_test).argmax(-1) == task.y_test).float().mean())
    assert accs == {"finetune": plain, "ewc": plain, "separate": plain}


def test_hypernet_on_its_first_task_is_ordinary_hypernet_training() -> None:
    cfg = ContinualConfig(hidden=(8,), trunk=(8,), chunk_hidden=(8,), chunk_size=50, task_embed_dim=4, dropout=0.0)
    stream = make_stream("split", "digits", 2)
    torch.manual_seed(0)
    learner = make_learner(plan(cfg, 2)[0], cfg, stream, torch.device("cpu"))
    learner.begin_task(0)
    hnet, target = copy.deepcopy(learner.hnet), learner.target
    opt = torch.optim.Adam(learner.parameters_for(0), lr=1e-3)
    plain_opt = torch.optim.Adam(hnet.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for idx in torch.randperm(stream[0].num_train, generator=g).split(16)[:5]:
        x, y = stream[0].train_batch(idx)
        logs = learner.train_step(0, x, y, torch.zeros_like(y), opt, g)
        assert logs["reg"] == 0.0
        plain_opt.zero_grad()
        F.cross_entropy(target(hnet(0), x), y).backward()
        plain_opt.step()
    for (n, a), b in zip(learner.hnet.named_parameters(), hnet.parameters()):
        assert torch.equal(a, b), n
    # the second task regularises the first
    learner.begin_task(1)
    x, y = stream[1].train_batch(torch.arange(16))
    opt = torch.optim.Adam(learner.parameters_for(1), lr=1e-3)
    assert learner.regularizer.num_tasks == 1
    assert not learner.embeddings[0].requires_grad and learner.embeddings[1].requires_grad
    assert learner.train_step(1, x, y, torch.ones_like(y), opt, g)["reg"] == 0.0  # zero right after the snapshot
    assert learner.train_step(1, x, y, torch.ones_like(y), opt, g)["reg"] > 0.0  # the first step moved task 0


# ---------------------------------------------------------------------- resume
#: the first round's methods (tests/test_continual_replay.py resumes the replay methods)
_RESUME = TINY + ["--num_tasks", "2", "--scenarios", "CL1,CL3", "--checkpoint_every", "1", "--lookahead"]
_RESUME += ["--methods", "hnet,finetune,ewc,separate,joint"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("resume") / "full"
    code, err = _run(["continual", *_RESUME, "--out", str(out)])
    assert code == 0, err
    return json.loads((out / "results.json").read_text())


# 4 checkpoints per unit of 2 tasks (inside task 1, between the tasks, inside task 2, after the
# unit), 2 per joint unit: 3 is inside the hypernetwork's second task (look-ahead), 19 inside
# online EWC's second task (Fisher information saved), 25 inside joint training
@pytest.mark.parametrize("stop_after", [3, 19, 25])
def test_resume_ends_with_the_same_results(tmp_path: Path, monkeypatch, uninterrupted: dict, stop_after: int) -> None:
    out = tmp_path / "run"
    resumed = interrupt_then_resume(monkeypatch, "continual", _RESUME, out, stop_after)
    assert resumed["methods"] == uninterrupted["metrics"]["methods"]
    assert resumed["parameters"] == uninterrupted["metrics"]["parameters"]
    code, err = _run(["continual", "--out", str(out), "--resume"])
    assert code == 2 and "already finished" in err


def test_default_run_outputs(uninterrupted: dict) -> None:
    m = uninterrupted["metrics"]
    assert set(m["methods"]) == {"hnet", "finetune", "ewc", "separate", "joint"}
    for method, by_scenario in m["methods"].items():
        assert set(by_scenario) == {"CL1", "CL3"}, method
        for entry in by_scenario.values():
            assert len(entry["matrix"]) == 2 and entry["final_avg"] is not None
    assert m["methods"]["hnet"]["CL3"]["task_inference"] is not None
    assert m["methods"]["joint"]["CL1"]["bwt"] is None  # only the final row exists
    assert uninterrupted["seed"] == 0 and uninterrupted["config"]["benchmark"] == "split"


@pytest.mark.parametrize(
    "overrides",
    [
        {"data": "digits", "hidden": (32, 16), "trunk": (16, 8), "scenarios": ("CL1", "CL2")},
        {"data": "digits", "head": "chunked", "chunk_size": 300, "chunk_hidden": (16, 8), "trunk": (7, 5)},
        {"benchmark": "split", "data": "digits", "scenarios": ("CL1", "CL2", "CL3"), "hidden": (16,)},
    ],
)
def test_parameter_counts_from_the_config_are_the_models(overrides) -> None:
    cfg = ContinualConfig(**overrides)
    stream = make_stream(cfg.benchmark, cfg.data, cfg.tasks)
    built = {}
    for unit in plan(cfg, cfg.tasks):
        learner = make_learner(unit, cfg, stream, torch.device("cpu"))
        for t in range(cfg.tasks):
            learner.begin_task(t)
        built[unit.key] = learner.num_parameters()
    assert count_parameters(cfg) == built
    # the memory estimate holds at least the parameters of the largest model, as float32
    assert sum(estimate_memory(cfg).values()) > 4 * max(built.values())


def test_trained_parameters_count_each_optimized_tensor_once() -> None:
    shared = torch.nn.Parameter(torch.zeros(3, 5))
    embeddings = [torch.nn.Parameter(torch.zeros(4)) for _ in range(3)]
    optimizers = [torch.optim.Adam([{"params": [shared]}, {"params": [e]}]) for e in embeddings]
    assert trained_parameters(optimizers) == 15 + 3 * 4
    assert trained_parameters(optimizers[:2]) == 15 + 2 * 4  # the third embedding is in no optimizer
    assert trained_parameters([]) == 0
    with pytest.raises(TypeError, match="item 1 is a list, expected a torch.optim.Optimizer"):
        trained_parameters([optimizers[0], [shared]])  # type: ignore[list-item]


def test_compression_ratio_in_every_table_is_from_the_optimizers(
    tmp_path: Path, monkeypatch, uninterrupted: dict
) -> None:
    m = uninterrupted["metrics"]
    separate = 2 * mlp_parameters(64, (16,), 2)  # two tasks of digits, target 64-16-2
    assert m["separate_parameters"] == separate == m["parameters"]["separate"]
    cfg = ContinualConfig(
        **{k: v for k, v in uninterrupted["config"].items() if k in ContinualConfig.__dataclass_fields__}
    )
    assert m["parameters"] == count_parameters(cfg)
    assert m["compression"] == {k: v / separate for k, v in m["parameters"].items()}
    # a learner whose optimizer leaves the task embeddings out trains that many numbers fewer
    original = HypernetLearner.parameters_for
    monkeypatch.setattr(HypernetLearner, "parameters_for", lambda self, t: original(self, t)[:-1])
    out = tmp_path / "run"
    argv = ["continual", *TINY, "--num_tasks", "2", "--methods", "hnet", "--scenarios", "CL1,CL3", "--out", str(out)]
    code, err = _run(argv)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())["metrics"]
    assert results["parameters"]["hnet"] == m["parameters"]["hnet"] - 2 * 8  # two embeddings of 8
    ratio = results["parameters"]["hnet"] / separate
    assert results["compression"]["hnet"] == ratio
    # the column is in every scenario's table, with the hypernetwork's ratio in its row
    lines = [line for line in (out / "summary.md").read_text().splitlines() if line.startswith("| ")]
    headers = [line for line in lines if line.startswith("| method |")]
    rows = [line for line in lines if line.startswith("| hnet")]
    assert len(headers) == len(rows) == 2
    assert all("| params / separate |" in h for h in headers)
    assert all(f"| {ratio:.2f} |" in r for r in rows)


def test_a_diverging_run_still_writes_its_results(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, err = _run(["continual", *TINY, "--num_tasks", "2", "--methods", "ewc", "--lr", "1e30", "--out", str(out)])
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert len(results["metrics"]["methods"]["ewc"]["CL1"]["matrix"]) == 2


def test_quick_is_a_small_run_of_every_method(tmp_path: Path) -> None:
    cfg = ContinualConfig(quick=True)
    assert (cfg.data, cfg.tasks, cfg.task_epochs, cfg.hidden) == ("digits", 3, 2, (32,))
    out = tmp_path / "quick"
    code, err = _run(["continual", "--quick", "--scenarios", "CL3", "--threads", "1", "--progress", "false", "--out", str(out)])  # fmt: skip
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert set(results["metrics"]["methods"]) == {"hnet", "finetune", "ewc", "separate", "joint", "hnet+r", "dgr"}
    assert results["config"]["quick"] is True and results["metrics"]["stream"] == "permuted-digits"


def test_default_config_is_the_issue_benchmark() -> None:
    cfg = ContinualConfig()
    assert (cfg.benchmark, cfg.data, cfg.tasks, cfg.scenarios) == ("permuted", "mnist5k", 10, ("CL1",))
    assert set(cfg.methods) == {"hnet", "finetune", "ewc", "separate", "joint", "hnet+r", "dgr"}
    # the default run (CL1) trains no replay method: they are for CL2 and CL3
    assert [u.key for u in plan(cfg, cfg.tasks)] == ["hnet", "finetune/CL1", "ewc/CL1", "separate", "joint/CL1"]


# ---------------------------------------------------------------------- streams and loaders
def _toy_split(n_train: int = 40, n_test: int = 20, features: int = 6) -> Split:
    g = torch.Generator().manual_seed(0)
    return Split(
        torch.rand(n_train, features, generator=g),
        torch.arange(n_train) % 10,
        torch.rand(n_test, features, generator=g),
        torch.arange(n_test) % 10,
        (1, 1, features),
        10,
    )


def test_split_and_permuted_streams() -> None:
    data = _toy_split()
    split = split_stream(data, 5)
    assert [t.classes for t in split] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    for t in split:
        assert set(t.y_train.tolist()) == {0, 1} and t.num_train == 8 and t.num_test == 4
    assert torch.equal(split.global_label(3, torch.tensor([0, 1])), torch.tensor([6, 7]))
    with pytest.raises(ValueError, match="enough for 1 to 5 tasks"):
        split_stream(data, 6)
    perm = permuted_stream(data, 3, seed=1)
    assert torch.equal(perm[0].x_train, data.x_train)
    p1, p2 = perm[1].permutation, perm[2].permutation
    assert p1 is not None and p2 is not None and not torch.equal(p1, p2)
    assert torch.equal(perm[1].x_test, data.x_test[:, p1])
    x, y = perm[2].train_batch(torch.tensor([3, 5]))
    assert torch.equal(x, data.x_train[[3, 5]][:, p2]) and torch.equal(y, data.y_train[[3, 5]])
    assert torch.equal(permuted_stream(data, 3, seed=1)[2].permutation, p2)  # reproducible
    with pytest.raises(ValueError, match="unknown benchmark"):
        make_stream("rotated", "digits")


def test_joint_batch_equals_each_tasks_rows_in_task_order() -> None:
    perm = permuted_stream(_toy_split(), 3, seed=1)  # 40 training rows per task
    assert perm.num_train == sum(t.num_train for t in perm) == 120
    idx = torch.tensor([85, 3, 41, 119, 0, 40])  # tasks 2, 0, 1, 2, 0, 1
    x, y, ids = perm.joint_batch(idx)
    want = [(t, perm[t].train_batch(torch.tensor(rows))) for t, rows in ((0, [3, 0]), (1, [1, 0]), (2, [5, 39]))]
    assert torch.equal(x, torch.cat([xb for _, (xb, _) in want]))
    assert torch.equal(y, torch.cat([yb for _, (_, yb) in want]))
    assert ids.tolist() == [0, 0, 1, 1, 2, 2]
    for bad, got in ((torch.tensor([120]), "got rows 120 to 120"), (torch.tensor([-1, 2]), "got rows -1 to 2"),
                     (torch.tensor([], dtype=torch.long), "got no rows")):  # fmt: skip
        with pytest.raises(ValueError, match=rf"expected rows in \[0, 119\], {got}"):
            perm.joint_batch(bad)


def _write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    blob = header + array.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        blob = gzip.compress(blob)
    path.write_bytes(blob)


def _write_mnist(root: Path, n_train: int = 60, n_test: int = 20) -> dict[str, np.ndarray]:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for i, (name, a) in enumerate(arrays.items()):
        _write_idx(raw / name, a, compress=i % 2 == 0)
    return arrays


def test_mnist_idx_loader_on_tiny_files(tmp_path: Path) -> None:
    arrays = _write_mnist(tmp_path)
    split = load_mnist_idx(tmp_path)
    assert split.x_train.shape == (60, 784) and split.x_test.shape == (20, 784) and split.shape == (1, 28, 28)
    assert torch.allclose(
        split.x_train[5], torch.tensor(arrays["train-images-idx3-ubyte"][5].reshape(-1) / 255.0).float()
    )
    assert split.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert float(split.x_train.max()) <= 1.0
    stream = make_stream("split", "mnist", 2, data_root=str(tmp_path))
    assert len(stream) == 2 and stream[1].classes == (2, 3) and stream[1].num_train == 12

    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(bad)
    bad.write_bytes(bytes([0, 0, 0x08, 1]) + (5).to_bytes(4, "big") + b"abc")
    with pytest.raises(ValueError, match="need 5 data bytes, the file has 3"):
        read_idx(bad)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist_idx(tmp_path / "nowhere")


def test_recipe_runs_on_local_mnist_files(tmp_path: Path) -> None:
    _write_mnist(tmp_path / "data")
    out = tmp_path / "run"
    tiny = ["mnist" if a == "digits" else a for a in TINY]
    argv = ["continual", *tiny, "--data_root", str(tmp_path / "data"), "--num_tasks", "2"]
    code, err = _run(argv + ["--methods", "hnet,separate", "--head", "chunked", "--out", str(out)])
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["stream"] == "split-mnist" and (out / "accuracy_CL1.png").stat().st_size > 0
    assert "| hnet |" in (out / "summary.md").read_text()
