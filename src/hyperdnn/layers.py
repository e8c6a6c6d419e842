"""Target-side layers that are hypernetworks themselves (dynamic hypernetworks).

:class:`HyperLSTMCell` and :class:`HyperLSTM` follow Ha, Dai and Le's HyperLSTM
(*HyperNetworks*, ICLR 2017): a small LSTM, the hyper cell, reads the input and the main
cell's previous state at every time step and emits three embeddings per gate, ``z_x``,
``z_h`` and ``z_b``; each is projected to a vector that modulates the main LSTM's weights
row by row, so the main cell runs with weights that change from step to step:

    gates_t = d_x(z_x) * (W_x x_t) + d_h(z_h) * (W_h h_{t-1}) + b(z_b)

(``*`` elementwise: scaling row ``i`` of ``W_x`` by ``d_x[i]`` without forming the
matrix). At initialisation ``d_x = d_h = 1`` and ``b = b_0``, so the layer starts as a plain
LSTM. Every weight lives in an ``nn.Linear``, so the layer runs inside a
:class:`~hyperdnn.target.Target` (its weights may themselves be generated, shared or per
sample).

Example::

    >>> import torch
    >>> from hyperdnn.layers import HyperLSTM
    >>> layer = HyperLSTM(input_size=8, hidden_size=16, hyper_size=8, embed_size=4)
    >>> out, state = layer(torch.randn(3, 5, 8))   # batch 3, 5 time steps
    >>> out.shape, state[0].shape
    (torch.Size([3, 5, 16]), torch.Size([3, 16]))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["HyperLSTMCell", "HyperLSTM"]

State = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""(h, c, hyper h, hyper c): main state ``(B, hidden_size)`` x 2, hyper state ``(B, hyper_size)`` x 2."""


def _check(where: str, **sizes: int) -> None:
    for name, v in sizes.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{where}: {name} must be an int >= 1, got {v!r}")


