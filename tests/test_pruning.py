"""``hyperdnn run pruning``: the quick run end to end, resume, its degenerate case (training the
full network is a plain PyTorch loop) and its refusals."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hyperdnn.engine import derive_seed, load_model, make_generator, run_command
from hyperdnn.recipes.pruning import PruningConfig, load_data
from tests.helpers import interrupt_then_resume

QUICK = ["--quick", "--progress", "false", "--threads", "1", "--checkpoint_every", "1"]


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    code = run_command(["pruning", *argv], stdout=io.StringIO(), stderr=err)
    return code, err.getvalue()


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("pruning") / "quick"
    code, err = _run([*QUICK, "--out", str(out)])
    assert code == 0, err
    return out, json.loads((out / "results.json").read_text())


def _without_times(metrics: dict) -> dict:
    kept = {k: v for k, v in metrics.items() if not k.endswith("_s")}
    kept["networks"] = [{k: v for k, v in r.items() if k != "search_s"} for r in metrics["networks"]]
    return kept


def test_quick_run_writes_every_output(quick):
    out, res = quick
    m = res["metrics"]
    methods = [r["method"] for r in m["networks"]]
    assert methods == ["full network", "PruningNet + evolution", "PruningNet + random search", "uniform width",
                       "L1 filter pruning + fine-tuning"]  # fmt: skip
    for r in m["networks"][1:]:
        assert r["flops"] <= 0.3 + 1e-9  # every network within the budget
    assert -1 <= m["spearman"] <= 1 or m["spearman"] is None
    assert m["search"]["evolution 30%"]["evaluated"] == m["search"]["random 30%"]["evaluated"] == 6
    for name in ("summary.md", "accuracy_vs_flops.png", "generated_vs_retrained.png"):
        assert (out / name).stat().st_size > 0
    hnet, full = load_model(out, "pruningnet"), load_model(out, "full")
    assert sum(p.numel() for p in full.parameters()) > 0 and hnet(torch.ones(4)) is not None
    assert "Spearman correlation" in (out / "summary.md").read_text()


def test_training_the_full_network_is_a_plain_pytorch_loop(quick):
    """The degenerate case: the full network's unit is ordinary SGD training."""
    _, res = quick
    cfg = PruningConfig(quick=True)
    data = load_data(cfg, 0)
    torch.manual_seed(derive_seed(0, "init", "train full"))
    net = cfg.cnn.build()
    opt = torch.optim.SGD(net.parameters(), cfg.lr, 0.9, weight_decay=cfg.weight_decay)
    for epoch in range(cfg.retrain_epochs):
        for g in opt.param_groups:
            g["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.retrain_epochs))
        net.train()
        for idx in torch.randperm(len(data.x_train), generator=make_generator(0, "batches", "train", epoch)).split(
            cfg.batch_size
        ):
            opt.zero_grad()
            F.cross_entropy(net(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        plain = float((net(data.x_test).argmax(1) == data.y_test).float().mean())
    full = next(r for r in res["metrics"]["networks"] if r["method"] == "full network")
    assert full["acc"] == plain


# checkpoints: 1 after the PruningNet; 2 inside the evolution (one generation done; the PruningNet is
# read back from the run folder), 3 after it; 4, 5 random search; 6 the full network; 7 after the
# evolution's network (L1 pruning reads the full network back from the run folder)
@pytest.mark.parametrize("stop_after", [2, 7])
def test_resume_ends_with_the_same_results(tmp_path, monkeypatch, quick, stop_after):
    resumed = interrupt_then_resume(monkeypatch, "pruning", QUICK, tmp_path / "run", stop_after)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["resumed"] is True
    assert _without_times(resumed) == _without_times(quick[1]["metrics"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--budgets", "0.001"], "--budgets: no network of the width grid meets 0.1% of the full"),
        (["--channels", "8,8", "--strides", "1"], "--strides: expected 2 strides, one per --channels, got 1"),
        (["--image_size", "40"], "--image_size: expected at most 28, the size of mnist5k's images, got 40"),
        (["--budgets", "0"], "--budgets"),
        (["--data", "mnist5"], "--data: expected a registered data set"),
    ],
)
def test_bad_input_is_one_line_and_nothing_written(tmp_path, argv, message):
    out = tmp_path / "bad"
    code, err = _run([*argv, "--out", str(out)])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_the_width_oracle_example_reproduces_the_run_and_keeps_every_candidate_in_the_band(quick, tmp_path, capsys):
    """The example retrains the run's networks with the run's own seeds first (the run's numbers
    again), then new initialisations, and random width vectors between --low and the budget."""
    import importlib.util
    import shutil

    out, res = quick
    run = tmp_path / "run"
    shutil.copytree(out, run)
    path = Path(__file__).resolve().parents[1] / "examples" / "pruning_width_oracle.py"
    spec = importlib.util.spec_from_file_location("examples_pruning_width_oracle", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)  # type: ignore[union-attr]
    example.main([str(run), "--candidates", "2", "--inits", "2", "--low", "0.2"])
    result = json.loads((run / "width_oracle.json").read_text())
    rows = result["rows"]
    reported = {r["widths"]: r["acc"] for r in res["metrics"]["networks"] if r["budget"] == "30%" and "L1" not in r["method"]}  # fmt: skip
    own = [r for r in rows if r["source"] != "random width vector"]
    assert {" ".join(map(str, r["widths"])) for r in own} <= set(reported) and own
    for r in own:  # the first training is the run's own, bit for bit; the second is another one
        assert r["accs"][0] == r["run_acc"] == reported[" ".join(map(str, r["widths"]))]
    drawn = [r for r in rows if r["source"] == "random width vector"]
    assert len(drawn) == 2 and all(0.2 - 1e-9 <= r["flops"] <= 0.3 + 1e-9 for r in drawn)
    assert [r["mean"] for r in rows] == sorted((r["mean"] for r in rows), reverse=True)
    uniform = next(r["mean"] for r in rows if r["source"] == "uniform width")
    assert result["best_minus_uniform"] == pytest.approx(rows[0]["mean"] - uniform)
    assert "best mean minus uniform width" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # not a run folder: one line, exit status 2
        example.main([str(tmp_path)])
    assert e.value.code == 2 and "no results.json" in capsys.readouterr().err
    before = (run / "width_oracle.json").read_text()
    with pytest.raises(SystemExit) as e:  # --low at the budget: one line, exit status 2, nothing rewritten
        example.main([str(run), "--low", "0.3"])
    assert (
        e.value.code == 2
        and "--low: expected a fraction below the run's smallest budget 0.3" in capsys.readouterr().err
    )
    assert (run / "width_oracle.json").read_text() == before
