"""Conditioners: the hypernetwork's input (the review's first design criterion).

A conditioner turns whatever the user passes as *context* into a float matrix ``(B, d)`` and
says whether the context was batched. Task ids (:class:`TaskEmbedding`), the data itself
(:class:`DataEncoder`, dynamic inputs), noise (:class:`Noise`, K weight samples), continuous
values such as hyper-parameters or preference vectors (:class:`Continuous`), or nothing at
all (:class:`LearnedLatent`, a static hypernet with a learned code).

Example::

    >>> import torch
    >>> from hyperdnn import TaskEmbedding
    >>> cond = TaskEmbedding(num_tasks=3, dim=8)
    >>> cond(torch.tensor([0, 2])).c.shape
    torch.Size([2, 8])
    >>> cond.add_tasks(2); cond.num_tasks
    5
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

__all__ = [
    "Conditioned",
    "Conditioner",
    "TaskEmbedding",
    "DataEncoder",
    "Noise",
    "Continuous",
    "LearnedLatent",
]


class Conditioned(NamedTuple):
    """A conditioner's output: ``c`` is ``(B, out_features)``; ``batched`` says whether the
    user's context had a batch dim (if not, generated weights have none either)."""

    c: torch.Tensor
    batched: bool


class Conditioner(nn.Module, ABC):
    """Abstract conditioner. Subclasses set ``out_features`` and implement ``forward``."""

    out_features: int

    @abstractmethod
    def forward(self, context: Any) -> Conditioned:
        """Map the user's context to :class:`Conditioned`."""

    @abstractmethod
    def probe(self, n: int) -> Any:
        """A representative context of ``n`` items, used to calibrate initialisation;
        ``None`` when the conditioner cannot make one (e.g. a data encoder of unknown input)."""


