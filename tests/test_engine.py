"""The recipe engine: configs, command line, checkpoints, run folders, seeding."""

from __future__ import annotations

import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from hyperdnn.engine import (
    Checkpointer,
    CheckpointError,
    ConfigError,
    Outcome,
    Recipe,
    RunOptions,
    build_config,
    derive_seed,
    describe,
    execute,
    load_optimizer_state,
    optimizer_state_tensors,
    option,
    run_command,
)
from hyperdnn.engine.cli import parse_run_args, recipe_help
from hyperdnn.engine.config import format_fields, load_config_file


@dataclass
class ToyConfig:
    steps: int = option(3, "number of steps")
    rate: float = option(0.5, "a rate")
    name: str = option("a", "a name", choices=("a", "b"))
    widths: tuple[int, ...] = option((4, 8), "layer widths")
    flag: bool = option(False, "a switch")
    limit: int | None = option(None, "an optional limit")

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"--steps: expected an int >= 1, got {self.steps}")


def _toy_run(cfg: ToyConfig, ctx) -> Outcome:
    g = ctx.generator("draw")
    value = float(torch.rand((), generator=g))
    ctx.log(f"steps {cfg.steps}")
    ctx.save_checkpoint({"w": torch.full((2,), value)}, {"step": cfg.steps})
    return Outcome({"value": value, "nan": float("nan"), "steps": cfg.steps}, "| a | b |\n|---|---|\n| 1 | 2 |\n")


TOY = Recipe("toy", "a toy recipe", ToyConfig, _toy_run)


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_command(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------- configs
def test_overrides_are_typed() -> None:
    cfg, opts = parse_run_args(
        TOY, ["--steps", "5", "--rate=0.25", "--name", "b", "--widths", "1,2,3", "--flag", "--limit", "none"]
    )
    assert (cfg.steps, cfg.rate, cfg.name, cfg.widths, cfg.flag, cfg.limit) == (5, 0.25, "b", (1, 2, 3), True, None)
    cfg, opts = parse_run_args(TOY, ["--limit", "7", "--flag", "false", "--seed", "3", "--out", "x"])
    assert cfg.limit == 7 and cfg.flag is False and opts.seed == 3 and opts.out == "x"
    assert isinstance(cfg.rate, float)


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["--step", "5"], ["unknown option --step", "did you mean --steps"]),
        (["--steps", "ten"], ["--steps", "expected int", "'ten'"]),
        (["--rate", "fast"], ["--rate", "expected float"]),
        (["--name", "c"], ["--name", "expected one of {a, b}", "'c'"]),
        (["--widths", "4,x"], ["--widths", "expected int", "'x'"]),
        (["--steps", "0"], ["--steps", "expected an int >= 1, got 0"]),
        (["--steps"], ["--steps", "expected a value"]),
        (["steps", "3"], ["expected --key value pairs", "'steps'"]),
        (["--steps", "1", "--steps", "2"], ["--steps given twice"]),
        (["--threads", "-1"], ["--threads", "expected an int in [0, ", "got -1"]),
    ],
)
def test_config_errors_name_expected_and_given(argv, needles) -> None:
    with pytest.raises(ConfigError) as info:
        parse_run_args(TOY, argv)
    for n in needles:
        assert n in str(info.value)


