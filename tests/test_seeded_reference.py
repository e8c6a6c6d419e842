"""A seeded hypernetwork gives bit-identical weights across refactors.

``tests/data/seeded_reference.pt`` holds, for every case below, the weights a hypernetwork
built under ``torch.manual_seed`` generates for a fixed context (in eval mode, one thread),
its parameter count and its ``state_dict`` keys, as written by the code of the commit that
added it. Rebuilding the same cases now must give the same numbers: parameters are created in
the same order from the same random stream, and calibration measures the same moments. Bit for
bit where the reference records the CPU capability this machine's kernels use
(``torch.backends.cpu.get_cpu_capability()``); on another one (AVX2 against AVX512, say) the
matrix products round differently in the last bits, so there the weights must agree within a
relative 1e-5 (measured: up to 9e-7 of a tensor's largest entry between an AVX512 machine and
the machine that wrote the file), far below what a change of random stream or calibration
gives. Rewrite the file only for a change that is meant to alter the numbers:
``python tests/test_seeded_reference.py --write``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from hyperdnn import (
    CNN,
    MLP,
    RNN,
    Attention,
    Chunked,
    ComponentWise,
    Continuous,
    DataEncoder,
    DynamicHyperNetwork,
    HyperNetwork,
    LearnedLatent,
    ModuleTrunk,
    MultiHead,
    Noise,
    Once,
    Target,
    TaskEmbedding,
)

REFERENCE = Path(__file__).parent / "data" / "seeded_reference.pt"


def small_target() -> Target:
    # a LayerNorm: norm scales have a non-zero mean, so the affine is a real addcmul
    return Target(nn.Sequential(nn.Linear(5, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 3)))


TRUNKS: dict[str, Callable[[], object]] = {
    "mlp": lambda: MLP((8,)),
    "rnn": lambda: RNN(hidden=(8,), width=8),
    "attention": lambda: Attention(hidden=(8,), width=8, heads=2, layers=1),
    "cnn": lambda: CNN(hidden=(8,), channels=(4, 2), base=3),
}
HEADS: dict[str, Callable[[], object]] = {
    "once": lambda: Once(),
    "multihead": lambda: MultiHead("layer", hidden=(4,)),
    "chunked": lambda: Chunked(8, 4),
    "componentwise": lambda: ComponentWise("unit", 4),
}


def _static(trunk: str, head: str, conditioner=None, **kwargs) -> Callable[[], tuple[nn.Module, Callable]]:
    def build():
        target = small_target()
        cond = TaskEmbedding(3, 4) if conditioner is None else conditioner()
        hnet = HyperNetwork(target, cond, TRUNKS[trunk](), HEADS[head](), **kwargs)
        return hnet, lambda ctx: hnet(ctx)

    return build


def _dynamic(trunk: str, widths: tuple[int, ...]) -> Callable[[], tuple[nn.Module, Callable]]:
    def build():
        targets = [Target(nn.Sequential(nn.Linear(5, w), nn.ReLU(), nn.Linear(w, 3))) for w in widths]
        hnet = DynamicHyperNetwork(
            TaskEmbedding(3, 4), TRUNKS[trunk](), max_component_size=8, embed_dim=6, example=targets
        )
        return hnet, lambda ctx: hnet(ctx, targets[0])

    return build


CASES: dict[str, Callable[[], tuple[nn.Module, Callable]]] = {
    **{f"{t}-{h}": _static(t, h) for t in TRUNKS for h in HEADS},
    "noise": _static("mlp", "chunked", lambda: Noise(4)),
    "continuous": _static("mlp", "once", lambda: Continuous(2, low=0.0, high=2.0, encoding="fourier")),
    "latent": _static("mlp", "componentwise", lambda: LearnedLatent(4)),
    "data": _static("mlp", "chunked", lambda: DataEncoder(nn.Linear(5, 4), 4, torch.randn(8, 5))),
    "residual-target": _static("mlp", "once", residual="target"),
    "residual-neutral-learned": _static("mlp", "chunked", residual="neutral", learn_theta0=True),
    "hyperfan-out": _static("mlp", "multihead", init="hyperfan_out"),
    "dynamic-mlp-one": _dynamic("mlp", (6,)),
    "dynamic-mlp-three": _dynamic("mlp", (4, 6, 8)),
    "dynamic-rnn-two": _dynamic("rnn", (4, 8)),
}


def _with_trunk(make_trunk: Callable[[], object]) -> Callable[[], tuple[nn.Module, Callable]]:
    def build():
        hnet = HyperNetwork(small_target(), TaskEmbedding(3, 4), make_trunk(), Chunked(8, 4))
        return hnet, lambda ctx: hnet(ctx)

    return build


# trunk options beyond the registered defaults
CASES["mlp-gelu-dropout-spectral"] = _with_trunk(lambda: MLP((8, 8), "gelu", dropout=0.1, spectral_norm=True))
CASES["module-trunk"] = _with_trunk(lambda: ModuleTrunk(nn.Sequential(nn.Linear(4, 7), nn.Tanh()), 7, in_features=4))


def _context(name: str):
    g = torch.Generator().manual_seed(1)
    if name == "noise":
        return torch.randn(3, 4, generator=g)
    if name == "continuous":
        return 2 * torch.rand(3, 2, generator=g)
    if name == "latent":
        return None
    if name == "data":
        return torch.randn(3, 5, generator=g)
    return torch.tensor([0, 2, 1])


def record(name: str) -> dict:
    """Build case ``name`` from seed 0 on one thread and return what the reference holds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        hnet, generate = CASES[name]()
        hnet.eval()
        with torch.no_grad():
            weights = generate(_context(name))
    finally:
        torch.set_num_threads(threads)
    return {
        "weights": {k: v.clone() for k, v in weights.items()},
        "parameters": sum(p.numel() for p in hnet.parameters()),
        "keys": sorted(hnet.state_dict()),
    }


