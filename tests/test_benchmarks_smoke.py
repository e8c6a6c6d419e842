"""The benchmark program still runs: one workload, one step, no timing assertions."""

from __future__ import annotations

import json

import pytest
from benchmarks import run as bench


def test_one_workload_runs_and_writes_results(tmp_path):
    args = bench.parser().parse_args(
        ["--workloads", "W2", "--repeats", "1", "--steps", "1", "--warmup", "1", "--no-peers", "--out", str(tmp_path)]
    )
    result = bench.run(args, log=lambda s: None)
    w2 = result["workloads"]["W2"]
    status = {v["name"]: v["status"] for v in w2["variants"]}
    assert status["static"] == status["torch"] == status["hyperdnn"] == "ok"
    # a peer that cannot run is a row with a reason, never dropped
    assert status["hypnettorch"] == status["hyperlight"] == "unavailable"
    assert all(v["error"] for v in w2["variants"] if v["status"] != "ok")
    ours = next(v for v in w2["variants"] if v["name"] == "hyperdnn")
    assert ours["median_ms"] > 0 and ours["ratio_static"] > 0 and ours["params"] > 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].endswith("-cpu.json") and files[1].endswith("-cpu.md")
    saved = json.loads((tmp_path / files[0]).read_text())
    assert saved["workloads"]["W2"]["checks"][0]["check"] == "best hyperdnn / best hand-written"
    assert "## W2" in (tmp_path / files[1]).read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--workloads", "W9"], "unknown workloads"),
        (["--repeats", "0"], "--repeats must be >= 1"),
        (["--steps", "x"], "--steps must be an integer"),
        (["--device", "tpu"], "invalid choice"),
        (["--tag", "a/b"], "--tag may hold"),
    ],
)
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        bench.parser().parse_args(argv)
    assert message in capsys.readouterr().err
