"""The recipe engine under faults: kill -9, runs stopped before their first checkpoint, two runs
on one folder, unwritable folders, hand-edited checkpoints and configs, file permissions, and
the model a run leaves behind."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import pytest
import torch

from hyperdnn.engine import (
    Checkpointer,
    CheckpointError,
    Outcome,
    Recipe,
    UsageError,
    execute,
    load_model,
    option,
    run_command,
    validate_state,
)
from hyperdnn.engine.checkpoint import canonical_json
from hyperdnn.engine.cli import parse_run_args
from hyperdnn.engine.run import LOCK_FILE, RunContext, lock_folder

#: a tiny configuration of the continual recipe: two SplitMNIST tasks from scikit-learn digits,
#: a hypernetwork and fine-tuning, a checkpoint after every epoch
FAST = [
    "--benchmark", "split", "--data", "digits", "--num_tasks", "2", "--methods", "hnet,finetune",
    "--hidden", "16", "--trunk", "16", "--task_embed_dim", "8", "--epochs", "2", "--batch_size", "32",
    "--fisher_samples", "32", "--checkpoint_every", "1", "--progress", "false", "--threads", "1",
]  # fmt: skip
ROOT = Path(__file__).resolve().parents[1]


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_command(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every file and folder under ``folder`` with its bytes (None for folders)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """results.json of an uninterrupted run of FAST."""
    out = tmp_path_factory.mktemp("reference") / "run"
    code, _, err = _run(["continual", *FAST, "--out", str(out)])
    assert code == 0, err
    return json.loads((out / "results.json").read_text())


def _stop_after(monkeypatch, saves: int) -> None:
    """Make the run stop (Ctrl-C) right after its ``saves``-th checkpoint."""
    original = Checkpointer.save
    count = [0]

    def save(self, tensors, state):
        original(self, tensors, state)
        count[0] += 1
        if count[0] == saves:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpointer, "save", save)


@pytest.fixture
def interrupted(tmp_path: Path, monkeypatch) -> Path:
    """A FAST run stopped inside the hypernetwork's second task (mid-task checkpoint)."""
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _stop_after(m, 3)
        code, _, err = _run(["continual", *FAST, "--out", str(out)])
    assert code == 130, err
    return out


def _same_results(a: dict, b: dict) -> None:
    assert a["metrics"]["methods"] == b["metrics"]["methods"]
    assert a["metrics"]["parameters"] == b["metrics"]["parameters"]


# ---------------------------------------------------------------------- kill -9
_KILL_SCRIPT = """
import os, signal, sys
from hyperdnn.engine import checkpoint
from hyperdnn.engine.cli import run_command

replace, calls = os.replace, [0]

def replace_then_die(src, dst):
    if str(dst).endswith(".safetensors") or str(dst).endswith("latest.json"):
        calls[0] += 1
        if calls[0] == int(sys.argv[1]):  # the temporary file is written, not yet renamed
            os.kill(os.getpid(), signal.SIGKILL)
    replace(src, dst)

checkpoint.os.replace = replace_then_die
sys.exit(run_command(sys.argv[2:]))
"""