class HyperLSTMCell(nn.Module):
    """One step of a HyperLSTM.

    Args:
        input_size: features of ``x_t``.
        hidden_size: main LSTM state width.
        hyper_size: hyper LSTM state width (small: it only steers the main cell).
        embed_size: width of each gate's ``z`` embeddings.

    Call ``cell(x, state)`` with ``x (B, input_size)`` and ``state`` (or ``None`` for
    zeros); returns the new state ``(h, c, hyper_h, hyper_c)``.
    """

    def __init__(self, input_size: int, hidden_size: int, hyper_size: int = 32, embed_size: int = 8):
        super().__init__()
        _check(
            "HyperLSTMCell",
            input_size=input_size,
            hidden_size=hidden_size,
            hyper_size=hyper_size,
            embed_size=embed_size,
        )
        self.input_size, self.hidden_size, self.hyper_size, self.embed_size = (
            input_size,
            hidden_size,
            hyper_size,
            embed_size,
        )
        H, E = hidden_size, embed_size
        # the hyper cell: an LSTM over [x_t ; h_{t-1}]
        self.hyper_in = nn.Linear(input_size + hidden_size, 4 * hyper_size)
        self.hyper_rec = nn.Linear(hyper_size, 4 * hyper_size, bias=False)
        # hyper state -> z_x, z_h, z_b (4 gates each); starts at z = 1 for every step
        self.z = nn.Linear(hyper_size, 3 * 4 * E)
        # z -> per-row modulation of the main weights, and the dynamic bias
        self.d_x = nn.Linear(4 * E, 4 * H, bias=False)
        self.d_h = nn.Linear(4 * E, 4 * H, bias=False)
        self.b = nn.Linear(4 * E, 4 * H)
        # the main cell's weights, modulated row by row
        self.w_x = nn.Linear(input_size, 4 * H, bias=False)
        self.w_h = nn.Linear(H, 4 * H, bias=False)
        with torch.no_grad():
            nn.init.zeros_(self.z.weight)
            nn.init.ones_(self.z.bias)
            self.d_x.weight.fill_(1.0 / (4 * E))
            self.d_h.weight.fill_(1.0 / (4 * E))
            nn.init.zeros_(self.b.weight)
            nn.init.zeros_(self.b.bias)
            self.b.bias[H : 2 * H] = 1.0  # forget-gate bias 1

    def initial_state(self, batch: int, like: torch.Tensor) -> State:
        """A zero state for ``batch`` sequences, on ``like``'s device and dtype."""
        z = like.new_zeros
        return (
            z(batch, self.hidden_size),
            z(batch, self.hidden_size),
            z(batch, self.hyper_size),
            z(batch, self.hyper_size),
        )

    def _check_state(self, state: Any, x: torch.Tensor) -> State:
        """``state`` as ``(h, c, hyper_h, hyper_c)`` of the shapes and dtype this cell makes."""
        B = x.shape[0]
        want = ((B, self.hidden_size), (B, self.hidden_size), (B, self.hyper_size), (B, self.hyper_size))
        if (
            not isinstance(state, (tuple, list))
            or len(state) != 4
            or not all(isinstance(t, torch.Tensor) for t in state)
        ):
            got = f"{len(state)} items" if isinstance(state, (tuple, list)) else type(state).__name__
            raise ValueError(
                f"HyperLSTMCell: expected state as 4 tensors (h, c, hyper_h, hyper_c) of shapes {list(want)}, "
                f"or None; got {got}"
            )
        shapes = [tuple(t.shape) for t in state]
        if shapes != [tuple(w) for w in want]:
            raise ValueError(
                f"HyperLSTMCell: expected state (h, c, hyper_h, hyper_c) of shapes {list(want)} for a batch of {B}, "
                f"got {shapes}"
            )
        bad = [str(t.dtype) for t in state if t.dtype != x.dtype]
        if bad:
            raise TypeError(f"HyperLSTMCell: expected state tensors of x's dtype {x.dtype}, got {bad}")
        return tuple(state)  # type: ignore[return-value]

    @staticmethod
    def _lstm(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def forward(self, x: torch.Tensor, state: State | None = None) -> State:
        if x.dim() != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"HyperLSTMCell: expected x of shape (B, {self.input_size}), got {tuple(x.shape)}")
        h, c, hh, hc = self.initial_state(x.shape[0], x) if state is None else self._check_state(state, x)
        hh, hc = self._lstm(self.hyper_in(torch.cat([x, h], dim=-1)) + self.hyper_rec(hh), hc)
        z_x, z_h, z_b = self.z(hh).chunk(3, dim=-1)
        gates = self.d_x(z_x) * self.w_x(x) + self.d_h(z_h) * self.w_h(h) + self.b(z_b)
        h, c = self._lstm(gates, c)
        return h, c, hh, hc


class HyperLSTM(nn.Module):
    """A HyperLSTM over a sequence (batch first).

    Args:
        input_size, hidden_size, hyper_size, embed_size: see :class:`HyperLSTMCell`.

    Call ``layer(x, state=None)`` with ``x (B, T, input_size)``; returns the outputs
    ``(B, T, hidden_size)`` and the final state ``(h, c, hyper_h, hyper_c)``.
    """

    def __init__(self, input_size: int, hidden_size: int, hyper_size: int = 32, embed_size: int = 8):
        super().__init__()
        self.cell = HyperLSTMCell(input_size, hidden_size, hyper_size, embed_size)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if x.dim() != 3 or x.shape[2] != self.cell.input_size:
            raise ValueError(
                f"HyperLSTM: expected x of shape (B, T, {self.cell.input_size}) with T >= 1, got {tuple(x.shape)}"
            )
        if x.shape[1] == 0:
            raise ValueError(f"HyperLSTM: expected at least one time step, got x of shape {tuple(x.shape)}")
        outs = []
        for t in range(x.shape[1]):
            state = self.cell(x[:, t], state)
            outs.append(state[0])
        return torch.stack(outs, dim=1), state  # type: ignore[return-value]
