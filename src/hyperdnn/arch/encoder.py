"""The graph encoder: message passing over an :class:`~hyperdnn.arch.OpGraph`.

Each node starts from its description (:func:`node_features`: the operation one-hot over
:data:`~hyperdnn.arch.OPS`, log channel counts and kernel size of its parameters, whether it
has parameters, its relative position) and then, for ``rounds`` rounds, every node reads four
messages, each a weighted mean of the other nodes' states (:func:`message_operators`):

* from its direct predecessors and from its direct successors (the edges, both directions);
* from all its ancestors and from all its descendants, weighted by one over the length of the
  shortest path: the *virtual edges* of GHN-2 (Knyazev et al., NeurIPS 2021), which carry
  information across a deep graph in one round instead of one hop per round.

A round is ``h <- LayerNorm(h + MLP([h, m_pred, m_succ, m_anc, m_desc]))``. The result, one
embedding per node, is what a graph hypernetwork turns into that node's parameters
(:class:`~hyperdnn.arch.GraphHyperNetwork`).

Example::

    >>> import torch
    >>> from torch import nn
    >>> from hyperdnn.arch import GraphEncoder, build_graph
    >>> graph = build_graph(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 2)))
    >>> encoder = GraphEncoder(hidden=16, rounds=2)
    >>> encoder(encoder.prepare(graph)).shape      # input, conv, relu, flatten, linear, output
    torch.Size([6, 16])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from hyperdnn.arch.graph import OPS, OpGraph

__all__ = ["GraphInputs", "GraphEncoder", "node_features", "message_operators", "NODE_FEATURES"]

#: width of a node's description (:func:`node_features`)
NODE_FEATURES = len(OPS) + 5


def node_features(graph: OpGraph) -> torch.Tensor:
    """``(n, NODE_FEATURES)`` node descriptions: the operation (one-hot over
    :data:`~hyperdnn.arch.OPS`), then ``log2(1 + out channels) / 8``, ``log2(1 + in channels)
    / 8`` and ``kernel / 7`` of the node's first parameter (a convolution ``(out, in, k, k)``,
    a linear layer ``(out, in)``, a norm ``(C,)``; zeros without parameters), whether it has
    parameters, and its position ``i / (n - 1)`` in topological order."""
    n = len(graph)
    x = torch.zeros(n, NODE_FEATURES)
    o = len(OPS)
    for i, node in enumerate(graph.nodes):
        x[i, OPS.index(node.op)] = 1.0
        s = node.shape
        out_ch = s[0] if s else 0
        in_ch = s[1] if len(s) >= 2 else (s[0] if s else 0)
        kernel = s[2] if len(s) >= 3 else 0
        x[i, o : o + 5] = torch.tensor(
            [
                math.log2(1 + out_ch) / 8,
                math.log2(1 + in_ch) / 8,
                kernel / 7,
                float(bool(node.params)),
                i / (n - 1) if n > 1 else 0.0,
            ]
        )
    return x


def message_operators(graph: OpGraph) -> torch.Tensor:
    """``(4, n, n)`` row-normalised message matrices (row: the reader): direct predecessors,
    direct successors, all ancestors and all descendants weighted by ``1 / distance``. A row
    with nobody to read from is zero."""
    a = graph.adjacency()
    d = graph.distances()
    ancestors = torch.where(torch.isfinite(d) & (d > 0), 1.0 / d.clamp(min=1.0), torch.zeros(()))
    ops = torch.stack([a, a.T, ancestors, ancestors.T])
    return ops / ops.sum(-1, keepdim=True).clamp(min=1e-12)


@dataclass(frozen=True)
class GraphInputs:
    """What :class:`GraphEncoder` reads of one graph, computed once per graph
    (:meth:`GraphEncoder.prepare`).

    Attributes:
        features: ``(n, NODE_FEATURES)`` node descriptions.
        operators: ``(4, n, n)`` message matrices.
    """

    features: torch.Tensor
    operators: torch.Tensor

    def to(self, device: torch.device | str) -> GraphInputs:
        """Both tensors on ``device``."""
        return GraphInputs(self.features.to(device), self.operators.to(device))


class GraphEncoder(nn.Module):
    """Node embeddings of an operation graph by message passing (see the module docstring).

    Args:
        hidden: embedding width.
        rounds: message-passing rounds (``>= 0``; 0: each node's description alone, an MLP
            encoder without the graph).

    Raises:
        ValueError: ``hidden < 1`` or ``rounds < 0``.
    """

    def __init__(self, hidden: int = 64, rounds: int = 2):
        super().__init__()
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"GraphEncoder: hidden must be an int >= 1, got {hidden!r}")
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
            raise ValueError(f"GraphEncoder: rounds must be an int >= 0, got {rounds!r}")
        self.hidden, self.rounds = hidden, rounds
        self.embed = nn.Sequential(nn.Linear(NODE_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.updates = nn.ModuleList(
            nn.Sequential(nn.Linear(5 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden)) for _ in range(rounds)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(rounds))

    @staticmethod
    def prepare(graph: OpGraph) -> GraphInputs:
        """The :class:`GraphInputs` of ``graph`` (features and message matrices)."""
        if not isinstance(graph, OpGraph):
            raise TypeError(f"GraphEncoder.prepare: expected an OpGraph, got {type(graph).__name__}")
        return GraphInputs(node_features(graph), message_operators(graph))

    def forward(self, inputs: GraphInputs | OpGraph) -> torch.Tensor:
        """``(n, hidden)`` node embeddings of a graph (an :class:`OpGraph` is prepared first)."""
        if isinstance(inputs, OpGraph):
            inputs = self.prepare(inputs)
        if not isinstance(inputs, GraphInputs):
            raise TypeError(f"GraphEncoder: expected GraphInputs or an OpGraph, got {type(inputs).__name__}")
        ref = self.embed[0].weight
        ops = inputs.operators.to(ref)
        h = self.embed(inputs.features.to(ref))
        for update, norm in zip(self.updates, self.norms):
            messages = torch.matmul(ops, h)  # (4, n, hidden)
            h = norm(h + update(torch.cat([h, *messages], dim=-1)))
        return h
