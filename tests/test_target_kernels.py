"""The kernel table: a layer type of the user's runs grouped through its registered kernel.

The example of docs/architecture.md ("Adding a layer type") is run as written; the kernel it
registers must be the one called, and its results must equal the vmap path and plain PyTorch
(a copy of the module per weight set), per sample and as an ensemble, gradients included.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from hyperdnn import Target
from hyperdnn.target import GroupedKernel, kernel_for, kernels, register_kernel
from tests.helpers import load, one_set, random_weights

DOCS = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


@pytest.fixture
def table(monkeypatch):
    """A private copy of the kernel table for the test (registrations do not leak)."""
    monkeypatch.setattr(kernels, "_KERNELS", dict(kernels._KERNELS))


def docs_example() -> dict:
    """Run the code block of "Adding a layer type" and return its names."""
    section = DOCS.read_text().split("### Adding a layer type", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {"__name__": "docs_example"}
    exec(compile(code, str(DOCS), "exec"), namespace)
    return namespace


def counting(ns: dict, calls: list):
    """Register a counting wrapper of the example's kernel (a second registration warns)."""
    scale, kernel = ns["Scale"], ns["grouped_scale"]

    def counted(call, x):
        calls.append((call.groups, tuple(x.shape)))
        return kernel(call, x)

    with pytest.warns(UserWarning, match=r"grouped kernel for Scale registered again .* the new kernel wins"):
        register_kernel(scale, counted, reads={"gain"})


def test_the_documented_kernel_is_registered_and_used(table):
    ns = docs_example()  # asserts itself that it equals the vmap path
    assert kernel_for(ns["Scale"](3)).run is ns["grouped_scale"]
    calls: list = []
    counting(ns, calls)
    target, w, x = Target(ns["net"]), ns["weights"], ns["x"]  # plans are cached: a new Target
    out = target(w, x)
    assert calls == [(8, (8, 4))]  # one grouped call for all 8 weight sets, no vmap
    expected = torch.cat([load(ns["net"], one_set(w, b))(x[b : b + 1]) for b in range(8)])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)


def test_the_documented_kernel_equals_vmap_and_pytorch_in_every_mode(table):
    ns = docs_example()
    calls: list = []
    counting(ns, calls)
    Scale = ns["Scale"]
    torch.manual_seed(0)
    # batch at dim 1, in a module that is not a Sequential (no ensemble first-layer path)
    net = nn.ModuleDict({"lin": nn.Linear(3, 5), "scale": Scale(5)})

    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net["scale"](torch.tanh(self.net["lin"](x)))

    module = Seq()
    fast, ref = Target(module, batch_dim=1), Target(module, batch_dim=1, per_sample="vmap")
    w = {k: v.requires_grad_() for k, v in random_weights(fast.spec, 4, seed=1).items()}
    x = torch.randn(2, 4, 3)  # (T, B, features)
    out = fast.per_sample(w, x)
    assert calls and all(g == 4 for g, _ in calls)
    torch.testing.assert_close(out, ref.per_sample(w, x), atol=1e-6, rtol=1e-5)
    plain = torch.cat([load(module, one_set(w, b))(x[:, b : b + 1]) for b in range(4)], 1)
    torch.testing.assert_close(out, plain, atol=1e-6, rtol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), list(w.values()))
    ref_grads = torch.autograd.grad(ref.per_sample(w, x).square().sum(), list(w.values()))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)
    calls.clear()
    ens = fast.ensemble(w, torch.randn(2, 6, 3))
    assert calls == [(4, (2, 24, 5))] and ens.shape == (4, 2, 6, 5)


def test_a_layer_with_tensors_its_kernel_does_not_read_runs_under_vmap(table):
    class Shift(nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.ones(4))
            self.shift = nn.Parameter(torch.zeros(4))

        def forward(self, x):
            return x * self.gain + self.shift

    calls = []
    register_kernel(Shift, lambda call, x: calls.append(1), reads={"gain"})
    target = Target(nn.Sequential(nn.Linear(3, 4), Shift()))
    w = random_weights(target.spec, 5)
    x = torch.randn(5, 3)
    out = target(w, x)
    assert not calls  # shift is generated too: vmap, not the kernel
    torch.testing.assert_close(out, torch.cat([load(target.module, one_set(w, b))(x[b : b + 1]) for b in range(5)]))
    # with only the gain generated, the kernel serves it
    Target(target.module, select="1.gain").per_sample({"1.gain": torch.ones(5, 4)}, x)
    assert calls == [1]


def test_a_subclass_that_overrides_forward_does_not_inherit_the_kernel():
    class Doubled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    class Same(nn.Linear):
        pass

    assert kernel_for(nn.Linear(2, 2)) is kernels.LINEAR
    assert kernel_for(Same(2, 2)) is kernels.LINEAR
    assert kernel_for(Doubled(2, 2)) is None
    assert kernel_for(nn.Tanh()) is None
    assert isinstance(kernel_for(nn.BatchNorm2d(3)), GroupedKernel)


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        (
            (int, lambda call, x: x),
            {"reads": {"weight"}},
            r"module_type must be an nn.Module subclass, got <class 'int'>",
        ),
        ((nn.Module, lambda call, x: x), {"reads": "weight"}, r"reads must be a set of tensor names .* got 'weight'"),
        ((nn.Module, lambda call, x: x), {"reads": {1}}, r"reads must be a set of tensor names .* got \{1\}"),
        ((nn.Module, 3), {"reads": {"w"}}, r"run must be a function \(call, \*inputs\), got 3"),
        ((nn.Module, lambda call, x: x), {"reads": {"w"}, "supports": 1}, r"supports must be a function"),
    ],
)
def test_register_kernel_refuses_bad_arguments_and_changes_nothing(table, args, kwargs, match):
    before = dict(kernels._KERNELS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError, match=match):
            register_kernel(*args, **kwargs)
    assert kernels._KERNELS == before
