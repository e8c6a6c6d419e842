"""The benchmark program still runs: one workload, one step, no timing assertions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks import run as bench


def test_one_workload_runs_and_writes_results(tmp_path):
    args = bench.parse_options(
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


def test_compiled_variants_sit_beside_the_eager_ones(tmp_path):
    # aot_eager: the same tracing (dynamo, fullgraph, AOTAutograd) as inductor, without its code
    # generation, so the smoke run stays short
    args = bench.parse_options(
        ["--workloads", "W6", "--repeats", "1", "--steps", "1", "--warmup", "2", "--no-peers", "--no-memory"]
        + ["--compiled", "--compile_backend", "aot_eager", "--out", str(tmp_path)]
    )
    result = bench.run(args, log=lambda s: None)
    assert result["meta"]["compiled"] == {"backend": "aot_eager", "mode": None}
    w6 = {v["name"]: v for v in result["workloads"]["W6"]["variants"]}
    for name in ("torch-gemm", "torch-gemm-hyperfan", "hyperdnn"):
        eager, compiled = w6[name], w6[name + "-compiled"]
        assert eager["status"] == compiled["status"] == "ok", compiled["error"]
        assert not eager["compiled"] and compiled["compiled"] and compiled["first_step_s"] > 0
        assert compiled["role"] == eager["role"] and compiled["params"] == eager["params"]
    # compiled rows are compared with the compiled hand-written variants, eager rows with eager ones
    assert result["workloads"]["W6"]["baseline"]["reference"] in ("torch-gemm", "torch-gemm-hyperfan", "torch-baddbmm")
    assert result["workloads"]["W6"]["baseline"]["compiled_reference"].endswith("-compiled")
    checks = [c["check"] for c in result["workloads"]["W6"]["checks"]]
    assert "compiled hyperdnn / compiled hand-written" in checks
    assert "compiled hyperdnn / compiled hand-written with the hyperfan scale" in checks
    text = next(tmp_path.glob("*.md")).read_text()
    assert "## Compiled against eager" in text and "| W6 |" in text and "backend aot_eager" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--workloads", "W9"], "--workloads: expected some of W0,W1,W2,W3,W4,W5,W6, got W9"),
        (["--repeats", "0"], "--repeats: expected an int >= 1, got 0"),
        (["--steps", "x"], "--steps: expected int, got 'x'"),
        (["--device", "tpu"], "--device: expected one of {cpu, cuda}, got 'tpu'"),
        (["--tag", "a/b"], "--tag: expected letters, digits, '-' and '_', got 'a/b'"),
        (["--repaets", "3"], "unknown option --repaets; did you mean --repeats?"),
        (["--compile_backend", "tvm"], "--compile_backend: expected one of {inductor, aot_eager}, got 'tvm'"),
        (["--device", "cuda", "--clock", "cpu"], "--clock cpu measures host CPU time"),
    ],
)
def test_bad_arguments_are_one_line_naming_the_option(argv, message, capsys):
    assert bench.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("benchmarks/run.py: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_the_options_are_typed_and_listed(capsys):
    opts = bench.parse_options(["--workloads", "w1,W3,w1", "--no-peers", "--threads", "2", "--tag", "t1-cpuclock"])
    assert opts.workloads == ("W1", "W3") and opts.no_peers and opts.threads == 2 and opts.repeats is None
    assert bench.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "--no_peers BOOL" in text and "--repeats INT|NONE" in text and "(>= 1)" in text


def test_the_gpu_script_dry_runs_on_cpu(tmp_path):
    # benchmarks/gpu.sh on CPU, one workload: both runs (eager, compiled) write their tables
    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "BENCH_DEVICE": "cpu",
        "BENCH_WORKLOADS": "W0",
        "OUT": str(tmp_path),
        "PYTHON": sys.executable,
    }
    done = subprocess.run(
        ["bash", "benchmarks/gpu.sh"], cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    eager = next(tmp_path.glob("*-cpu-quick-eager.md")).read_text()
    compiled = next(tmp_path.glob("*-cpu-quick-compiled.md")).read_text()
    assert "| static |" in eager and "static-compiled" not in eager
    assert "| static-compiled |" in compiled and "## Compiled against eager" in compiled
    assert (tmp_path / "gpu-env.txt").exists() and (tmp_path / "gpu-log-compiled.txt").exists()