def test_yaml_file_then_command_line(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("recipe: toy\nsteps: 9\nwidths: [1, 2]\nrate: 2\nseed: 4\n")
    cfg, opts = parse_run_args(TOY, ["--config", str(path), "--steps", "2"])
    assert cfg.steps == 2 and cfg.widths == (1, 2) and cfg.rate == 2.0 and opts.seed == 4

    path.write_text("stesp: 1\n")
    with pytest.raises(ConfigError, match=r"run.yaml: unknown option stesp; did you mean steps"):
        parse_run_args(TOY, ["--config", str(path)])
    path.write_text("steps: 1.5\n")
    with pytest.raises(ConfigError, match=r"run.yaml: steps: expected int, got 1.5"):
        parse_run_args(TOY, ["--config", str(path)])
    path.write_text("flag: 1\n")
    with pytest.raises(ConfigError, match=r"expected bool, got 1 \(int\)"):
        parse_run_args(TOY, ["--config", str(path)])
    path.write_text("recipe: other\n")
    with pytest.raises(ConfigError, match="for recipe 'other', not 'toy'"):
        parse_run_args(TOY, ["--config", str(path)])
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config_file(path)
    path.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config_file(path)
    with pytest.raises(ConfigError, match="missing.yaml' does not exist"):
        load_config_file(tmp_path / "missing.yaml")


def test_help_lists_every_field() -> None:
    text = recipe_help(TOY)
    for f in describe(ToyConfig) + describe(RunOptions):
        assert f.flag in text and f.help in text
    assert "--widths INT,..." in text and "4,8" in text and "{a, b}" in text and "INT|NONE" in text


def test_option_rejects_mutable_defaults_and_configs_need_defaults() -> None:
    with pytest.raises(TypeError, match="immutable"):
        option([1, 2], "a list")

    @dataclass
    class NoDefault:
        x: int

    with pytest.raises(TypeError, match="need a default"):
        describe(NoDefault)
    with pytest.raises(ConfigError, match="unknown option --y"):
        build_config(ToyConfig, {"y": 1})


def test_option_ranges_are_checked_for_every_source_and_shown_in_help(tmp_path: Path) -> None:
    @dataclass
    class Ranged:
        batch: int = option(64, "minibatch size", low=1)
        dropout: float = option(0.2, "dropout", low=0, below=1)
        lr: float = option(1e-3, "learning rate", above=0)
        gamma: float = option(1.0, "decay", low=0, high=1)
        widths: tuple[int, ...] = option((8,), "widths", low=1)
        names: tuple[str, ...] = option(("a",), "names", nonempty=True, distinct=True)

    for values, message in [
        ({"batch": "0"}, "--batch: expected an int >= 1, got 0"),
        ({"dropout": "1"}, "--dropout: expected a float in [0, 1), got 1.0"),
        ({"lr": "0"}, "--lr: expected a float > 0, got 0.0"),
        ({"gamma": 1.5}, "--gamma: expected a float in [0, 1], got 1.5"),
        ({"widths": "4,0,2"}, "--widths: expected ints >= 1, got 4,0,2"),
        ({"names": ""}, "--names: expected at least one value, got none"),
        ({"names": "a,b,a"}, "--names: expected distinct values, got a,b,a"),
    ]:
        with pytest.raises(ConfigError) as info:
            build_config(Ranged, values)
        assert str(info.value) == message
    assert build_config(Ranged, {"dropout": "0", "gamma": "1", "lr": "1e-9"}).gamma == 1.0  # the bounds themselves
    path = tmp_path / "r.yaml"
    path.write_text("batch: -3\n")
    with pytest.raises(ConfigError, match=r"r.yaml: batch: expected an int >= 1, got -3"):
        build_config(Ranged, {"batch": -3}, {"batch": f"{path}: batch"})
    text = format_fields(describe(Ranged))
    assert "minibatch size (>= 1)" in text and "dropout (in [0, 1))" in text and "learning rate (> 0)" in text
    assert "names (at least one, distinct)" in text
    with pytest.raises(TypeError, match="give low or above, and high or below, not both"):
        option(1, "x", low=0, above=0)

    @dataclass
    class Wrong:
        name: str = option("a", "a name", low=1)

    with pytest.raises(TypeError, match=r"Wrong.name: a range \(low, high, above, below\) needs an int or float field"):
        describe(Wrong)

    @dataclass
    class Scalar:
        n: int = option(1, "a count", nonempty=True)

    with pytest.raises(TypeError, match="Scalar.n: nonempty and distinct need a tuple field"):
        describe(Scalar)


# ---------------------------------------------------------------------- command line
def test_list_and_help() -> None:
    code, out, _ = _run(["--list"])
    assert code == 0 and "continual" in out
    code, out, _ = _run(["continual", "--help"])
    assert code == 0
    from hyperdnn.recipes.continual import ContinualConfig

    for f in describe(ContinualConfig) + describe(RunOptions):
        assert f.flag in out


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["nosuch"], ["unknown recipe 'nosuch'", "continual"]),
        (["continual", "--benchmark", "cifar"], ["--benchmark", "expected one of {permuted, split}", "'cifar'"]),
        (["continual", "--scenarios", "CL1,CL4"], ["--scenarios", "'CL4'"]),
        (["continual", "--data", "imagenet"], ["--data", "'imagenet'"]),
        (["continual", "--benchmark", "split", "--num_tasks", "6"], ["at most 5 tasks", "got 6"]),
        (["continual", "--data", "mnist", "--data_root", "/nonexistent"], ["MNIST idx files not found"]),
        (["continual", "--epoch", "3"], ["did you mean --epochs"]),
        (["continual", "--epochs", "-1"], ["--epochs", ">= 0, got -1"]),
        (["continual", "--device", "tpu"], ["--device", "'tpu'"]),
        (["continual", "--device", "cuda:7"], ["--device cuda:7"]),
        (["--frobnicate"], ["expected a recipe name or --list"]),
        # every float option is finite
        (["continual", "--lr", "inf"], ["--lr: expected a finite float, got inf"]),
        (["continual", "--beta", "inf"], ["--beta: expected a finite float, got inf"]),
        (["continual", "--hnet_lr", "nan"], ["--hnet_lr: expected a finite float, got nan"]),
        (["continual", "--ewc_lambda", "1e400"], ["--ewc_lambda: expected a finite float, got inf"]),
        # seeds that torch and numpy accept; ints of 64 bits; threads of this machine
        (["continual", "--seed", "-1"], ["--seed: expected an int in [0, 2**32), got -1"]),
        (["continual", "--seed", str(10**30)], ["--seed: expected an int in [0, 2**32), got 1000000000000000"]),
        (["continual", "--seed", str(2**32)], ["--seed: expected an int in [0, 2**32), got 4294967296"]),
        (["continual", "--batch_size", str(10**20)], ["--batch_size: expected an int in [-2**63, 2**63)"]),
        (["continual", "--threads", "100000"], ["--threads: expected an int in [0, ", "got 100000"]),
        # sizes the data and the memory of this machine cannot supply
        (
            ["continual", "--num_tasks", str(10**9)],
            ["estimated", "of memory, more than the", "the accuracy matrices (--num_tasks 1000000000)"],
        ),
        (["continual", "--hidden", str(10**11)], ["estimated", "more than the", "the hypernetwork", "--hidden"]),
        (["continual", "--task_embed_dim", str(10**11)], ["estimated", "--task_embed_dim"]),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, argv, needles) -> None:
    out = tmp_path / "run"
    code, _, err = _run(argv + (["--out", str(out)] if len(argv) > 1 or argv[0] == "nosuch" else []))
    _assert_one_line_error(code, err, *needles)
    assert not out.exists()


