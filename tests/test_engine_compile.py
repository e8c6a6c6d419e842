"""The ``--compile`` run option: RunContext.prepare compiles the trained modules.

The demo (a standard DNN, a generate-once and a chunked hypernetwork) trained one epoch with
``--compile`` ends with the test accuracies of the eager run. Compiling with the default
inductor backend takes minutes on 2 CPU cores, so the test compiles with
``--compile-backend aot_eager`` (the same graph capture and autograd tracing, without
generating kernels).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

DEMO = ["demo", "--epochs", "1", "--runs", "1", "--threads", "1", "--progress", "false"]


def _curves(out: Path) -> dict[str, list[float]]:
    models = json.loads((out / "results.json").read_text())["metrics"]["models"]
    return {m["model"]: m["curves"][0] for m in models}


def test_compiled_demo_equals_eager(tmp_path):
    import torch._dynamo

    code, _ = run_cli([*DEMO, "--out", str(tmp_path / "eager")])
    assert code == 0
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    code, _ = run_cli([*DEMO, "--compile", "--compile-backend", "aot_eager", "--out", str(tmp_path / "c")])
    assert code == 0
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 3  # each model's training step
    assert "compiled (aot_eager)" in (tmp_path / "c" / "log.txt").read_text().splitlines()[0]
    eager, compiled = _curves(tmp_path / "eager"), _curves(tmp_path / "c")
    assert eager.keys() == compiled.keys()
    for name in eager:
        torch.testing.assert_close(compiled[name], eager[name], rtol=0, atol=1e-6, msg=name)
    torch._dynamo.reset()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fewshot"], "--compile: recipe 'fewshot' has no compiled training (its training is episodes"),
        (["continual", "--quick"], "--compile: recipe 'continual' trains through its optimizer, not one module's"),
        (
            ["demo", "--compile-backend", "tvm"],
            "--compile_backend: expected one of {inductor, aot_eager, eager}, got 'tvm'",
        ),
    ],
)
def test_compile_where_it_does_not_apply_is_one_line_and_writes_nothing(tmp_path, argv, message):
    out = tmp_path / "run"
    code, err = run_cli([*argv, "--compile", "--progress", "false", "--out", str(out)])
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
