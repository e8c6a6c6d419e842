"""``hyperdnn demo`` and ``hyperdnn demo --dynamic``, the short forms of ``hyperdnn run demo`` and
``hyperdnn run dynamic``: bad input is one line, exit 2, nothing written; a rerun without
``--out`` takes the next free folder; the files follow the user's umask; resume ends with the
numbers of an uninterrupted run."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest
import torch

from hyperdnn.cli import demo_folder, main
from hyperdnn.engine import Checkpointer, ConfigError, RunOptions, execute, get_recipe, run_command
from hyperdnn.recipes.demo import DemoConfig

DEMOS = [pytest.param([], "hyperdnn demo", id="demo"), pytest.param(["--dynamic"], "hyperdnn demo --dynamic", id="dyn")]
#: tiny runs: one epoch of every unit, one seed for the demo
TINY = {"demo": ["--epochs", "1", "--runs", "1"], "dynamic": ["--epochs", "1", "--eval_widths", "32,96"]}


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _numbers(results: dict) -> dict:
    """A run's metrics without the seconds it took."""
    metrics = json.loads(json.dumps(results["metrics"]))
    metrics.pop("train_seconds", None)
    for entry in metrics.get("models", []):
        entry.pop("seconds_mean")
    return metrics


def _one_line(capsys) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "usage:" not in captured.err, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert captured.out == ""
    return lines[0]


@pytest.mark.parametrize("flags, prog", DEMOS)
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--threads", "-2"], "--threads: expected an int in [0, "),
        (["--epochs", "0"], "--epochs: expected an int >= 1, got 0"),
        (["--epochs", "many"], "--epochs: expected int, got 'many'"),
        (["--epochs"], "--epochs: expected a value (int), got nothing"),
        (["--seed", "-1"], "--seed: expected an int in [0, 2**32), got -1"),
        (["--seed", str(2**64)], "--seed: expected an int in [0, 2**32), got 18446744073709551616"),
        (["--seed", "1.5"], "--seed: expected int, got '1.5'"),
        (["--bogus", "1"], "unknown option --bogus"),
        (["--dynamic=yes"], "--dynamic: expected no value, got 'yes'"),
    ],
)
def test_bad_options_are_one_line_and_write_nothing(tmp_path, monkeypatch, capsys, flags, prog, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", *flags, *argv]) == 2
    line = _one_line(capsys)
    prog = "hyperdnn demo --dynamic" if any(a.startswith("--dynamic") for a in flags + argv) else "hyperdnn demo"
    assert line.startswith(f"{prog}: error: {message}"), line
    assert list(tmp_path.iterdir()) == []  # no runs/ folder


@pytest.mark.parametrize("flags, prog", DEMOS)
def test_out_an_existing_file_or_a_used_folder_is_refused(tmp_path, capsys, flags, prog):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    assert main(["demo", *flags, "--out", str(blocker), "--epochs", "1"]) == 2
    assert _one_line(capsys) == f"{prog}: error: output folder {str(blocker)!r} is a file; choose another --out"
    assert main(["demo", *flags, "--out", str(blocker / "sub"), "--epochs", "1"]) == 2
    assert f"cannot create output folder {str(blocker / 'sub')!r}" in _one_line(capsys)
    used = tmp_path / "mine"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    assert main(["demo", *flags, "--out", str(used), "--epochs", "1"]) == 2
    assert "already holds files; pass --resume" in _one_line(capsys)
    assert _tree(tmp_path) == {"file": b"keep me", "mine/notes.txt": b"mine"}


def test_bad_options_raise_at_the_python_entry_point(tmp_path):
    out = tmp_path / "o"
    with pytest.raises(ConfigError, match=r"^--epochs: expected an int >= 1, got 0$"):
        execute(get_recipe("demo"), DemoConfig(epochs=0), RunOptions(out=str(out)), stream=None)
    with pytest.raises(ConfigError, match=r"^--lr: expected a float > 0, got 0.0$"):
        execute(get_recipe("demo"), DemoConfig(lr=0.0), RunOptions(out=str(out)), stream=None)
    assert not out.exists()


def test_the_demo_folder_is_the_next_free_one_and_resume_the_last(tmp_path):
    runs = tmp_path / "runs"
    assert demo_folder("demo", False, runs) == runs / "demo"
    (runs / "demo").mkdir(parents=True)
    assert demo_folder("demo", False, runs) == runs / "demo"  # empty: usable
    (runs / "demo" / "config.yaml").write_text("x")
    assert demo_folder("demo", False, runs) == runs / "demo-2"
    (runs / "demo-2").mkdir()
    (runs / "demo-2" / "log.txt").write_text("x")
    assert demo_folder("demo", False, runs) == runs / "demo-3"
    assert demo_folder("demo", True, runs) == runs / "demo-2"
    assert demo_folder("dynamic", True, runs) == runs / "dynamic"
    # a gap: demo-4 finished, demo-3 absent; a new run takes demo-3 and is interrupted there:
    # --resume continues demo-3 (it took the last folder, demo-4, "already finished")
    (runs / "demo-4" / "checkpoints").mkdir(parents=True)
    (runs / "demo-4" / "results.json").write_text("{}")
    assert demo_folder("demo", False, runs) == runs / "demo-3"
    (runs / "demo-3" / "checkpoints").mkdir(parents=True)
    (runs / "demo-3" / "checkpoints" / "latest.json").write_text("{}")
    assert demo_folder("demo", True, runs) == runs / "demo-3"


@pytest.mark.parametrize("recipe", ["demo", "dynamic"])
def test_a_rerun_goes_to_the_next_folder_with_the_users_umask(tmp_path, monkeypatch, capsys, recipe):
    monkeypatch.chdir(tmp_path)
    flags = ["--dynamic"] if recipe == "dynamic" else []
    previous_mask = os.umask(0o027)
    threads = torch.get_num_threads()
    try:
        assert main(["demo", *flags, *TINY[recipe], "--progress", "false"]) == 0
        assert main(["demo", *flags, *TINY[recipe], "--progress", "false"]) == 0  # make demo, again
    finally:
        os.umask(previous_mask)
    assert torch.get_num_threads() == threads  # restored
    first = json.loads((tmp_path / "runs" / recipe / "results.json").read_text())
    second = json.loads((tmp_path / "runs" / f"{recipe}-2" / "results.json").read_text())
    assert first["recipe"] == recipe and first["threads"] == 1  # the recipe's one thread
    assert _numbers(first) == _numbers(second)  # the same seed, the same numbers
    png = "dynamic_widths.png" if recipe == "dynamic" else "learning_curves.png"
    names = {p.name for p in (tmp_path / "runs" / recipe).iterdir()}
    assert {".lock", "config.yaml", "log.txt", "results.json", "summary.md", png} == names
    for p in (tmp_path / "runs" / recipe).iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o640, p  # 0666 & ~umask
    assert f"starting {recipe} in runs/{recipe}-2" in capsys.readouterr().out


def test_the_demo_reports_every_model(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "2", "--runs", "2", "--progress", "false"]) == 0
    models = json.loads((out / "results.json").read_text())["metrics"]["models"]
    assert [m["model"] for m in models] == ["standard DNN", "hypernet, generate once", "hypernet, chunked"]
    chunked = models[2]
    assert chunked["trainable"] < chunked["target_params"] == 17226
    assert all(m["seeds"] == [0, 1] and len(m["curves"]) == 2 and len(m["curves"][0]) == 2 for m in models)
    assert all(0.0 <= a <= 1.0 for m in models for a in m["accuracies"])
    summary = (out / "summary.md").read_text()
    assert "| model | test accuracy (mean ± std over seeds) |" in summary and "![" in summary
    assert (out / "learning_curves.png").stat().st_size > 0