def test_kill_9_inside_a_checkpoint_write_then_resume(tmp_path: Path, reference: dict, monkeypatch) -> None:
    out = tmp_path / "run"
    # the 6th rename is latest.json of the 3rd checkpoint: its tensor file is already in place
    # and latest.json's temporary file is written, so both are left behind
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_KILL_SCRIPT), "6", "continual", *FAST, "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert len(left) == 4 and left[0].startswith(".latest.json.") and left[0].endswith(".tmp"), left
    # the current checkpoint (2), and the orphan (3) whose latest.json never replaced the old one
    assert left[1:] == ["ckpt-000002.safetensors", "ckpt-000003.safetensors", "latest.json"], left

    # resume, stopping at once after the first new checkpoint to look at the folder
    with monkeypatch.context() as m:
        _stop_after(m, 1)
        code, stdout, err = _run(["continual", "--out", str(out), "--resume"])
    assert code == 130, err
    assert "removed 2 file(s) a crash left behind" in stdout
    current = json.loads((out / "checkpoints" / "latest.json").read_text())["tensors"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [current, "latest.json"]

    code, _, err = _run(["continual", "--out", str(out), "--resume"])
    assert code == 0, err
    _same_results(json.loads((out / "results.json").read_text()), reference)
    assert not (out / "checkpoints").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_clean_removes_only_what_is_not_current(tmp_path: Path) -> None:
    ck = Checkpointer(tmp_path)
    ck.save({"w": torch.ones(2)}, {"step": 1})
    ck.save({"w": torch.ones(2)}, {"step": 2})
    (tmp_path / "ckpt-000001.safetensors").write_bytes(b"old")
    (tmp_path / "ckpt-000007.safetensors").write_bytes(b"orphan")
    (tmp_path / ".ckpt-000008.safetensors.k2j4_x9a.tmp").write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("mine")
    removed = sorted(p.name for p in ck.clean())
    assert removed == [".ckpt-000008.safetensors.k2j4_x9a.tmp", "ckpt-000001.safetensors", "ckpt-000007.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-000002.safetensors", "latest.json", "notes.txt"]
    assert ck.load().state == {"step": 2}
    # an unreadable latest.json: no tensor file is touched
    (tmp_path / "ckpt-000009.safetensors").write_bytes(b"x")
    (tmp_path / "latest.json").write_text("{half")
    assert ck.clean() == [] and (tmp_path / "ckpt-000009.safetensors").exists()
    # no latest.json at all: every tensor file is an orphan
    (tmp_path / "latest.json").unlink()
    assert sorted(p.name for p in ck.clean()) == ["ckpt-000002.safetensors", "ckpt-000009.safetensors"]


def test_stopped_before_the_first_checkpoint_resume_starts_over(tmp_path: Path, reference: dict, monkeypatch) -> None:
    out = tmp_path / "run"

    def stop(self, tensors, state):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Checkpointer, "save", stop)
        code, _, err = _run(["continual", *FAST, "--out", str(out)])
    assert code == 130, err
    assert (out / "config.yaml").is_file() and not (out / "checkpoints" / "latest.json").exists()
    code, _, err = _run(["continual", *FAST, "--out", str(out)])
    _assert_one_line_error(code, err, "already holds files", "--resume")

    code, stdout, err = _run(["continual", "--out", str(out), "--resume"])
    assert code == 0, err
    assert "from the beginning" in stdout and "from the beginning" in (out / "log.txt").read_text()
    results = json.loads((out / "results.json").read_text())
    _same_results(results, reference)
    assert results["resumed"] is False


# ---------------------------------------------------------------------- one run per folder
def test_a_folder_in_use_is_refused(tmp_path: Path, interrupted: Path) -> None:
    fd = lock_folder(interrupted)  # another process's run, as a second open file description
    try:
        before = _tree(interrupted)
        code, _, err = _run(["continual", "--out", str(interrupted), "--resume"])
        _assert_one_line_error(code, err, "in use by another run", str(interrupted))
        assert _tree(interrupted) == before
    finally:
        os.close(fd)
    # a new run into a folder that holds nothing but a lock someone holds
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    fd = lock_folder(fresh)
    try:
        code, _, err = _run(["continual", *FAST, "--out", str(fresh)])
        _assert_one_line_error(code, err, "in use by another run", str(fresh))
        assert sorted(p.name for p in fresh.iterdir()) == [LOCK_FILE]
    finally:
        os.close(fd)


@dataclass
class ToyConfig:
    steps: int = option(2, "number of steps")
    refuse: bool = option(False, "refuse the run from inside run()")
    clip: float = option(float("inf"), "a limit that may be infinite", finite=False)


def _toy_run(cfg: ToyConfig, ctx: RunContext) -> Outcome:
    if cfg.refuse:
        raise UsageError("the toy recipe refuses")
    seen = {}
    # the run holds the folder's lock for its whole length: a second run is refused
    with pytest.raises(UsageError, match="in use by another run"):
        lock_folder(ctx.out)
    for step in range(cfg.steps):
        ctx.save_checkpoint({"w": torch.full((2,), float(step))}, {"step": step})
    seen.update({p.name: p.stat().st_mode & 0o777 for p in (ctx.out / "checkpoints").iterdir()})
    ctx.save_model(torch.nn.Linear(2, 1), "toy")
    return Outcome({"modes": seen}, "| a |\n|---|\n| 1 |\n")


