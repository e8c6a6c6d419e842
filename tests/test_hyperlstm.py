"""HyperLSTM: a dynamic hypernetwork as a target-side layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hyperdnn import HyperLSTM, HyperLSTMCell, Target
from hyperdnn.data import load_digits

pytestmark = pytest.mark.usefixtures("one_thread")


class RowClassifier(nn.Module):
    """Reads an 8x8 digit row by row with a HyperLSTM."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.rnn = HyperLSTM(8, hidden, hyper_size=16, embed_size=4)
        self.fc = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x.reshape(-1, 8, 8))
        return self.fc(out[:, -1])


def test_starts_as_a_plain_lstm():
    """With d_x = d_h = 1 and b = b_0 at initialisation the layer equals nn.LSTM on its weights."""
    torch.manual_seed(0)
    layer = HyperLSTM(5, 7, hyper_size=6, embed_size=3)
    cell = layer.cell
    lstm = nn.LSTM(5, 7, batch_first=True)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(cell.w_x.weight)
        lstm.weight_hh_l0.copy_(cell.w_h.weight)
        lstm.bias_ih_l0.copy_(cell.b.bias)
        lstm.bias_hh_l0.zero_()
    x = torch.randn(4, 6, 5)
    out, (h, c, _, _) = layer(x)
    ref, (h_ref, c_ref) = lstm(x)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(h, h_ref[0])
    torch.testing.assert_close(c, c_ref[0])


def test_weights_change_from_step_to_step_once_the_hyper_cell_speaks():
    torch.manual_seed(0)
    cell = HyperLSTMCell(3, 4, hyper_size=5, embed_size=2)
    with torch.no_grad():
        cell.z.weight.normal_(0, 0.5)
    state = None
    scales = []
    for _ in range(3):
        state = cell(torch.randn(2, 3), state)
        z_x = cell.z(state[2]).chunk(3, dim=-1)[0]
        scales.append(cell.d_x(z_x))
    assert not torch.allclose(scales[0], scales[1]) and not torch.allclose(scales[1], scales[2])


def test_gradients_reach_the_hyper_cell():
    """At initialisation z does not yet depend on the hyper state (its weights are zero, so
    the layer starts as a plain LSTM): the hyper cell gets gradient from the second step on,
    every other parameter from the first."""
    torch.manual_seed(0)
    layer = HyperLSTM(3, 4, hyper_size=5, embed_size=2)
    x = torch.randn(2, 5, 3)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    for step in range(2):
        opt.zero_grad()
        layer(x)[0].pow(2).sum().backward()
        for name, p in layer.named_parameters():
            if step == 0 and name.startswith("cell.hyper_"):
                continue
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, (step, name)
        opt.step()


def test_runs_inside_a_target_shared_and_per_sample():
    torch.manual_seed(0)
    net = RowClassifier(hidden=6)
    target = Target(net)
    x = torch.rand(4, 64)
    torch.testing.assert_close(target(target.default_weights(), x), net(x))
    w = {k: v + 0.05 * torch.randn(4, *v.shape) for k, v in target.default_weights().items()}
    batched = target(w, x)
    loop = torch.cat([target({k: v[b] for k, v in w.items()}, x[b : b + 1]) for b in range(4)])
    torch.testing.assert_close(batched, loop, atol=1e-5, rtol=1e-4)


def test_learns_digits_row_by_row():
    torch.manual_seed(0)
    data = load_digits()
    net = RowClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(8):
        perm = torch.randperm(len(data.x_train), generator=g)
        for i in range(0, len(perm), 64):
            idx = perm[i : i + 64]
            loss = nn.functional.cross_entropy(net(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = float((net(data.x_test).argmax(1) == data.y_test).float().mean())
    assert acc >= 0.85, acc


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: HyperLSTM(3, 4)(torch.randn(2, 5)), r"expected x of shape \(B, T, 3\)"),
        (lambda: HyperLSTM(3, 4)(torch.randn(2, 0, 3)), r"at least one time step"),
        (lambda: HyperLSTMCell(3, 4)(torch.randn(2, 4)), r"expected x of shape \(B, 3\), got \(2, 4\)"),
        (lambda: HyperLSTMCell(3, 0), r"hidden_size must be an int >= 1, got 0"),
        # a state of the wrong width or count: a matmul or unpacking error before
        (
            lambda: HyperLSTMCell(3, 4, hyper_size=5)(
                torch.randn(2, 3), tuple(torch.zeros(2, n) for n in (4, 4, 6, 5))
            ),
            r"state \(h, c, hyper_h, hyper_c\) of shapes \[\(2, 4\), \(2, 4\), \(2, 5\), \(2, 5\)\] for a batch of 2, "
            r"got \[\(2, 4\), \(2, 4\), \(2, 6\), \(2, 5\)\]",
        ),
        (
            lambda: HyperLSTMCell(3, 4)(torch.randn(2, 3), (torch.zeros(2, 4), torch.zeros(2, 4))),
            r"4 tensors .* got 2 items",
        ),
        (lambda: HyperLSTM(3, 4)(torch.randn(2, 5, 3), (torch.zeros(3, 4),) * 4), r"for a batch of 2"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_a_given_state_continues_the_sequence():
    torch.manual_seed(0)
    layer = HyperLSTM(3, 4, hyper_size=5)
    x = torch.randn(2, 6, 3)
    whole, final = layer(x)
    first, state = layer(x[:, :3])
    rest, final2 = layer(x[:, 3:], state)
    torch.testing.assert_close(torch.cat([first, rest], 1), whole)
    for a, b in zip(final, final2):
        torch.testing.assert_close(a, b)
    with pytest.raises(TypeError, match="state tensors of x's dtype torch.float32, got"):
        layer.cell(x[:, 0], tuple(t.double() for t in state))
