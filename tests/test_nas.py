"""``hyperdnn run nas``: the quick run end to end, resume, its degenerate case (training a held-out
architecture from scratch is a plain PyTorch loop) and its refusals."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hyperdnn import Target
from hyperdnn.engine import derive_seed, load_model, make_generator, run_command
from hyperdnn.recipes.nas import NASConfig, architectures, load_images
from tests.helpers import interrupt_then_resume

QUICK = ["--quick", "--progress", "false", "--threads", "1", "--checkpoint_every", "1"]


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    code = run_command(["nas", *argv], stdout=io.StringIO(), stderr=err)
    return code, err.getvalue()


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("nas") / "quick"
    code, err = _run([*QUICK, "--out", str(out)])
    assert code == 0, err
    return out, json.loads((out / "results.json").read_text())


def _without_times(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "hnet_s"}


def test_quick_run_writes_every_output(quick):
    out, res = quick
    m = res["metrics"]
    assert [r["group"] for r in m["heldout"].values()] == ["seen space", "seen space", "deeper", "wider"]
    for r in m["heldout"].values():
        for key in ("random_init", "ghn", "mlp", "one_epoch_sgd", "scratch"):
            assert 0.0 <= r[key] <= 1.0
        assert r["scratch_curve"][0][0] == 0 and r["finetune_curve"][-1][0] == r["scratch_curve"][-1][0]
    assert set(m["kendall_tau"]) == {"ghn", "mlp"}
    for name in ("summary.md", "nas_accuracy.png", "nas_finetune.png"):
        assert (out / name).stat().st_size > 0
    summary = (out / "summary.md").read_text()  # correlations and ratios are printed rounded, n/a if undefined
    assert re.search(r"Kendall's tau with the from-scratch accuracy: GHN (-?\d\.\d{3}|n/a), MLP hypernetwork (-?\d\.\d{3}|n/a)\n", summary)  # fmt: skip
    assert re.search(r"in (\d\.\d{3}|n/a) of the steps training from scratch took", summary)
    cfg = NASConfig(quick=True)
    x, y, _, _ = load_images(cfg, 0)
    _, held = architectures(cfg, derive_seed(0, "architectures"), 1, 10)
    ghn = load_model(out, "ghn")
    deeper = next(a for g, a in held if g == "deeper")  # a held-out architecture, deeper than any trained
    target = Target(deeper.build())
    with torch.no_grad():
        assert target(ghn(target), x[:5]).shape == (5, 10)


def test_training_a_held_out_architecture_from_scratch_is_a_plain_pytorch_loop(quick):
    _, res = quick
    cfg = NASConfig(quick=True)
    x, y, x_test, y_test = load_images(cfg, 0)
    _, held = architectures(cfg, derive_seed(0, "architectures"), 1, 10)
    torch.manual_seed(derive_seed(0, "init", "arch 01"))
    net = held[0][1].build()
    opt = torch.optim.SGD(net.parameters(), cfg.lr, momentum=0.9)
    for epoch in range(cfg.train_epochs):
        for idx in torch.randperm(len(x), generator=make_generator(0, "batches", "arch 01", epoch)).split(
            cfg.batch_size
        ):
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        plain = float((net(x_test).argmax(1) == y_test).float().mean())
    assert res["metrics"]["heldout"]["arch 01"]["scratch"] == plain


# checkpoints: 1 after the GHN, 2 after the MLP hypernetwork; then per held-out architecture one
# between its two stages and one after it: 3 is between the stages of arch 01 (both hypernetworks
# are read back from the run folder), 6 after arch 02
@pytest.mark.parametrize("stop_after", [3, 6])
def test_resume_ends_with_the_same_results(tmp_path, monkeypatch, quick, stop_after):
    resumed = interrupt_then_resume(monkeypatch, "nas", QUICK, tmp_path / "run", stop_after)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["resumed"] is True
    assert _without_times(resumed) == _without_times(quick[1]["metrics"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--kernels", "1,2"], "--kernels: expected odd kernel sizes, got [1, 2] (even: [2])"),
        (["--heldout", "1", "--deeper", "0", "--wider", "0"], "expected at least 2 held-out architectures"),
        (["--widths", "8,0"], "--widths"),
        (["--data", "nope"], "--data: expected a registered data set"),
    ],
)
def test_bad_input_is_one_line_and_nothing_written(tmp_path, argv, message):
    out = tmp_path / "bad"
    code, err = _run([*argv, "--out", str(out)])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