def test_the_standard_dnn_is_plain_pytorch_training(tmp_path):
    """The demo's standard DNN equals a plain loop: the same seed, Adam, batches, cross-entropy."""
    from hyperdnn.data import load_digits

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "2", "--runs", "1", "--seed", "5", "--progress", "false"]) == 0
    curve = json.loads((out / "results.json").read_text())["metrics"]["models"][0]["curves"][0]
    data = load_digits()
    torch.manual_seed(5)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
    )
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, fused=True)
    g = torch.Generator().manual_seed(5)
    plain = []
    for _ in range(2):
        for idx in torch.randperm(len(data.x_train), generator=g).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
        with torch.no_grad():
            plain.append(float((net(data.x_test).argmax(1) == data.y_test).float().mean()))
    assert curve == plain


# ------------------------------------------------------------------ resume
def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    return run_command(argv, stdout=io.StringIO(), stderr=err), err.getvalue()


DEMO_RESUME = ["--epochs", "3", "--runs", "2", "--checkpoint_every", "1"]
DYNAMIC_RESUME = ["--epochs", "3", "--eval_widths", "32,96", "--checkpoint_every", "1"]


@pytest.mark.parametrize(
    "recipe, argv, stop_after, unit",
    [  # a unit of 3 epochs saves inside epochs 2 and 3, and after its end
        ("demo", DEMO_RESUME, 4, 1),  # inside the standard DNN's second run
        ("demo", DEMO_RESUME, 8, 2),  # inside the generate-once hypernetwork's first run
        ("dynamic", DYNAMIC_RESUME, 2, 0),  # inside the hypernetwork (schedule and curves saved)
        ("dynamic", DYNAMIC_RESUME, 4, 1),  # inside a standard MLP
    ],
)
def test_resume_ends_with_the_numbers_of_an_uninterrupted_run(tmp_path, monkeypatch, recipe, argv, stop_after, unit):
    common = [recipe, *argv, "--progress", "false"]
    code, err = _run([*common, "--out", str(tmp_path / "full")])
    assert code == 0, err
    full = json.loads((tmp_path / "full" / "results.json").read_text())
    original, saves = Checkpointer.save, []

    def save_then_stop(self, tensors, state):
        original(self, tensors, state)
        saves.append((state["unit"], state["mid_stage"]))
        if len(saves) == stop_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpointer, "save", save_then_stop)
    code, err = _run([*common, "--out", str(tmp_path / "cut")])
    assert code == 130 and "--resume" in err
    assert saves[-1] == (unit, True)  # stopped inside that unit, with its optimizer saved
    monkeypatch.setattr(Checkpointer, "save", original)
    code, err = _run([recipe, "--out", str(tmp_path / "cut"), "--resume", "--progress", "false"])
    assert code == 0, err
    resumed = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert resumed["resumed"] is True
    assert _numbers(resumed) == _numbers(full)


def test_the_short_form_resumes_the_last_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    original = Checkpointer.save

    def stop(self, tensors, state):
        original(self, tensors, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(Checkpointer, "save", stop)
    assert main(["demo", "--dynamic", *TINY["dynamic"], "--progress", "false"]) == 130
    monkeypatch.setattr(Checkpointer, "save", original)
    capsys.readouterr()
    assert main(["demo", "--dynamic", "--resume", "--progress", "false"]) == 0
    assert "resuming dynamic in runs/dynamic" in capsys.readouterr().out
    assert (tmp_path / "runs" / "dynamic" / "results.json").is_file()
    assert main(["demo", "--dynamic", "--resume"]) == 2  # the last one has finished
    assert "already finished" in capsys.readouterr().err