@pytest.mark.parametrize(
    "content, needles",
    [
        (b"epochs: 1\nlr: \xff\xfe\n", ["is not UTF-8 text (byte 0xff at offset 14)"]),
        (b"- epochs\n- 1\n", ["must hold a mapping of option: value, got a YAML list"]),
        (b"epochs: [1,\n", ["is not valid YAML", "line 2"]),
        (b"lr: .inf\n", ["run.yaml: lr: expected a finite float, got inf"]),
        (None, ["does not exist"]),
        ("folder", ["is a folder"]),
    ],
)
def test_config_file_errors_are_one_line_naming_the_file(tmp_path: Path, content, needles) -> None:
    path = tmp_path / "run.yaml"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    out = tmp_path / "run"
    code, _, err = _run(["continual", "--config", str(path), "--out", str(out)])
    _assert_one_line_error(code, err, str(path), *needles)
    assert not out.exists()


def test_seed_range_is_what_torch_and_numpy_accept() -> None:
    import numpy as np

    from hyperdnn.data.streams import make_stream
    from hyperdnn.engine.seeding import SEED_RANGE

    lo, hi = SEED_RANGE
    for seed in (lo, hi - 1):
        torch.manual_seed(seed)
        np.random.seed(seed)
        np.random.default_rng(seed)
        assert RunOptions(seed=seed).seed == seed
    # the permuted stream seeds torch with seed * 100003 + task: still in torch's range at the top
    assert len(make_stream("permuted", "digits", 2, seed=hi - 1)) == 2
    with pytest.raises(ValueError):
        np.random.seed(hi)  # numpy's legacy seeding stops at 2**32
    with pytest.raises(ValueError):
        np.random.default_rng(lo - 1)  # and takes no negative seed
    torch.manual_seed(0)