def _load() -> dict:
    if not REFERENCE.exists():
        pytest.fail(f"missing {REFERENCE}; write it with: python {Path(__file__).name} --write")
    return torch.load(REFERENCE, weights_only=True)


def test_every_case_is_in_the_reference():
    assert sorted(_load()["cases"]) == sorted(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_seeded_hypernet_is_bit_identical_to_the_reference(name):
    reference = _load()
    if reference["torch"] != torch.__version__:
        pytest.skip(f"reference written with torch {reference['torch']}, running {torch.__version__}")
    want = reference["cases"][name]
    got = record(name)
    assert got["parameters"] == want["parameters"]
    assert got["keys"] == want["keys"]
    assert list(got["weights"]) == list(want["weights"])
    exact = reference.get("cpu") == torch.backends.cpu.get_cpu_capability()
    for k, w in want["weights"].items():
        if exact:
            assert torch.equal(got["weights"][k], w), f"{name}: {k} differs from the reference"
        else:
            assert _close(got["weights"][k], w), f"{name}: {k} differs from the reference beyond rounding"


def _close(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal up to another CPU's rounding: relative 1e-5 of ``want``'s largest entry."""
    return bool(torch.allclose(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max())))


def test_the_tolerance_on_another_cpu_still_sees_a_changed_random_stream():
    # the same case built one draw later in the random stream must fail the comparison
    want = record("mlp-once")["weights"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        torch.rand(1)
        hnet, generate = CASES["mlp-once"]()
        hnet.eval()
        with torch.no_grad():
            moved = generate(_context("mlp-once"))
    finally:
        torch.set_num_threads(threads)
    assert all(_close(w, w) for w in want.values())
    assert not any(_close(moved[k], w) for k, w in want.items())


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: python {sys.argv[0]} --write   (rewrites {REFERENCE})")
    REFERENCE.parent.mkdir(exist_ok=True)
    torch.save(
        {
            "torch": str(torch.__version__),
            "cpu": torch.backends.cpu.get_cpu_capability(),
            "cases": {name: record(name) for name in CASES},
        },
        REFERENCE,
    )
    print(f"wrote {len(CASES)} cases to {REFERENCE}")
