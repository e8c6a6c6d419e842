"""Pieces every workload uses: configuration, data, optimizers, steps, plain-PyTorch models."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn import compile_settings, networks

OPTIMIZERS = ("fused", "foreach", "single")
LR = 1e-3


@dataclass(frozen=True)
class Config:
    """One benchmark run.

    Attributes:
        device: where everything runs.
        optimizer: ``"fused"`` (``Adam(fused=True)``, default), ``"foreach"`` or ``"single"``
            (torch's single-tensor loop); every variant of a run uses the same one.
        quick: smaller W5 sizes (the run's other settings come from the command line).
        peers: build the hypnettorch and HyperLight variants (when installed).
        seed: seed for data and initialisation.
        compile_backend: ``torch.compile`` backend of the compiled variants (``"inductor"``;
            ``"aot_eager"`` for a fast smoke run); ``None``: no compiled variants.
        compile_mode: ``torch.compile`` mode (``None``: the backend's default; on CUDA the run
            uses ``"reduce-overhead"``, CUDA graphs).
    """

    device: torch.device
    optimizer: str = "fused"
    quick: bool = False
    peers: bool = True
    seed: int = 0
    compile_backend: str | None = None
    compile_mode: str | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Config: optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")

    @property
    def compiled(self) -> bool:
        """Whether the workloads add compiled variants."""
        return self.compile_backend is not None


def adam(params: Iterable[torch.Tensor], cfg: Config) -> torch.optim.Optimizer:
    """Adam over ``params`` with the run's optimizer implementation."""
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "fused":
        return torch.optim.Adam(params, lr=LR, fused=True)
    return torch.optim.Adam(params, lr=LR, foreach=cfg.optimizer == "foreach")


def count(params: Iterable[torch.Tensor]) -> int:
    """Trainable parameters (each tensor once)."""
    seen, n = set(), 0
    for p in params:
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


def train_step(opt: torch.optim.Optimizer, loss: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """zero_grad + forward + loss + backward + optimizer step."""

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss().backward()
        opt.step()

    return step


def compiled_train_step(
    cfg: Config, opt: torch.optim.Optimizer, loss: Callable[..., torch.Tensor], inputs: Callable[[], tuple] = tuple
) -> Callable[[], None]:
    """:func:`train_step` with ``loss(*inputs())`` (forward and loss) under
    ``torch.compile(fullgraph=True)`` with the run's backend and mode; AOTAutograd compiles the
    backward with it. The optimizer step stays the eager (fused) one, as in every variant.
    Compilation happens in the first calls (the warm-up), under
    :func:`hyperdnn.compile_settings` for every variant, hand-written or not (the settings
    :meth:`hyperdnn.HyperModel.compile` uses; they leave the hand-written steps' times as they
    were, see docs/benchmarks.md)."""
    kwargs = {"backend": cfg.compile_backend, "fullgraph": True}
    if cfg.compile_mode is not None:
        kwargs["mode"] = cfg.compile_mode
    fn = torch.compile(loss, **kwargs)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with compile_settings():
            out = fn(*inputs())
        out.backward()
        opt.step()

    return step


def cycle(n: int) -> Callable[[], int]:
    """0, 1, ..., n-1, 0, ...: the task id of each step."""
    state = [-1]

    def nxt() -> int:
        state[0] = (state[0] + 1) % n
        return state[0]

    return nxt


def classification_data(cfg: Config, batch: int, *shape: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random batch ``(batch, *shape)`` and labels in [0, 10)."""
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(batch, *shape, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    return x.to(cfg.device), y.to(cfg.device)


# ----------------------------------------------------------------------------- targets


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear-ReLU-...-Linear with the given widths (hyperdnn's one MLP builder, by sizes)."""
    return networks.mlp(sizes[0], sizes[1:-1], sizes[-1])


def mlp_shapes(sizes: Sequence[int]) -> list[tuple[int, ...]]:
    """Parameter shapes of :func:`mlp` in ``named_parameters`` order."""
    out: list[tuple[int, ...]] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        out += [(b, a), (b,)]
    return out


def mlp_numel(sizes: Sequence[int]) -> int:
    return sum(math.prod(s) for s in mlp_shapes(sizes))


def mlp_forward(x: torch.Tensor, ws: Sequence[torch.Tensor]) -> torch.Tensor:
    """Plain functional MLP over weights ``[w0, b0, w1, b1, ...]``."""
    n = len(ws) // 2
    for i in range(n):
        x = F.linear(x, ws[2 * i], ws[2 * i + 1])
        if i < n - 1:
            x = F.relu(x)
    return x


def hyperfan_scale(shapes: Sequence[tuple[int, ...]], device: torch.device) -> torch.Tensor:
    """Per-number scale ``(numel,)`` that gives generated weights and biases (``[w0, b0, w1, ...]``
    of ``Linear``/``Conv`` layers) the variance of the layer's own init, ``1/(3 fan_in)``
    (hyperfan-in; the same math hyperdnn applies)."""
    parts, fan_in = [], 1
    for s in shapes:
        if len(s) >= 2:
            fan_in = math.prod(s[1:])
        parts.append(torch.full((math.prod(s),), 1.0 / math.sqrt(3.0 * fan_in)))
    return torch.cat(parts).to(device)


def split(flat: torch.Tensor, shapes: Sequence[tuple[int, ...]]) -> list[torch.Tensor]:
    """Views of ``flat (*batch, numel)`` as tensors ``(*batch, *shape)``."""
    batch = flat.shape[:-1]
    parts = torch.split(flat, [math.prod(s) for s in shapes], dim=-1)
    return [p.reshape(*batch, *s) for p, s in zip(parts, shapes)]


class LeNet(nn.Module):
    """conv 1-20 5x5, pool, conv 20-50 5x5, pool, fc 800-500, fc 500-10 (431,080 parameters)."""

    SHAPES = [(20, 1, 5, 5), (20,), (50, 20, 5, 5), (50,), (500, 800), (500,), (10, 500), (10,)]

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(800, 500)
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def lenet_forward(x: torch.Tensor, ws: Sequence[torch.Tensor]) -> torch.Tensor:
    w1, b1, w2, b2, w3, b3, w4, b4 = ws
    x = F.relu(F.max_pool2d(F.conv2d(x, w1, b1), 2))
    x = F.relu(F.max_pool2d(F.conv2d(x, w2, b2), 2))
    return F.linear(F.relu(F.linear(x.flatten(1), w3, b3)), w4, b4)


# ----------------------------------------------------------------------------- hand-written hypernets


class PlainChunked(nn.Module):
    """Hand-written chunked hypernet: chunk ``i`` of context ``c`` is ``g([c ; e_i])``.

    The first layer is split into ``W_c c + W_e e_i`` so that the context and the chunk
    embeddings are each projected once and broadcast (never concatenated per chunk).
    ``forward(c (B, in_dim))`` returns ``(B, numel)``.
    """

    def __init__(self, in_dim: int, numel: int, chunk: int, embed: int, hidden: Sequence[int]):
        super().__init__()
        self.numel = numel
        n = -(-numel // chunk)
        self.embeddings = nn.Parameter(torch.randn(n, embed))
        self.proj_c = nn.Linear(in_dim, hidden[0], bias=False)
        self.proj_e = nn.Linear(embed, hidden[0])
        rest: list[nn.Module] = [nn.ReLU()]
        for a, b in zip(hidden[:-1], hidden[1:]):
            rest += [nn.Linear(a, b), nn.ReLU()]
        rest.append(nn.Linear(hidden[-1], chunk))
        self.rest = nn.Sequential(*rest)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        z = self.proj_c(c).unsqueeze(1) + self.proj_e(self.embeddings)
        return self.rest(z).reshape(c.shape[0], -1)[:, : self.numel]


def plain_once(in_dim: int, hidden: Sequence[int], numel: int) -> nn.Sequential:
    """Hand-written generate-once hypernet: an MLP from the context to every number."""
    return mlp([in_dim, *hidden, numel])