def test_results_json_takes_any_metric(tmp_path: Path) -> None:
    import numpy as np

    @dataclass
    class Cfg:
        limit: float = option(float("inf"), "a limit that may be infinite", finite=False)

    metrics = {
        "nan": float("nan"),
        "inf": [float("inf"), -float("inf"), 1.5],
        "numpy": {"f32": np.float32(0.25), "nan32": np.float32("nan"), "i64": np.int64(3), "ok": np.bool_(True)},
        "tensor": torch.tensor([1.0, float("inf")]),
        "scalar": torch.tensor(2),
        "array": np.array([[1, 2]]),
        "nested": ({"deep": (float("nan"),)},),
        7: "an int key",
        "path": Path("x"),
    }
    recipe = Recipe("anymetric", "any metric", Cfg, lambda cfg, ctx: Outcome(metrics, ""))
    out = tmp_path / "run"
    _, opts = parse_run_args(recipe, ["--out", str(out), "--limit", "inf"])
    execute(recipe, Cfg(limit=float("inf")), opts, stream=None)

    def refuse(token):
        raise AssertionError(f"results.json holds {token}")

    saved = json.loads((out / "results.json").read_text(), parse_constant=refuse)
    assert saved["config"]["limit"] is None
    assert saved["metrics"] == {
        "nan": None,
        "inf": [None, None, 1.5],
        "numpy": {"f32": 0.25, "nan32": None, "i64": 3, "ok": True},
        "tensor": [1.0, None],
        "scalar": 2,
        "array": [[1, 2]],
        "nested": [{"deep": [None]}],
        "7": "an int key",
        "path": "x",
    }


def test_tensorboard_is_optional(tmp_path: Path, monkeypatch) -> None:
    import hyperdnn.engine.run as run_module

    monkeypatch.setattr(run_module, "tensorboard_available", lambda: False)
    out = tmp_path / "run"
    code, _, err = _run(["continual", "--tensorboard", "--out", str(out)])
    _assert_one_line_error(code, err, "--tensorboard needs the tensorboard package")
    assert not out.exists()


