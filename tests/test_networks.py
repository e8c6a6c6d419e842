"""The one MLP builder and the one fused-Adam fallback."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hyperdnn.networks import mlp, mlp_parameters
from hyperdnn.optim import adam


def test_mlp_is_the_plain_sequential_with_the_same_initialisation() -> None:
    torch.manual_seed(3)
    net = mlp(64, (128, 64), 10)
    torch.manual_seed(3)
    plain = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    assert [type(m) for m in net] == [type(m) for m in plain]
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), plain.state_dict().values()))
    assert mlp_parameters(64, (128, 64), 10) == sum(p.numel() for p in net.parameters()) == 17226
    with_dropout = mlp(4, (8, 8), 2, dropout=0.5)
    assert [type(m).__name__ for m in with_dropout] == [
        "Linear",
        "ReLU",
        "Dropout",
        "Linear",
        "ReLU",
        "Dropout",
        "Linear",
    ]
    assert [type(m).__name__ for m in mlp(4, (), 2)] == ["Linear"]


def test_mlp_names_every_bad_width() -> None:
    with pytest.raises(ValueError, match=r"widths must be ints >= 1, got in_features=0, hidden\[1\]=-2"):
        mlp(0, (3, -2), 1)
    with pytest.raises(TypeError, match="hidden must be a sequence of ints, got int"):
        mlp(3, 5, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"dropout must be a float in \[0, 1\), got 1.0"):
        mlp(3, (4,), 1, dropout=1.0)


def test_adam_is_fused_where_torch_can_and_falls_back_once(monkeypatch) -> None:
    w = nn.Parameter(torch.ones(3))
    assert adam([w], lr=0.1).defaults["fused"] is True
    assert adam([w], fused=False).defaults["fused"] is False  # the caller's choice wins
    real = torch.optim.Adam

    def no_fused_kernel(params, lr=1e-3, **kwargs):
        if kwargs.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real(params, lr=lr, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", no_fused_kernel)
    opt = adam([w], lr=0.1)
    assert not opt.defaults["fused"] and opt.defaults["lr"] == 0.1
    with pytest.raises(ValueError, match="Invalid learning rate"):
        adam([w], lr=-1.0)