TOY = Recipe("toy", "a toy recipe", ToyConfig, _toy_run)


def test_the_run_holds_its_folder_lock(tmp_path: Path) -> None:
    cfg, opts = parse_run_args(TOY, ["--out", str(tmp_path / "toy"), "--progress", "false"])
    execute(TOY, cfg, opts, stream=None)  # asserts inside the run


def test_a_refusal_inside_the_run_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "new" / "toy"
    cfg, opts = parse_run_args(TOY, ["--out", str(out), "--refuse", "--progress", "false"])
    with pytest.raises(UsageError, match="the toy recipe refuses"):
        execute(TOY, cfg, opts, stream=None)
    assert not (tmp_path / "new").exists()


def test_a_refused_resume_leaves_the_folder_as_it_was(interrupted: Path, monkeypatch) -> None:
    from hyperdnn.recipes import continual

    before = _tree(interrupted)

    def refuse(*args, **kwargs):
        raise UsageError("the data went missing")

    monkeypatch.setattr(continual, "make_stream", refuse)
    code, _, err = _run(["continual", "--out", str(interrupted), "--resume"])
    _assert_one_line_error(code, err, "the data went missing")
    assert _tree(interrupted) == before  # log.txt included


# ---------------------------------------------------------------------- permissions
def test_file_modes_follow_the_umask(tmp_path: Path) -> None:
    for umask, mode in ((0o022, 0o644), (0o027, 0o640)):
        out = tmp_path / f"toy{umask:o}"
        cfg, opts = parse_run_args(TOY, ["--out", str(out), "--progress", "false"])
        old = os.umask(umask)
        try:
            results = execute(TOY, cfg, opts, stream=None)
        finally:
            os.umask(old)
        files = ["config.yaml", "log.txt", "results.json", "summary.md", "toy.safetensors", LOCK_FILE]
        assert {f: (out / f).stat().st_mode & 0o777 for f in files} == dict.fromkeys(files, mode)
        assert results["metrics"]["modes"] == {"ckpt-000002.safetensors": mode, "latest.json": mode}


def _deny(path: Path):
    """An ``os.access`` that says ``path`` is not writable (as chmod would for a non-root user)."""
    real = os.access

    def access(p, mode, *args, **kwargs):
        if Path(p) == path and mode & os.W_OK:
            return False
        return real(p, mode, *args, **kwargs)

    return access


def test_an_unwritable_checkpoint_folder_is_refused_up_front(interrupted: Path, monkeypatch) -> None:
    before = _tree(interrupted)
    with monkeypatch.context() as m:
        m.setattr(os, "access", _deny(interrupted / "checkpoints"))
        code, _, err = _run(["continual", "--out", str(interrupted), "--resume"])
    _assert_one_line_error(code, err, "checkpoint folder", str(interrupted / "checkpoints"), "not writable")
    assert _tree(interrupted) == before

    with monkeypatch.context() as m:
        m.setattr(os, "access", _deny(interrupted.parent))
        code, _, err = _run(["continual", *FAST, "--out", str(interrupted.parent / "other")])
    _assert_one_line_error(code, err, "cannot create output folder", "not writable")
    assert not (interrupted.parent / "other").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores file permissions")
def test_an_unwritable_checkpoint_folder_with_chmod(interrupted: Path) -> None:
    folder = interrupted / "checkpoints"
    folder.chmod(0o500)
    try:
        before = _tree(interrupted)
        code, _, err = _run(["continual", "--out", str(interrupted), "--resume"])
        _assert_one_line_error(code, err, "checkpoint folder", "not writable")
        assert _tree(interrupted) == before
    finally:
        folder.chmod(0o755)


# ---------------------------------------------------------------------- hand-edited run folders
def _edit_state(out: Path, edit, resign: bool = True) -> None:
    index_path = out / "checkpoints" / "latest.json"
    index = json.loads(index_path.read_text())
    edit(index["state"])
    if resign:  # keep the checksum right, so that the state check is what speaks
        import hashlib

        index["state_sha256"] = hashlib.sha256(canonical_json(index["state"]).encode()).hexdigest()
    index_path.write_text(json.dumps(index))