class TaskEmbedding(Conditioner):
    """A learned embedding per task (task-conditioned hypernets; static inputs).

    Args:
        num_tasks: number of tasks at the start.
        dim: embedding size.
        init_std: standard deviation of new embeddings.

    Context: an ``int`` (one task: unbatched weights) or a ``LongTensor`` ``(B,)`` of task ids.
    :meth:`add_tasks` grows the table; existing embeddings are kept exactly.
    """

    def __init__(self, num_tasks: int, dim: int, init_std: float = 1.0):
        super().__init__()
        if not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"TaskEmbedding: num_tasks must be an int >= 1, got {num_tasks!r}")
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"TaskEmbedding: dim must be an int >= 1, got {dim!r}")
        self.out_features = dim
        self.init_std = init_std
        self.embeddings = nn.ParameterList([nn.Parameter(torch.randn(dim) * init_std) for _ in range(num_tasks)])

    @property
    def num_tasks(self) -> int:
        """Current number of tasks."""
        return len(self.embeddings)

    @property
    def weight(self) -> torch.Tensor:
        """All embeddings stacked ``(num_tasks, dim)``."""
        return torch.stack(list(self.embeddings))

    def add_tasks(self, n: int = 1) -> list[int]:
        """Append ``n`` new task embeddings; return their ids. Old ones are untouched
        (each task is its own parameter, so an optimizer over old ones stays valid)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"TaskEmbedding.add_tasks: n must be an int >= 1, got {n!r}")
        ref = self.embeddings[0]
        start = self.num_tasks
        for _ in range(n):
            self.embeddings.append(
                nn.Parameter(torch.randn(self.out_features, device=ref.device, dtype=ref.dtype) * self.init_std)
            )
        return list(range(start, start + n))

    def forward(self, context: int | torch.Tensor) -> Conditioned:
        batched = True
        if isinstance(context, bool) or not isinstance(context, (int, torch.Tensor)):
            raise TypeError(
                f"TaskEmbedding: expected a task id (int) or a LongTensor of ids, got {type(context).__name__}"
            )
        if isinstance(context, int):
            if not 0 <= context < self.num_tasks:
                raise ValueError(
                    f"TaskEmbedding: task ids must be in [0, {self.num_tasks - 1}], got {context} "
                    "(call add_tasks to grow the table)"
                )
            return Conditioned(self.embeddings[context].unsqueeze(0), False)
        else:
            if context.dtype.is_floating_point or context.dtype == torch.bool:
                raise TypeError(f"TaskEmbedding: expected integer task ids, got a tensor of dtype {context.dtype}")
            if context.dim() == 0:
                ids, batched = context.reshape(1), False
            elif context.dim() == 1:
                ids = context
            else:
                raise ValueError(f"TaskEmbedding: expected task ids of shape (B,), got {tuple(context.shape)}")
        if ids.numel():
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= self.num_tasks:
                raise ValueError(
                    f"TaskEmbedding: task ids must be in [0, {self.num_tasks - 1}], got "
                    f"{lo if lo < 0 else hi} (call add_tasks to grow the table)"
                )
        # Stack only the tasks in use: unused embeddings get no gradient at all (not a zero
        # one), so optimizer momentum never moves the embeddings of other tasks.
        uniq = torch.unique(ids)
        table = torch.stack([self.embeddings[i] for i in uniq.tolist()])
        pos = torch.searchsorted(uniq, ids)
        return Conditioned(table[pos.to(table.device)], batched)

    def probe(self, n: int) -> torch.Tensor:
        return torch.arange(self.num_tasks)


class DataEncoder(Conditioner):
    """Encode the target's own input (data-conditioned, dynamic inputs): ``c = encoder(x)``.

    Args:
        encoder: any module mapping a batch of inputs to ``(B, out_features)``.
        out_features: the encoder's output width.
        example_input: optional example batch, used to calibrate initialisation.

    Context: the input batch ``x``. Weights are always batched (one set per sample).
    """

    def __init__(self, encoder: nn.Module, out_features: int, example_input: torch.Tensor | None = None):
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"DataEncoder: expected an nn.Module encoder, got {type(encoder).__name__}")
        self.encoder = encoder
        self.out_features = out_features
        self._example = example_input

    def forward(self, context: torch.Tensor) -> Conditioned:
        if not isinstance(context, torch.Tensor):
            raise TypeError(f"DataEncoder: expected an input tensor, got {type(context).__name__}")
        c = self.encoder(context)
        if c.dim() != 2 or c.shape[1] != self.out_features:
            raise ValueError(
                f"DataEncoder: the encoder must return (B, {self.out_features}), returned {tuple(c.shape)}"
            )
        return Conditioned(c, True)

    def probe(self, n: int) -> torch.Tensor | None:
        return None if self._example is None else self._example[:n]


class Noise(Conditioner):
    """Gaussian noise input (noise-conditioned hypernets: draw K weight sets).

    Args:
        dim: noise size.

    Context: an ``int`` K (draw K samples; uses the global RNG or ``generator``) or a noise
    tensor ``(K, dim)`` / ``(dim,)``.
    """

    def __init__(self, dim: int):
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"Noise: dim must be an int >= 1, got {dim!r}")
        self.out_features = dim
        self.register_buffer("_device_probe", torch.zeros(0), persistent=False)

    def sample(self, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``(k, dim)`` standard normal noise."""
        return torch.randn(k, self.out_features, generator=generator).to(self._device_probe.device)

    def forward(self, context: int | torch.Tensor) -> Conditioned:
        if isinstance(context, bool):
            raise TypeError("Noise: expected a sample count (int) or a noise tensor, got bool")
        if isinstance(context, int):
            if context < 1:
                raise ValueError(f"Noise: the number of samples must be >= 1, got {context}")
            return Conditioned(self.sample(context), True)
        if not isinstance(context, torch.Tensor):
            raise TypeError(f"Noise: expected a sample count (int) or a noise tensor, got {type(context).__name__}")
        if context.shape[-1] != self.out_features or context.dim() > 2:
            raise ValueError(
                f"Noise: expected noise of shape (K, {self.out_features}) or ({self.out_features},), got {tuple(context.shape)}"
            )
        if context.dim() == 1:
            return Conditioned(context.unsqueeze(0), False)
        return Conditioned(context, True)

    def probe(self, n: int) -> int:
        return n


