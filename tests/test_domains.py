"""The ``domains`` recipe and its data: disjoint rotated domains (also from MNIST idx files the
test writes), the registered pooled data set, pooled training as a plain loop, the quick run end
to end, resume, and bad input."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hyperdnn.data import get_dataset, load_dataset
from hyperdnn.data.domains import rotated_domains
from hyperdnn.engine import derive_seed, load_model, make_generator, run_command
from hyperdnn.networks import mlp
from tests.helpers import interrupt_then_resume
from tests.test_continual import _write_mnist

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    return run_command(argv, stdout=io.StringIO(), stderr=err), err.getvalue()


def test_rotated_domains_are_disjoint_and_rotated() -> None:
    d = rotated_domains("digits", (0.0, 30.0, 60.0), seed=2)
    split = load_dataset("digits", seed=2)
    assert d.names == ("0°", "30°", "60°") and d.descriptors.view(-1).tolist() == [0.0, 30.0, 60.0]
    assert d.d_train.bincount().tolist() == [479] * 3 and d.d_test.bincount().tolist() == [120] * 3
    assert len(d.domain(1).y_train) == 479 and len(d.pooled().y_test) == 360
    pool = torch.cat([split.x_train, split.x_test])
    zero = torch.cat([d.domain(0).x_train, d.domain(0).x_test])  # domain 0 is unrotated digits
    hits = (zero.unsqueeze(1) - pool.unsqueeze(0)).abs().sum(-1).min(1).values
    assert float(hits.max()) < 1e-5  # every image of domain 0 is one of the data set's
    with pytest.raises(ValueError, match="rotated_domains: expected distinct angles"):
        rotated_domains("digits", (0.0, 0.0))


def test_the_pooled_domains_are_a_registered_data_set_and_mnist_files_work(tmp_path: Path) -> None:
    assert get_dataset("rotated-mnist5k").shape == (1, 28, 28)
    _write_mnist(tmp_path, n_train=60, n_test=30)  # the full-MNIST loader on tiny idx files
    d = rotated_domains("mnist", (0.0, 45.0, 90.0), root=str(tmp_path), test_fraction=0.2)
    assert d.d_train.bincount().tolist() == [24] * 3 and d.x_train.shape[1] == 784
    domain = d.domain(2)
    assert float(domain.x_train.max()) <= 1.0 and domain.y_train.dtype == torch.int64


# ---------------------------------------------------------------------- the recipe
QUICK = ["domains", "--quick", "--data", "digits", "--progress", "false"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("domains") / "quick"
    code, err = _run([*QUICK, "--out", str(out)])
    assert code == 0, err
    return out


def test_quick_run_reports_every_method_per_held_out_domain(quick_run: Path) -> None:
    res = json.loads((quick_run / "results.json").read_text())["metrics"]
    assert set(res["held_out"]) == {"pooled", "input", "per_domain", "hnet", "hnet_set"}
    assert all(set(by_fold) == {"0", "3"} for by_fold in res["held_out"].values())
    assert all(0.0 <= v <= 1.0 for by_fold in res["held_out"].values() for v in by_fold.values())
    assert "hnet_vs_pooled_points" in res["checks"] and (quick_run / "accuracy.png").exists()
    summary = (quick_run / "summary.md").read_text()
    assert "| 45° |" in summary and "| mean |" in summary
    model = load_model(quick_run, "model-3")  # the hypernetwork that never saw 45 degrees
    assert model(torch.rand(4, 64), torch.tensor([45.0])).shape == (4, 10)
    assert load_model(quick_run, "model-set-3")(torch.rand(4, 64), torch.rand(5, 64)).shape == (4, 10)


def test_pooled_training_is_a_plain_loop(tmp_path: Path) -> None:
    out = tmp_path / "pooled"
    code, err = _run([*QUICK, "--methods", "pooled", "--held-out", "45", "--out", str(out), "--seed", "3"])
    assert code == 0, err
    acc = json.loads((out / "results.json").read_text())["metrics"]["held_out"]["pooled"]["3"]
    data = rotated_domains("digits", seed=3, per_domain=150)
    torch.manual_seed(derive_seed(3, "init", 3))
    net = mlp(64, (32,), 10)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
    for epoch in range(2):  # single-domain batches in the recipe's order, each drawing a set of 32
        g = make_generator(3, "batches", 3, "all", epoch)
        batches = []
        for d in (0, 1, 2, 4, 5):
            rows = (data.d_train == d).nonzero().squeeze(1)
            batches += [(d, rows[i]) for i in torch.randperm(len(rows), generator=g).split(64)]
        for i in torch.randperm(len(batches), generator=g).tolist():
            d, rows = batches[i]
            torch.randperm(int((data.d_train == d).sum()), generator=g)  # the set the hypernetwork reads
            opt.zero_grad()
            F.cross_entropy(net(data.x_train[rows]), data.y_train[rows]).backward()
            opt.step()
    held = torch.cat([data.d_train, data.d_test]) == 3
    x, y = torch.cat([data.x_train, data.x_test])[held], torch.cat([data.y_train, data.y_test])[held]
    with torch.no_grad():
        assert acc == float((net(x).argmax(-1) == y).float().mean())


@pytest.mark.parametrize("stop_after", [3, 9])  # inside the first fold, inside the second
def test_resume_ends_with_the_same_results(tmp_path: Path, monkeypatch, quick_run: Path, stop_after: int) -> None:
    resumed = interrupt_then_resume(monkeypatch, QUICK[0], QUICK[1:], tmp_path / "run", stop_after)
    full = json.loads((quick_run / "results.json").read_text())["metrics"]
    assert resumed["held_out"] == full["held_out"] and resumed["in_domain"] == full["in_domain"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--held-out", "10"], r"--held-out: expected domains among --angles \[0.0, 15.0, .*got \[10.0\]"),
        (["--data", "cifar"], r"--data: expected a registered data set, one of \[.*got 'cifar'"),
        (["--angles", "30"], r"--angles: expected at least 2 domains \(one is left out\), got \[30.0\]"),
        (["--methods", "hnet,nope"], r"--methods: .*'nope'"),
        (
            ["--per-domain", "900", "--data", "digits"],
            r"--per-domain: 6 domains of 900 images need 5400; digits has 1797",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(tmp_path: Path, argv, message) -> None:
    out = tmp_path / "bad"
    code, err = _run(["domains", "--quick", "--progress", "false", *argv, "--out", str(out)])
    assert code == 2 and re.search(message, err), err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_every_method_of_a_fold_starts_from_the_same_classifier() -> None:
    from hyperdnn.recipes.domains import DomainsConfig, build_hypernet, encoder, set_encoder

    cfg = DomainsConfig()
    torch.manual_seed(7)
    pooled = mlp(64, cfg.hidden, 10)
    sets = torch.randn(4, 5, 64)
    for make in (lambda: encoder(cfg), lambda: set_encoder(cfg, 64, sets)):
        torch.manual_seed(7)
        hnet, target = build_hypernet(cfg, 64, 10, make)  # the set encoder built after the classifier
        base = hnet.spec.unflatten(hnet.theta_mean.detach())
        for name, p in pooled.named_parameters():
            assert torch.equal(base[name], p.detach()), name
    # the order matters: a set encoder built before the classifier takes the draws first
    torch.manual_seed(7)
    early = set_encoder(cfg, 64, sets)
    hnet, _ = build_hypernet(cfg, 64, 10, early)
    assert not torch.equal(hnet.spec.unflatten(hnet.theta_mean.detach())["0.weight"], pooled[0].weight.detach())
