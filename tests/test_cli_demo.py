"""``hyperdnn demo`` and ``hyperdnn demo --dynamic``: bad input is one line, exit 2, nothing written;
a rerun reuses its own folder; the files follow the user's umask; the plots let the data set the axes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from hyperdnn.apps import demo as demo_app
from hyperdnn.apps.demo import learning_curves_figure
from hyperdnn.cli import main
from hyperdnn.engine.errors import UsageError

DEMOS = [pytest.param([], "hyperdnn demo", id="demo"), pytest.param(["--dynamic"], "hyperdnn demo --dynamic", id="dyn")]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


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
        (["--threads", "0"], "--threads: expected an int >= 1, got 0"),
        (["--threads", "-2"], "--threads: expected an int >= 1, got -2"),
        (["--epochs", "0"], "--epochs: expected an int >= 1, got 0"),
        (["--epochs", "many"], "--epochs: expected an int, got 'many' (see hyperdnn demo --help)"),
        (["--epochs"], "--epochs: expected a value, got none (see hyperdnn demo --help)"),
        (["--seed", "-1"], "--seed: expected an int from 0 to 4294967295, got -1"),
        (["--seed", str(2**64)], f"--seed: expected an int from 0 to 4294967295, got {2**64}"),
        (["--seed", "1.5"], "--seed: expected an int, got '1.5' (see hyperdnn demo --help)"),
        (
            ["--bogus", "1"],
            "unexpected arguments ['--bogus', '1']; the options are --dynamic, --out, --epochs, --seed, --threads",
        ),
        (["--dynamic=yes"], "--dynamic: expected no value, got 'yes' (see hyperdnn demo --help)"),
    ],
)
def test_bad_options_are_one_line_and_write_nothing(tmp_path, monkeypatch, capsys, flags, prog, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", *flags, *argv]) == 2
    line = _one_line(capsys)
    prog = "hyperdnn demo --dynamic" if "--dynamic" in flags + argv else "hyperdnn demo"
    assert line == f"{prog}: {message}"
    assert list(tmp_path.iterdir()) == []  # no runs/ folder


@pytest.mark.parametrize("flags, prog", DEMOS)
def test_out_an_existing_file_is_refused(tmp_path, capsys, flags, prog):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    assert main(["demo", *flags, "--out", str(blocker), "--epochs", "1"]) == 2
    assert _one_line(capsys) == f"{prog}: --out: expected a folder, got {str(blocker)!r}, an existing file"
    assert main(["demo", *flags, "--out", str(blocker / "sub"), "--epochs", "1"]) == 2
    assert _one_line(capsys) == (
        f"{prog}: --out: cannot create the folder {str(blocker / 'sub')!r}: {str(blocker)!r} is a file"
    )
    assert _tree(tmp_path) == {"file": b"keep me"}


@pytest.mark.parametrize("flags, prog", DEMOS)
def test_out_a_folder_with_other_files_is_refused(tmp_path, capsys, flags, prog):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "results.json").write_text("{}")  # a demo's file name, next to a foreign one
    (out / "sub").mkdir()
    before = _tree(tmp_path)
    assert main(["demo", *flags, "--out", str(out), "--epochs", "1"]) == 2
    line = _one_line(capsys)
    assert line.startswith(f"{prog}: --out: expected an absent or empty folder, or one holding only an earlier run's ")
    assert line.endswith(f"{str(out)!r} also holds 'notes.txt', 'sub' (choose another --out)")
    assert _tree(tmp_path) == before and (out / "sub").is_dir()


def test_bad_options_raise_at_the_python_entry_point(tmp_path):
    with pytest.raises(UsageError, match=r"^--threads: expected an int >= 1, got 0$"):
        demo_app.main(out=str(tmp_path / "o"), threads=0)
    with pytest.raises(UsageError, match=r"^--epochs: expected an int >= 1, got True$"):
        demo_app.main(out=str(tmp_path / "o"), epochs=True)
    assert not (tmp_path / "o").exists()


def test_a_rerun_replaces_its_own_results_with_the_users_umask(tmp_path, capsys):
    out = tmp_path / "demo"
    previous_mask = os.umask(0o027)
    threads = torch.get_num_threads()
    try:
        assert main(["demo", "--out", str(out), "--epochs", "1", "--threads", "1"]) == 0
        first = json.loads((out / "results.json").read_text())
        assert main(["demo", "--out", str(out), "--epochs", "2", "--threads", "1"]) == 0  # the same folder again
    finally:
        os.umask(previous_mask)
    assert torch.get_num_threads() == threads  # restored
    second = json.loads((out / "results.json").read_text())
    assert first["config"]["epochs"] == 1 and second["config"]["epochs"] == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(demo_app.OUTPUTS)
    for p in out.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o640, p  # 0666 & ~umask, not mkstemp's 0600
    assert "wrote" in capsys.readouterr().out


def test_the_dynamic_demo_reuses_its_folder_but_not_the_demos(tmp_path, capsys):
    out = tmp_path / "dyn"
    assert main(["demo", "--dynamic", "--out", str(out), "--epochs", "1"]) == 0
    assert main(["demo", "--dynamic", "--out", str(out), "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(["demo", "--out", str(out), "--epochs", "1"]) == 2  # dynamic_widths.png is not the demo's
    assert "also holds 'dynamic_widths.png'" in _one_line(capsys)


# ------------------------------------------------------------------ plots
def test_learning_curves_show_every_epoch_from_the_data():
    """The y-axis spans the data (the first epochs' low accuracy included), not a fixed 50-100%."""
    curves = {
        "fast": [[0.30, 0.80, 0.90, 0.95, 0.96, 0.97], [0.20, 0.70, 0.92, 0.94, 0.96, 0.975]],
        "slow": [[0.10, 0.40, 0.60, 0.80, 0.90, 0.93]],
    }
    fig = learning_curves_figure(curves, "toy", dashed=["slow"])
    try:
        full, zoom = fig.axes
        lo, hi = full.get_ylim()
        assert lo <= 10.0 and 97.5 <= hi <= 100.5  # every point in view, nothing cut off, nothing above 100%
        zlo, zhi = zoom.get_ylim()
        assert 78.5 < zlo <= 80.0 and 97.5 <= zhi < 98.5  # epochs 4-6: from their minimum to their maximum
        x, y = full.lines[0].get_data()
        assert list(x) == [1, 2, 3, 4, 5, 6]
        assert y[0] == pytest.approx(25.0)  # the mean over runs
        assert full.lines[1].get_linestyle() == "--"
        band = full.collections[0].get_paths()[0].vertices
        assert band[:, 1].min() == pytest.approx(20.0) and band[:, 1].max() == pytest.approx(97.5)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_learning_curves_of_a_short_run_are_one_panel():
    fig = learning_curves_figure({"a": [[0.5, 0.6]]}, "short")
    try:
        assert len(fig.axes) == 1
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
