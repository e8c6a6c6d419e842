"""Helpers shared by the test modules: random weight sets and plain-PyTorch references.

Every reference here is ordinary PyTorch: a copy of the module with one weight set loaded
as its parameters, or a loop of single (shared) calls, each of which the Target tests check
against such a copy.
"""

from __future__ import annotations

import copy
import doctest
import importlib
import io
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hyperdnn import Target, WeightSpec
from hyperdnn.engine import Checkpointer, run_command
from tests.models import cases

CASES = cases()
"""The model zoo of tests/models.py: name -> (make the module, make a batch of n inputs)."""


def build_case(name: str, **target_kwargs: Any) -> tuple[nn.Module, Target, Callable[[int], Any]]:
    """Case ``name`` built from seed 0: its module, a :class:`Target` of it (with
    ``target_kwargs``) and the function that makes a batch of its inputs."""
    torch.manual_seed(0)
    make, data = CASES[name]
    module = make()
    return module, Target(module, **target_kwargs), data


def random_weights(spec: WeightSpec, *batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights for ``spec`` with leading ``batch`` dims, drawn ``0.3 * N(0, 1)`` from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return {t.name: 0.3 * torch.randn((*batch, *t.shape), generator=g) for t in spec}


def one_set(weights: Mapping[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    """Weight set ``i`` of batched ``weights``."""
    return {k: v[i] for k, v in weights.items()}


def load(module: nn.Module, weights: Mapping[str, torch.Tensor]) -> nn.Module:
    """A copy of ``module`` with ``weights`` copied into its parameters (the plain reference)."""
    m = copy.deepcopy(module)
    params = dict(m.named_parameters())
    with torch.no_grad():
        for k, v in weights.items():
            params[k].copy_(v)
    return m


def state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``module``'s state dict."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_unchanged(module: nn.Module, before: dict[str, torch.Tensor]) -> None:
    """``module`` has the state ``before`` and no instance-level forward anywhere."""
    after = module.state_dict()
    assert set(after) == set(before)
    for k in before:
        assert torch.equal(after[k], before[k]), k
    for m in module.modules():
        assert "forward" not in m.__dict__


def per_sample_loop(target: Target, weights: Mapping[str, torch.Tensor], *inputs: torch.Tensor, bd: int = 0):
    """Sample ``b`` of every input run alone with weight set ``b`` (shared calls), concatenated at ``bd``."""
    B = inputs[0].shape[bd]
    return torch.cat([target(one_set(weights, b), *(x.narrow(bd, b, 1) for x in inputs)) for b in range(B)], bd)


def ensemble_loop(target: Target, weights: Mapping[str, torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
    """Every weight set run (shared) on the whole inputs, stacked: ``(K, N, ...)``."""
    K = next(iter(weights.values())).shape[0]
    return torch.stack([target(one_set(weights, k), *inputs) for k in range(K)])


def run_doctests(module: str) -> None:
    """Run the docstring examples of ``module`` (seeded); at least one, none failing."""
    torch.manual_seed(0)
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``hyperdnn <argv>`` run in-process: its exit code and what it wrote to stderr."""
    err = io.StringIO()
    return run_command(argv, stdout=io.StringIO(), stderr=err), err.getvalue()


def interrupt_then_resume(monkeypatch: Any, recipe: str, quick: list[str], out: Path, stop_at: int) -> dict[str, Any]:
    """Run ``recipe`` with ``quick`` options into ``out``, stopped (Ctrl-C) right after its ``stop_at``-th
    checkpoint save, then ``--resume`` it to the end (a run that says it was resumed): its metrics."""
    original = Checkpointer.save
    saves = []

    def save_then_stop(self, tensors, state):
        original(self, tensors, state)
        saves.append(1)
        if len(saves) == stop_at:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpointer, "save", save_then_stop)
    code, err = run_cli([recipe, *quick, "--out", str(out)])
    assert code == 130 and "--resume" in err and not (out / "results.json").exists()
    monkeypatch.setattr(Checkpointer, "save", original)
    code, err = run_cli([recipe, "--out", str(out), "--resume", "--progress", "false"])
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["resumed"] is True
    return results["metrics"]


def assert_refused(tmp_path: Path, argv: list[str], message: str) -> None:
    """``hyperdnn <argv> --out ...`` exits with code 2 and one line containing ``message``, writing nothing."""
    out = tmp_path / "run"
    code, err = run_cli([*argv, "--out", str(out), "--progress", "false"])
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists()
