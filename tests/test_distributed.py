"""Data-parallel runs under torchrun (hyperdnn.engine.distributed, RunContext.prepare/shard).

A tiny recipe defined here (a hypernetwork and a plain MLP, Adam, minibatches that do not
split evenly, one of a single row) is trained as one process and as 2 processes under
``torch.distributed.run`` (gloo, 127.0.0.1, a free port, bounded in time): the saved weights
agree within float tolerance, only rank 0 writes, a resume under torchrun ends with the same
weights, and a resume with another number of processes is refused with nothing written.

Run as a script, this file is the ``hyperdnn run`` command with the tiny recipe registered
(what torchrun starts in every process).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from hyperdnn import MLP, HyperModel, HyperNetwork, LearnedLatent, Target
from hyperdnn.engine import (
    Checkpointer,
    Outcome,
    Recipe,
    RunOptions,
    Unit,
    Work,
    execute,
    option,
    register_recipe,
    run_units,
)
from hyperdnn.engine.distributed import Share, World, world_from_env
from hyperdnn.engine.errors import CheckpointError, UsageError
from hyperdnn.engine.model import read_model_info
from hyperdnn.engine.run import _load_resume_checkpoint

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


# ====================================================================== the tiny recipe
@dataclass
class TinyConfig:
    rows: int = option(46, "training rows (46 in batches of 15: 15, 15, 15 and 1)", low=1)
    batch_size: int = option(15, "global minibatch", low=1)
    epochs: int = option(3, "epochs per model", low=1)


def _data(cfg: TinyConfig) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(cfg.rows, 5, generator=g)
    return x, (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()


def _model(kind: str) -> nn.Module:
    net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    if kind == "plain":
        return net
    target = Target(net)
    return HyperModel(HyperNetwork(target, LearnedLatent(4), MLP((6,))), target)


class TinyWork(Work):
    def __init__(self, cfg: TinyConfig, kind: str, ctx: Any):
        torch.manual_seed(ctx.derive_seed(kind))
        self.cfg, self.kind, self.ctx = cfg, kind, ctx
        self.model = _model("plain" if kind == "plain" else "hyper")
        self.net = self.model if kind == "stepped" else ctx.prepare(self.model)
        self.order = torch.Generator().manual_seed(ctx.derive_seed("order", kind))
        self.x, self.y = _data(cfg)

    def start_stage(self, stage, fresh):
        params = self.model.trainable_parameters() if isinstance(self.model, HyperModel) else self.model.parameters()
        self.opt = torch.optim.Adam(params, lr=0.05)
        if self.kind == "stepped":  # gradients combined by the optimizer, not DDP
            self.opt = self.ctx.prepare_optimizer(self.opt)
        return self.opt

    def steps(self, stage):
        return -(-self.cfg.rows // self.cfg.batch_size)

    def train_epoch(self, stage, epoch, tick):
        if os.environ.get("TINY_STOP") == f"{self.kind}/{epoch}":
            raise KeyboardInterrupt  # an interruption after the checkpoint of the previous epoch
        for batch in torch.randperm(self.cfg.rows, generator=self.order).split(self.cfg.batch_size):
            idx = self.ctx.shard(batch)
            loss = nn.functional.cross_entropy(self.net(self.x[idx]), self.y[idx])
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            tick()
        return {"loss": loss.item()}

    def end_stage(self, stage, results):
        return ""

    def end_unit(self, results):
        self.ctx.save_model(self.model, self.kind)

    def state(self):
        return {**self.model.state_dict(), "order": self.order.get_state()}, {}

    def load_state(self, tensors, meta):
        self.order.set_state(tensors["order"])
        self.model.load_state_dict({k: v for k, v in tensors.items() if k != "order"})


KINDS = ("hyper", "plain", "stepped")


def run_tiny(cfg: TinyConfig, ctx: Any) -> Outcome:
    units = [Unit(kind, ("",), cfg.epochs) for kind in KINDS]
    run_units(ctx, units, lambda unit: TinyWork(cfg, unit.key, ctx), {}, checkpoint_every=1)
    return Outcome({"rank": ctx.world.rank}, "tiny\n")


RECIPE = Recipe("tiny", "a tiny data-parallel recipe", TinyConfig, run_tiny, data_parallel=True)


# ====================================================================== helpers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], nproc: int = 2, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """This file as ``hyperdnn run`` under torchrun, ``nproc`` processes on 127.0.0.1."""
    command = [PYTHON, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1"]
    command += ["--master_addr=127.0.0.1", f"--master_port={_free_port()}", __file__, "run", *args]
    clean = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    clean.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})})
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT, env=clean)


def weights(out: Path, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / f"{name}.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    for name in KINDS:
        wa, wb = weights(a, name), weights(b, name)
        assert wa.keys() == wb.keys()
        for k in wa:
            torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5, msg=f"{name}: {k}")


def listing(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}


ARGS = ["tiny", "--threads", "1", "--progress", "false"]


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """The tiny recipe as one process (the reference)."""
    out = tmp_path_factory.mktemp("single") / "run"
    execute(RECIPE, TinyConfig(), RunOptions(out=str(out), threads=1, progress=False), stream=None)
    return out


# ====================================================================== tests
def test_two_processes_equal_one_and_only_rank0_writes(single, tmp_path):
    out = tmp_path / "two"
    done = torchrun([*ARGS, "--out", str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_weights(single, out)
    # rank 0 alone wrote the folder: the same files as one process, each log line once
    assert sorted(listing(out)) == sorted(listing(single))
    log = (out / "log.txt").read_text().splitlines()
    assert len(log) == len((single / "log.txt").read_text().splitlines())
    assert "2 processes (torchrun)" in log[0]
    assert done.stdout.count("starting tiny") == 1
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2 and results["metrics"] == {"rank": 0}
    assert read_model_info(out / "hyper.safetensors")["recipe"] == "tiny"


def test_resume_under_torchrun_and_refuse_another_world_size(single, tmp_path):
    out = tmp_path / "resumed"
    stopped = torchrun([*ARGS, "--out", str(out)], env={"TINY_STOP": "plain/2"})
    assert stopped.returncode != 0 and "interrupted; continue with --resume" in stopped.stderr
    assert (out / "checkpoints" / "latest.json").is_file() and not (out / "results.json").exists()
    # one process cannot resume what two wrote: refused before anything is written
    before = listing(out)
    with pytest.raises(CheckpointError, match=r"written by a run of 2 process\(es\), this run has 1; resume it under"):
        execute(RECIPE, TinyConfig(), RunOptions(out=str(out), resume=True, threads=1, progress=False), stream=None)
    assert listing(out) == before
    # three cannot either, and every process says so
    three = torchrun([*ARGS, "--out", str(out), "--resume"], nproc=3)
    assert three.returncode != 0
    assert three.stderr.count("this run has 3; resume it under torchrun --nproc_per_node=2") == 3, three.stderr[-2000:]
    assert listing(out) == before
    resumed = torchrun([*ARGS, "--out", str(out), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming tiny" in resumed.stdout
    assert json.loads((out / "results.json").read_text())["resumed"] is True
    assert_same_weights(single, out)


def test_rank0_refusal_reaches_every_process(tmp_path):
    out = tmp_path / "full"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    done = torchrun([*ARGS, "--out", str(out)])
    assert done.returncode != 0
    assert done.stderr.count("hyperdnn run tiny: error: output folder") == 2, done.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


# ---------------------------------------------------------------------- bad input, in process
def test_world_from_env():
    assert world_from_env({}) == World()
    assert world_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == World(3, 4, 1)
    with pytest.raises(UsageError, match="without LOCAL_RANK"):
        world_from_env({"WORLD_SIZE": "2", "RANK": "0"})
    with pytest.raises(UsageError, match="expected integers"):
        world_from_env({"WORLD_SIZE": "two", "RANK": "0", "LOCAL_RANK": "0"})
    with pytest.raises(UsageError, match="got WORLD_SIZE=2, RANK=2"):
        world_from_env({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"})


def test_docstring_examples_run():
    from tests.helpers import run_doctests

    run_doctests("hyperdnn.engine.distributed")


def test_share_rows_and_weights():
    index = torch.arange(5)
    a, b = Share(World(0, 2, 0)), Share(World(1, 2, 1))
    assert a.rows(index).tolist() == [0, 1, 2] and a.weight == pytest.approx(3 / 5)
    assert b.rows(index).tolist() == [3, 4] and b.weight == pytest.approx(2 / 5)
    assert b.rows(torch.tensor([9])).tolist() == [9] and b.weight == 0.0  # too few rows: weight 0
    assert Share(World()).rows(index) is index
    with pytest.raises(ValueError, match="1-D tensor of integer row indices, got a torch.bool"):
        a.rows(index > 2)
    with pytest.raises(ValueError, match="got a list"):
        a.rows([0, 1])  # type: ignore[arg-type]


def test_checkpoints_record_their_world_size(tmp_path):
    Checkpointer(tmp_path / "two", world_size=2).save({"w": torch.ones(2)}, {"epoch": 1})
    assert Checkpointer(tmp_path / "two").load().world_size == 2
    Checkpointer(tmp_path / "one").save({"w": torch.ones(2)}, {"epoch": 1})
    assert Checkpointer(tmp_path / "one").load().world_size == 1
    # a checkpoint of one process refuses a resume under torchrun with 2, before anything is written
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    Checkpointer(tmp_path / "run" / "checkpoints").save({}, {"epoch": 1})
    with pytest.raises(
        CheckpointError, match="of 1 process\\(es\\), this run has 2; resume it as one process, without"
    ):
        _load_resume_checkpoint(RECIPE, TinyConfig(), tmp_path / "run", World(0, 2, 0))


def test_recipe_without_data_parallel_refuses_torchrun_and_compile(tmp_path, monkeypatch):
    serial = Recipe("serial", "no shards", TinyConfig, run_tiny, data_parallel="its training is episodes")
    out = tmp_path / "serial"
    options = RunOptions(out=str(out), threads=1, progress=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(UsageError, match=r"does not train data-parallel \(its training is episodes\); run it as one"):
        execute(serial, TinyConfig(), options, stream=None)
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(UsageError, match="expected WORLD_SIZE, RANK, LOCAL_RANK all set"):
        execute(RECIPE, TinyConfig(), options, stream=None)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("LOCAL_RANK")
    compiled = RunOptions(out=str(out), threads=1, progress=False, compile=True)
    with pytest.raises(UsageError, match=r"--compile: recipe 'serial' has no compiled training \(its training"):
        execute(serial, TinyConfig(), compiled, stream=None)
    assert not out.exists()
    with pytest.raises(TypeError, match="data_parallel must be a bool or a non-empty reason"):
        Recipe("bad", "x", TinyConfig, run_tiny, data_parallel="")


def test_a_data_parallel_run_without_torchrun_rendezvous_is_refused(tmp_path, monkeypatch):
    for k, v in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    out = tmp_path / "nomaster"
    with pytest.raises(UsageError, match="MASTER_ADDR and MASTER_PORT not set; start data-parallel runs with torchrun"):
        execute(RECIPE, TinyConfig(), RunOptions(out=str(out), threads=1, progress=False), stream=None)
    assert not out.exists()


if __name__ == "__main__":  # what torchrun starts: `hyperdnn run` with the tiny recipe registered
    from hyperdnn.cli import main

    register_recipe(RECIPE)  # only here: the test session's registry stays the library's
    sys.exit(main())
