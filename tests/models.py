"""Small target modules covering every supported layer type, shared by the tests."""

from __future__ import annotations

import torch
from torch import nn


class ConvNet(nn.Module):
    def __init__(self, bn: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4) if bn else nn.Identity()
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding_mode="reflect", padding=1, groups=2)
        self.fc = nn.Linear(6 * 3 * 3, 5)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(x.flatten(1))


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 7, 2)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


class Deconv(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1)
        self.gn = nn.GroupNorm(2, 2)

    def forward(self, x):
        return self.gn(self.up(x))


class SeqModel(nn.Module):
    """Embedding -> LayerNorm -> MultiheadAttention -> mean -> Linear."""

    def __init__(self, batch_first: bool = True):
        super().__init__()
        self.emb = nn.Embedding(11, 8)
        self.ln = nn.LayerNorm(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)
        self.head = nn.Linear(8, 3)
        self.batch_first = batch_first

    def forward(self, idx):
        h = self.ln(self.emb(idx))
        if not self.batch_first:
            h = h.transpose(0, 1)
        a, _ = self.attn(h, h, h, need_weights=False)
        if not self.batch_first:
            a = a.transpose(0, 1)
        return self.head(a.mean(1))


class RNNModel(nn.Module):
    def __init__(self, kind: str = "lstm", bidirectional: bool = False, batch_first: bool = True, proj_size: int = 0):
        super().__init__()
        cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind]
        extra = {"proj_size": proj_size} if proj_size else {}
        self.rnn = cls(4, 5, num_layers=2, batch_first=batch_first, bidirectional=bidirectional, **extra)
        self.fc = nn.Linear((proj_size or 5) * (2 if bidirectional else 1), 2)
        self.batch_first = batch_first

    def forward(self, x):
        if not self.batch_first:
            x = x.transpose(0, 1)
        out, _ = self.rnn(x)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return self.fc(out[:, -1])


class Tied(nn.Module):
    """Input embedding tied with the output projection."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 6)
        self.mid = nn.Linear(6, 6)
        self.out = nn.Linear(6, 7, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, idx):
        return self.out(torch.tanh(self.mid(self.emb(idx)))).mean(1)


class Custom(nn.Module):
    """A module owning a parameter directly (no fast path: runs under vmap)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.randn(5))
        self.fc = nn.Linear(5, 5)

    def forward(self, x):
        return self.fc(x) * self.scale


class CellModel(nn.Module):
    """A loop over time with an RNN cell (LSTMCell: the state is a pair), then a Linear."""

    def __init__(self, kind: str):
        super().__init__()
        if kind == "lstm":
            self.cell: nn.Module = nn.LSTMCell(5, 4)
        elif kind == "gru":
            self.cell = nn.GRUCell(5, 4)
        else:
            self.cell = nn.RNNCell(5, 4, nonlinearity="relu")
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        state = None
        for t in range(x.shape[1]):
            state = self.cell(x[:, t], state)
        h = state[0] if isinstance(state, tuple) else state
        return self.out(h)


def cases():
    """name -> (module factory, input factory(batch))."""
    return {
        "mlp": (lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), lambda b: torch.randn(b, 6)),
        "mlp_seq_input": (lambda: nn.Sequential(nn.Linear(6, 4), nn.Tanh()), lambda b: torch.randn(b, 5, 6)),
        "conv2d_bn": (lambda: ConvNet(True).eval(), lambda b: torch.randn(b, 2, 6, 6)),
        "conv2d": (lambda: ConvNet(False), lambda b: torch.randn(b, 2, 6, 6)),
        "conv1d": (Conv1dNet, lambda b: torch.randn(b, 3, 7)),
        "deconv_groupnorm": (Deconv, lambda b: torch.randn(b, 3, 4, 4)),
        "layernorm_mlp": (
            lambda: nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 2)),
            lambda b: torch.randn(b, 6),
        ),
        "batchnorm1d_eval": (
            lambda: nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)).eval(),
            lambda b: torch.randn(b, 6),
        ),
        "embedding_attention": (SeqModel, lambda b: torch.randint(0, 11, (b, 5))),
        "attention_seq_first": (lambda: SeqModel(batch_first=False), lambda b: torch.randint(0, 11, (b, 5))),
        "lstm": (lambda: RNNModel("lstm"), lambda b: torch.randn(b, 6, 4)),
        "lstm_bidir_seq_first": (lambda: RNNModel("lstm", True, False), lambda b: torch.randn(b, 6, 4)),
        "lstm_proj": (lambda: RNNModel("lstm", proj_size=3), lambda b: torch.randn(b, 6, 4)),
        "lstm_proj_bidir_seq_first": (lambda: RNNModel("lstm", True, False, 3), lambda b: torch.randn(b, 6, 4)),
        "gru": (lambda: RNNModel("gru", True), lambda b: torch.randn(b, 6, 4)),
        "rnn_tanh": (lambda: RNNModel("rnn"), lambda b: torch.randn(b, 6, 4)),
        "lstm_cell": (lambda: CellModel("lstm"), lambda b: torch.randn(b, 3, 5)),
        "gru_cell": (lambda: CellModel("gru"), lambda b: torch.randn(b, 3, 5)),
        "rnn_cell_relu": (lambda: CellModel("rnn"), lambda b: torch.randn(b, 3, 5)),
        "instancenorm_tracked_eval": (
            lambda: nn.Sequential(
                nn.Conv2d(2, 3, 3), nn.InstanceNorm2d(3, affine=True, track_running_stats=True)
            ).eval(),
            lambda b: torch.randn(b, 2, 6, 6),
        ),
        "tied": (Tied, lambda b: torch.randint(0, 7, (b, 4))),
        "custom_param": (Custom, lambda b: torch.randn(b, 5)),
    }