@pytest.mark.parametrize(
    "edit, needles",
    [
        (lambda s: s.update(unit=99), ["unit 99 is not in [0, 2]"]),
        (lambda s: s.pop("stage"), ["state: missing 'stage'"]),
        (lambda s: s.update(epoch="1"), ["state['epoch']: expected int, got '1' (str)"]),
        (lambda s: s.update(mid_stage=False), ["epoch 1 between stages"]),
        (lambda s: s["work"].pop("embeddings"), ["work {} at stage 1 of hnet"]),
        (lambda s: s["work"].update(embeddings="2"), ["state['work']['embeddings']: expected int, got '2' (str)"]),
        (lambda s: s["optimizer"].pop("indices"), ["state['optimizer']: missing 'indices'"]),
        (lambda s: s.update(stage=7), ["stage 7 is not a stage of hnet (0 to 1)"]),
        (lambda s: s["results"]["matrices"]["hnet"]["CL1"].pop(), ["is not a 2 x 2 matrix"]),
        (lambda s: s["results"].pop("params"), ["state['results']: missing 'params'"]),
        (lambda s: s.update(units=["hnet"]), ["it is for units ['hnet']"]),
        (lambda s: s.update(surprise=1), ["unexpected 'surprise'"]),
    ],
)
def test_a_checkpoint_state_that_does_not_fit_is_refused(interrupted: Path, edit, needles) -> None:
    _edit_state(interrupted, edit)
    before = _tree(interrupted)
    code, _, err = _run(["continual", "--out", str(interrupted), "--resume"])
    _assert_one_line_error(code, err, str(interrupted / "checkpoints"), *needles)
    assert _tree(interrupted) == before


def test_a_hand_edited_checkpoint_is_refused_as_tampered(interrupted: Path) -> None:
    _edit_state(interrupted, lambda s: s.update(unit=1), resign=False)
    before = _tree(interrupted)
    code, _, err = _run(["continual", "--out", str(interrupted), "--resume"])
    _assert_one_line_error(code, err, "tampered checkpoint", "does not match its SHA-256")
    assert _tree(interrupted) == before


@pytest.mark.parametrize(
    "line, needles",
    [
        ("frobnicate: 1\n", ["lacks: frobnicate"]),
        ("seed: -1\n", ["config.yaml: seed: expected an int in [0, 2**32), got -1"]),
        ("lr: .inf\n", ["config.yaml: lr: expected a finite float, got inf"]),
    ],
)
def test_a_saved_config_that_does_not_fit_is_refused(interrupted: Path, line: str, needles) -> None:
    saved = interrupted / "config.yaml"
    text = "".join(t for t in saved.read_text().splitlines(keepends=True) if t.split(":")[0] != line.split(":")[0])
    saved.write_text(text + line)
    before = _tree(interrupted)
    code, _, err = _run(["continual", "--out", str(interrupted), "--resume"])
    _assert_one_line_error(code, err, *needles)
    assert _tree(interrupted) == before


class _Inner(TypedDict):
    n: int


class _Required(TypedDict):
    step: int
    losses: list[float | None]
    inner: _Inner
    table: dict[str, list[int]]


class _State(_Required, total=False):
    extra: Any


def test_validate_state_names_every_mismatch() -> None:
    good = {"step": 1, "losses": [0.5, None, 2], "inner": {"n": 3}, "table": {"a": [1]}, "extra": {"x": []}}
    validate_state(good, _State)
    validate_state({k: v for k, v in good.items() if k != "extra"}, _State)
    bad = {"step": True, "losses": [float("nan"), "x"], "inner": {}, "table": {"a": [1.5]}, "other": 0}
    with pytest.raises(CheckpointError) as info:
        validate_state(bad, _State, "the test state")
    message = str(info.value)
    assert message.startswith("the test state does not fit: ")
    for needle in [
        "state: unexpected 'other'",
        "state['step']: expected int, got True (bool)",
        "state['losses'][0]: expected float or null, got nan (float)",
        "state['losses'][1]: expected float or null, got 'x' (str)",
        "state['inner']: missing 'n'",
        "state['table']['a'][0]: expected int, got 1.5 (float)",
    ]:
        assert needle in message, (needle, message)