class Continuous(Conditioner):
    """Continuous context (hyper-parameters, preference vectors, loss weights).

    Args:
        in_features: width of the raw context.
        encoding: ``"identity"`` or ``"fourier"`` (sin/cos features at ``num_frequencies``
            octaves; useful when the hypernet must resolve small changes of a scalar).
        num_frequencies: octaves for the Fourier encoding.
        low, high: the expected range of each raw value (used to standardise inputs to
            [-1, 1], and to draw calibration probes).

    Context: a float tensor ``(B, in_features)`` or ``(in_features,)``.
    """

    def __init__(
        self,
        in_features: int,
        encoding: str = "identity",
        num_frequencies: int = 4,
        low: float | Sequence[float] = 0.0,
        high: float | Sequence[float] = 1.0,
    ):
        super().__init__()
        if not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"Continuous: in_features must be an int >= 1, got {in_features!r}")
        if encoding not in ("identity", "fourier"):
            raise ValueError(f"Continuous: encoding must be 'identity' or 'fourier', got {encoding!r}")
        self.in_features = in_features
        self.encoding = encoding
        self.num_frequencies = num_frequencies
        lo = torch.as_tensor(low, dtype=torch.float32).expand(in_features).clone()
        hi = torch.as_tensor(high, dtype=torch.float32).expand(in_features).clone()
        if not bool((hi > lo).all()):
            raise ValueError(f"Continuous: expected high > low, got low={low}, high={high}")
        self.register_buffer("low", lo)
        self.register_buffer("high", hi)
        self.register_buffer("freqs", (2.0 ** torch.arange(num_frequencies, dtype=torch.float32)) * math.pi)
        self.out_features = in_features if encoding == "identity" else in_features * (1 + 2 * num_frequencies)

    def forward(self, context: torch.Tensor) -> Conditioned:
        if not isinstance(context, torch.Tensor) or not context.dtype.is_floating_point:
            raise TypeError(
                f"Continuous: expected a float tensor, got {type(context).__name__ if not isinstance(context, torch.Tensor) else context.dtype}"
            )
        batched = context.dim() == 2
        if context.dim() not in (1, 2) or context.shape[-1] != self.in_features:
            raise ValueError(
                f"Continuous: expected a context of shape (B, {self.in_features}) or ({self.in_features},), "
                f"got {tuple(context.shape)}"
            )
        x = context.reshape(-1, self.in_features)
        z = 2 * (x - self.low) / (self.high - self.low) - 1
        if self.encoding == "fourier":
            a = z.unsqueeze(-1) * self.freqs
            z = torch.cat([z, torch.sin(a).flatten(1), torch.cos(a).flatten(1)], dim=1)
        return Conditioned(z, batched)

    def probe(self, n: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        return self.low.cpu() + (self.high - self.low).cpu() * torch.rand(n, self.in_features, generator=g)


class LearnedLatent(Conditioner):
    """A single learned code (a static hypernet with no input, e.g. for compression).

    Context: ``None``; weights are unbatched.
    """

    def __init__(self, dim: int, init_std: float = 1.0):
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"LearnedLatent: dim must be an int >= 1, got {dim!r}")
        self.out_features = dim
        self.latent = nn.Parameter(torch.randn(dim) * init_std)

    def forward(self, context: None = None) -> Conditioned:
        if context is not None:
            raise TypeError(f"LearnedLatent: takes no context (None), got {type(context).__name__}")
        return Conditioned(self.latent.unsqueeze(0), False)

    def probe(self, n: int) -> None:
        return None
