"""CharLM: a small causal transformer language model over characters.

``CharLM(vocab_size)`` reads a batch of id sequences ``(B, T)`` (``<s> w o r d </s>``, padded)
and returns next-character logits ``(B, T, vocab_size)``. Every block is pre-norm::

    h = h + attn.out(causal_attention(attn.qkv(norm1(h))))
    h = h + ffn.fc2(gelu(ffn.fc1(norm2(h))))

built from ``nn.Linear``, ``nn.LayerNorm`` and ``nn.Embedding`` alone, so a
:class:`~hyperdnn.target.Target` runs it with grouped kernels and
:func:`~hyperdnn.adapters.insert_adapters` can adapt any of its ``Linear`` layers
(``"blocks.*.ffn.fc2"``, ``"blocks.*.attn.out"``). ``start`` replaces the embedding of the
first token (``<s>``) with a given vector per sequence: a language or task token.

Example::

    >>> import torch
    >>> from hyperdnn.charlm import CharLM
    >>> lm = CharLM(vocab_size=30, width=16, layers=2, heads=2, max_length=12)
    >>> ids = torch.randint(3, 30, (4, 10))
    >>> lm(ids).shape
    torch.Size([4, 10, 30])
    >>> lm(ids, start=torch.randn(4, 16)).shape     # a token of one's own in place of <s>
    torch.Size([4, 10, 30])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn._checks import check_float, check_int

__all__ = ["CharLM", "Block"]


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        B, T, D = h.shape
        q, k, v = self.qkv(h).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(a.transpose(1, 2).reshape(B, T, D))


class _FeedForward(nn.Module):
    def __init__(self, width: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(F.gelu(self.fc1(h))))


class Block(nn.Module):
    """One pre-norm transformer block ``(B, T, width) -> (B, T, width)`` with causal attention."""

    def __init__(self, width: int, heads: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = _Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.ffn = _FeedForward(width, hidden, dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(self.norm1(h))
        return h + self.ffn(self.norm2(h))


class CharLM(nn.Module):
    """A causal character-level transformer: ids ``(B, T)`` -> next-id logits ``(B, T, vocab_size)``.

    Args:
        vocab_size: ids ``[0, vocab_size)`` (padding, start and end included).
        width: the model width (a multiple of ``heads``).
        layers: transformer blocks.
        heads: attention heads.
        hidden: the feed-forward width (``0``: ``4 * width``).
        max_length: the longest sequence ``T``.
        dropout: dropout after each feed-forward block.

    Raises:
        ValueError: a size below 1, or ``width`` not a multiple of ``heads``.
    """

    def __init__(
        self,
        vocab_size: int,
        width: int = 64,
        layers: int = 2,
        heads: int = 4,
        hidden: int = 0,
        max_length: int = 18,
        dropout: float = 0.0,
    ):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("width", width), ("layers", layers), ("heads", heads),
                            ("max_length", max_length)):  # fmt: skip
            check_int("CharLM", name, value)
        check_int("CharLM", "hidden", hidden, low=0)
        check_float("CharLM", "dropout", dropout, 0.0, 1.0, high_open=True)
        if width % heads:
            raise ValueError(f"CharLM: width must be a multiple of heads, got width {width} and {heads} heads")
        self.width, self.max_length = width, max_length
        self.embed = nn.Embedding(vocab_size, width)
        self.position = nn.Embedding(max_length, width)
        self.blocks = nn.ModuleList(Block(width, heads, hidden or 4 * width, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size)

    def forward(self, ids: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
        """Next-id logits ``(B, T, vocab_size)`` for ids ``(B, T)``; ``start (B, width)``
        replaces the first position's token embedding."""
        if ids.dim() != 2 or ids.shape[1] > self.max_length:
            raise ValueError(f"CharLM: expected ids (B, T) with T <= {self.max_length}, got {tuple(ids.shape)}")
        h = self.embed(ids)
        if start is not None:
            h = torch.cat([start.unsqueeze(1).to(h.dtype), h[:, 1:]], dim=1)
        h = h + self.position.weight[: ids.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))