# ---------------------------------------------------------------------- the trained model
def test_the_run_saves_its_model_and_load_model_rebuilds_it(tmp_path: Path, monkeypatch) -> None:
    from hyperdnn import HyperModel
    from hyperdnn.data.streams import make_stream

    saved = {}
    original = RunContext.save_model

    def capture(self, module, name="model", info=None):
        saved.update({k: v.detach().clone() for k, v in module.state_dict().items()})
        return original(self, module, name, info)

    monkeypatch.setattr(RunContext, "save_model", capture)
    out = tmp_path / "run"
    code, _, err = _run(["continual", *FAST, "--scenarios", "CL1,CL2", "--out", str(out)])
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert not (out / "checkpoints").exists()  # a finished run keeps no checkpoints

    rng = torch.get_rng_state()
    model = load_model(out)
    assert torch.equal(torch.get_rng_state(), rng)  # loading draws nothing from the caller's generator
    assert isinstance(model, HyperModel) and not model.training
    state = model.state_dict()
    assert sorted(state) == sorted(saved) and all(torch.equal(state[k], saved[k]) for k in saved)

    # the loaded model predicts what the run measured at its end, task by task
    stream = make_stream("split", "digits", 2, seed=0)
    final = results["metrics"]["methods"]["hnet"]["CL1"]["matrix"][-1]
    with torch.no_grad():
        for t, task in enumerate(stream):
            logits = model(task.x_test, torch.tensor([t]), mode="ensemble")[0]
            assert int((logits.argmax(-1) == task.y_test).sum()) / task.num_test == final[t]
            shared = model(task.x_test, t)  # the shared-weight path gives the same logits
            assert torch.allclose(shared, logits, atol=1e-5)

    with pytest.raises(CheckpointError, match="no model 'other'"):
        load_model(out, "other")
    (tmp_path / "bad.safetensors").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(tmp_path / "bad.safetensors")


def test_a_saved_models_info_sizes_are_ints_of_at_least_one() -> None:
    from hyperdnn.engine.model import info_sizes
    from hyperdnn.recipes.continual import ContinualConfig, build_model

    assert info_sizes({"features": 3, "arms": 2, "other": "x"}, "features", "arms") == {"features": 3, "arms": 2}
    for info, got in (({"features": 3}, "'arms': None"), ({"features": True, "arms": 2}, "'features': True"),
                      ({"features": 3, "arms": 0}, "'arms': 0"), ({"features": 2.0, "arms": 2}, "'features': 2.0")):  # fmt: skip
        with pytest.raises(CheckpointError, match=rf"needs features and arms \(ints >= 1\), got \{{{got}\}}"):
            info_sizes(info, "features", "arms")
    # a recipe's build_model refuses a model file whose info does not fit, naming the keys
    with pytest.raises(CheckpointError, match="needs in_features and classes_per_task and num_tasks"):
        build_model(ContinualConfig(), "model", {"in_features": 64, "classes_per_task": 2})


def test_a_new_run_that_loses_the_lock_race_leaves_the_winners_files(tmp_path, monkeypatch) -> None:
    # a run that found the folder free took its snapshot; another run then took the folder,
    # and the refused run's clean-up deleted everything not in its snapshot: the other's files
    import hyperdnn.engine.run as run_module

    out = tmp_path / "new" / "run"
    original = run_module.lock_folder

    def another_run_wins(folder, create=True):
        (folder / "config.yaml").write_text("the other run's\n")
        original(folder)  # the other run holds the lock now
        return original(folder)  # and this run's attempt is refused

    monkeypatch.setattr(run_module, "lock_folder", another_run_wins)
    code, _, err = _run(["continual", *FAST, "--out", str(out)])
    _assert_one_line_error(code, err, "in use by another run")
    assert (out / "config.yaml").read_text() == "the other run's\n"
    assert (out / LOCK_FILE).exists()


def test_a_folder_left_by_a_run_killed_while_writing_its_config_takes_a_new_run(tmp_path) -> None:
    # only a lock file and the config's temporary file: --resume had no config.yaml to read and
    # a new run said the folder already held files
    out = tmp_path / "run"
    out.mkdir()
    (out / ".config.yaml.k7z_a50.tmp").write_text("recipe: contin")
    (out / LOCK_FILE).write_text("")
    code, _, err = _run(["continual", *FAST, "--out", str(out)])
    assert code == 0, err
    assert (out / "config.yaml").exists() and not (out / ".config.yaml.k7z_a50.tmp").exists()