def test_output_folder_is_never_overwritten(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    before = _tree(out)
    code, _, err = _run(["continual", "--out", str(out), "--epochs", "1"])
    _assert_one_line_error(code, err, "already holds files", "--resume")
    assert _tree(out) == before

    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _run(["continual", "--out", str(blocker / "sub"), "--epochs", "1"])
    _assert_one_line_error(code, err, "cannot create output folder")


def test_resume_without_or_with_corrupt_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, _, err = _run(["continual", "--out", str(out), "--resume"])
    _assert_one_line_error(code, err, "no run to resume")

    out.mkdir()
    (out / "config.yaml").write_text("recipe: continual\nseed: 0\nepochs: 1\n")
    Checkpointer(out / "checkpoints").save({"w": torch.ones(3)}, {"unit": 0})
    blob = next((out / "checkpoints").glob("ckpt-*.safetensors"))
    blob.write_bytes(blob.read_bytes()[:-4] + b"oops")
    before = _tree(out)
    code, _, err = _run(["continual", "--out", str(out), "--resume"])
    _assert_one_line_error(code, err, "corrupt checkpoint", "SHA-256")
    assert _tree(out) == before

    code, _, err = _run(["continual", "--out", str(out), "--resume", "--epochs", "2"])
    _assert_one_line_error(code, err, "--epochs", "used 1", "cannot change it")


def test_a_resumed_run_keeps_its_threads_and_device_unless_given_again(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("recipe: toy\nseed: 3\ndevice: cpu\nthreads: 1\nsteps: 2\n")
    _, opts = parse_run_args(TOY, ["--out", str(out), "--resume"])
    assert (opts.seed, opts.threads, opts.device) == (3, 1, "cpu")
    _, opts = parse_run_args(TOY, ["--out", str(out), "--resume", "--threads", "0"])
    assert opts.threads == 0  # given again: the new value
    (out / "config.yaml").write_text(f"recipe: toy\nseed: 3\ndevice: cpu\nthreads: {10**6}\nsteps: 2\n")
    _, opts = parse_run_args(TOY, ["--out", str(out), "--resume"])
    assert opts.threads == 0  # more CPUs than this machine has: torch's default here


# ---------------------------------------------------------------------- run folders
def test_execute_writes_the_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    cfg, opts = parse_run_args(TOY, ["--out", str(out), "--seed", "7", "--steps", "4", "--progress", "false"])
    results = execute(TOY, cfg, opts, stream=None)
    assert sorted(p.name for p in out.iterdir()) == [  # a finished run keeps no checkpoints
        ".lock",
        "config.yaml",
        "log.txt",
        "results.json",
        "summary.md",
    ]
    saved = json.loads((out / "results.json").read_text())
    assert saved == results
    assert saved["seed"] == 7 and saved["config"]["steps"] == 4 and saved["metrics"]["nan"] is None
    assert "steps 4" in (out / "log.txt").read_text()
    again, _ = parse_run_args(TOY, ["--config", str(out / "config.yaml")])
    assert again == cfg
    # the same seed draws the same numbers; another seed others
    out2 = tmp_path / "toy2"
    _, opts2 = parse_run_args(TOY, ["--out", str(out2), "--seed", "7", "--steps", "4"])
    assert execute(TOY, cfg, opts2, stream=None)["metrics"]["value"] == saved["metrics"]["value"]
    out3 = tmp_path / "toy3"
    _, opts3 = parse_run_args(TOY, ["--out", str(out3), "--seed", "8", "--steps", "4"])
    assert execute(TOY, cfg, opts3, stream=None)["metrics"]["value"] != saved["metrics"]["value"]


# ---------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_is_atomic(tmp_path: Path) -> None:
    ck = Checkpointer(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        ck.load()
    ck.save({"a": torch.arange(4.0), "b": torch.ones(2, 2, dtype=torch.int64)}, {"step": 1, "name": "x"})
    ck.save({"a": torch.arange(4.0) * 2}, {"step": 2})
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["ckpt-000002.safetensors", "latest.json"]
    loaded = ck.load()
    assert loaded.state == {"step": 2} and torch.equal(loaded.tensors["a"], torch.arange(4.0) * 2)
    # a new Checkpointer on the same folder continues the numbering
    Checkpointer(tmp_path).save({"a": torch.zeros(1)}, {"step": 3})
    assert (tmp_path / "ckpt-000003.safetensors").exists() and not (tmp_path / "ckpt-000002.safetensors").exists()
    with pytest.raises(TypeError, match="JSON-serialisable"):
        ck.save({}, {"bad": {1, 2}})
    with pytest.raises(TypeError, match="non-tensor"):
        ck.save({"x": [1, 2]}, {})  # type: ignore[dict-item]
    assert ck.load().state == {"step": 3}
    # a diverged loss (NaN, infinities) in the state is kept: it crashed the run with a traceback
    ck.save({}, {"loss": [1.5, float("nan")], "best": {"v": float("inf"), "w": float("-inf")}, "step": 4})
    state = Checkpointer(tmp_path).load().state
    assert state["loss"][0] == 1.5 and math.isnan(state["loss"][1]) and state["step"] == 4
    assert state["best"] == {"v": float("inf"), "w": float("-inf")}
    assert "NaN" not in (tmp_path / "latest.json").read_text()  # the file stays plain JSON
    ck.save({}, {"step": 3})
    (tmp_path / "latest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        ck.load()


def test_optimizer_state_round_trip() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 3)).pow(2).sum().backward()
        opt.step()
    tensors, meta = optimizer_state_tensors(opt, "optim.")
    meta = json.loads(json.dumps(meta))
    clone = torch.nn.Linear(3, 2)
    clone.load_state_dict(model.state_dict())
    opt2 = torch.optim.Adam(clone.parameters(), lr=0.5)
    load_optimizer_state(opt2, tensors, meta, "optim.")
    x = torch.randn(4, 3)
    for m, o in ((model, opt), (clone, opt2)):
        o.zero_grad()
        m(x).pow(2).sum().backward()
        o.step()
    assert torch.equal(model.weight, clone.weight) and torch.equal(model.bias, clone.bias)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_optimizer_state(torch.optim.Adam([torch.nn.Parameter(torch.ones(1))]), tensors, meta, "optim.")


def test_derived_seeds_are_stable_and_distinct() -> None:
    assert derive_seed(0, "a", 1) == derive_seed(0, "a", 1)
    seeds = {derive_seed(s, k, t) for s in range(3) for k in ("a", "b") for t in range(5)}
    assert len(seeds) == 30 and all(0 <= s < 2**63 for s in seeds)


def test_engine_and_recipe_modules_import() -> None:
    import importlib

    for mod in [
        "engine",
        "engine.cli",
        "engine.config",
        "engine.checkpoint",
        "engine.model",
        "engine.progress",
        "engine.registry",
        "engine.run",
        "engine.seeding",
        "engine.errors",
        "engine.loop",
        "engine.report",
        "recipes.continual",
        "recipes.demo",
        "recipes.dynamic",
        "data.streams",
        "data.mnist",
    ]:
        module = importlib.import_module(f"hyperdnn.{mod}")
        for name in getattr(module, "__all__", []):
            assert hasattr(module, name), (mod, name)


@pytest.mark.parametrize(
    "module", ["engine.checkpoint", "engine.config", "engine.model", "engine.report", "recipes._continual_checks"]
)
def test_docstring_examples_run(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"hyperdnn.{module}"), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_apply_preset_keeps_given_options_or_overrides_them():
    from dataclasses import dataclass

    from hyperdnn.engine.config import apply_preset

    @dataclass
    class Cfg:
        epochs: int = 10
        width: int = 64

    given = Cfg(width=32)
    apply_preset(given, {"epochs": 2, "width": 8})
    assert (given.epochs, given.width) == (2, 32)  # the option given keeps its value
    forced = Cfg(width=32)
    apply_preset(forced, {"epochs": 2, "width": 8}, keep_given=False)
    assert (forced.epochs, forced.width) == (2, 8)
    untouched = Cfg()
    with pytest.raises(KeyError, match="depth"):
        apply_preset(untouched, {"epochs": 2, "depth": 3})
    assert untouched.epochs == 10  # a name that is not a field is refused before anything is set


def test_progress_bars_show_on_a_terminal_only(monkeypatch) -> None:
    # in a pipe or a log file a bar's carriage returns ran into the log lines
    pytest.importorskip("tqdm")
    from hyperdnn.engine.progress import ProgressBar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, shown in ((io.StringIO(), False), (Terminal(), True)):
        monkeypatch.setattr(sys, "stderr", stream)
        with ProgressBar(5, "unit", enabled=True) as bar:
            for _ in range(5):
                bar.update()
        assert bool(stream.getvalue()) == shown, stream.getvalue()
