"""The graph builder: a module as a graph of operations (``torch.fx``), for graph hypernetworks.

:func:`build_graph` traces a module with :func:`torch.fx.symbolic_trace` and keeps one
:class:`OpNode` per operation, in topological order: the input, every layer call (a
convolution, a batch norm, a linear layer, an activation, pooling), every function that
combines tensors (a sum of a skip connection, a concatenation) and the output, with an edge
``(i, j)`` wherever operation ``j`` reads what ``i`` produced. Each node knows the module it
calls and the parameters that module owns, so a hypernetwork can make a node's parameters
from the node's embedding (SMASH, Brock et al. 2018; GHN, Zhang et al. 2019; GHN-2, Knyazev
et al., NeurIPS 2021). Operations that change nothing (``nn.Identity``, dropout) are passed
through: their readers read their input.

Every operation must be one of :data:`OPS` (by module type, function or method name): an
operation the builder does not know is a ``ValueError`` naming the node and what it calls,
not a silent ``"other"`` that a graph hypernetwork would read as something it has seen.

Example::

    >>> from torch import nn
    >>> from hyperdnn.arch import build_graph
    >>> g = build_graph(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()))
    >>> [n.op for n in g.nodes], g.edges
    (['input', 'conv', 'batch_norm', 'relu', 'output'], ((0, 1), (1, 2), (2, 3), (3, 4)))
    >>> g.nodes[1].module, g.nodes[1].params
    ('0', ('0.weight', '0.bias'))
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["OPS", "OpNode", "OpGraph", "build_graph"]

#: the operations a graph can hold (the one-hot vocabulary of a graph encoder)
OPS = (
    "input",
    "output",
    "conv",
    "linear",
    "batch_norm",
    "layer_norm",
    "group_norm",
    "relu",
    "gelu",
    "tanh",
    "sigmoid",
    "avg_pool",
    "max_pool",
    "flatten",
    "add",
    "mul",
    "concat",
)

_MODULE_OPS: tuple[tuple[type, str], ...] = (
    (nn.modules.conv._ConvNd, "conv"),
    (nn.Linear, "linear"),
    (nn.modules.batchnorm._BatchNorm, "batch_norm"),
    (nn.LayerNorm, "layer_norm"),
    (nn.GroupNorm, "group_norm"),
    (nn.ReLU, "relu"),
    (nn.GELU, "gelu"),
    (nn.Tanh, "tanh"),
    (nn.Sigmoid, "sigmoid"),
    (nn.AdaptiveAvgPool2d, "avg_pool"),
    (nn.AvgPool2d, "avg_pool"),
    (nn.AdaptiveAvgPool1d, "avg_pool"),
    (nn.MaxPool2d, "max_pool"),
    (nn.AdaptiveMaxPool2d, "max_pool"),
    (nn.Flatten, "flatten"),
)
_PASS_MODULES = (nn.Identity, nn.modules.dropout._DropoutNd)
_FUNCTION_OPS: dict[Callable[..., Any], str] = {
    operator.add: "add",
    torch.add: "add",
    operator.mul: "mul",
    torch.mul: "mul",
    torch.cat: "concat",
    torch.flatten: "flatten",
    torch.relu: "relu",
    F.relu: "relu",
    F.gelu: "gelu",
    torch.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    F.adaptive_avg_pool2d: "avg_pool",
    F.avg_pool2d: "avg_pool",
    F.max_pool2d: "max_pool",
}
_METHOD_OPS = {
    "add": "add",
    "mul": "mul",
    "relu": "relu",
    "flatten": "flatten",
    "view": "flatten",
    "reshape": "flatten",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
}


@dataclass(frozen=True)
class OpNode:
    """One operation of an :class:`OpGraph`.

    Attributes:
        name: the ``torch.fx`` node's name (unique in the graph).
        op: the operation, one of :data:`OPS`.
        module: the dotted path of the module the operation calls (``"cells.0.conv"``), or
            ``None`` for a function, the input and the output.
        params: the dotted names (as in the traced module's ``named_parameters()``) of the
            parameters that module owns directly, in its order.
        shape: the shape of its first parameter (``()`` without parameters).
    """

    name: str
    op: str
    module: str | None = None
    params: tuple[str, ...] = ()
    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class OpGraph:
    """A module's operations and their data flow.

    Attributes:
        nodes: the operations in topological order (the input first, the output last).
        edges: ``(i, j)``: node ``j`` reads node ``i``'s result (``i < j``), without repeats.
    """

    nodes: tuple[OpNode, ...]
    edges: tuple[tuple[int, int], ...]

    def __len__(self) -> int:
        return len(self.nodes)

    def adjacency(self) -> torch.Tensor:
        """``(n, n)`` float matrix with ``A[j, i] = 1`` for each edge ``i -> j`` (row: reader)."""
        a = torch.zeros(len(self.nodes), len(self.nodes))
        for i, j in self.edges:
            a[j, i] = 1.0
        return a

    def distances(self) -> torch.Tensor:
        """``(n, n)`` shortest path lengths ``D[j, i]`` from ``i`` to ``j`` along the edges
        (``inf`` where ``j`` is not reachable from ``i``; 0 on the diagonal)."""
        n = len(self.nodes)
        d = torch.full((n, n), math.inf)
        d.fill_diagonal_(0.0)
        for j in range(n):  # topological order: every predecessor's distances are final
            for i, k in self.edges:
                if k == j:
                    d[j] = torch.minimum(d[j], d[i] + 1.0)
        return d

    def owners(self) -> dict[str, int]:
        """Parameter name -> the first node that uses it."""
        out: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            for p in node.params:
                out.setdefault(p, i)
        return out


def _module_op(module: nn.Module) -> str | None:
    for kind, op in _MODULE_OPS:
        if isinstance(module, kind):
            return op
    return None


def build_graph(module: nn.Module) -> OpGraph:
    """Trace ``module`` into an :class:`OpGraph`.

    Args:
        module: a module ``torch.fx`` can trace symbolically (no control flow on tensor
            values); its layers must be of :data:`OPS` (subclasses included).

    Returns:
        The graph: one node per operation in call order, edges along the data flow.

    Raises:
        TypeError: ``module`` is not an ``nn.Module``.
        ValueError: the module cannot be traced, or operations the builder does not know
            (every such node named, with the module type, function or method it calls).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"build_graph: expected an nn.Module, got {type(module).__name__}")
    try:
        traced = fx.symbolic_trace(module)
    except Exception as e:  # fx raises many types for untraceable code
        raise ValueError(f"build_graph: torch.fx cannot trace {type(module).__name__}: {e}") from None
    modules = dict(module.named_modules())
    nodes: list[OpNode] = []
    edges: list[tuple[int, int]] = []
    index: dict[fx.Node, list[int]] = {}  # fx node -> the graph nodes it stands for
    unknown: list[str] = []
    for node in traced.graph.nodes:
        sources = sorted({i for arg in node.all_input_nodes for i in index.get(arg, [])})
        op, path = None, None
        if node.op == "placeholder":
            op = "input"
        elif node.op == "output":
            op = "output"
        elif node.op == "call_module":
            path = str(node.target)
            called = modules[path]
            if isinstance(called, _PASS_MODULES):
                index[node] = sources
                continue
            op = _module_op(called)
            if op is None:
                unknown.append(f"{node.name} (module {path!r}: {type(called).__name__})")
        elif node.op == "call_function":
            op = _FUNCTION_OPS.get(node.target)
            if op is None:
                unknown.append(f"{node.name} (function {getattr(node.target, '__name__', node.target)})")
        elif node.op == "call_method":
            op = _METHOD_OPS.get(str(node.target))
            if op is None:
                unknown.append(f"{node.name} (method .{node.target}())")
        else:  # get_attr: a parameter or buffer read outside a layer
            unknown.append(f"{node.name} (reads the attribute {node.target!r} directly)")
        if op is None:
            continue
        params: tuple[str, ...] = ()
        shape: tuple[int, ...] = ()
        if path is not None:
            own = list(modules[path].named_parameters(recurse=False))
            params = tuple(f"{path}.{n}" if path else n for n, _ in own)
            shape = tuple(own[0][1].shape) if own else ()
        index[node] = [len(nodes)]
        edges += [(i, len(nodes)) for i in sources]
        nodes.append(OpNode(node.name, op, path, params, shape))
    if unknown:
        raise ValueError(
            f"build_graph: operations the graph builder does not know in {type(module).__name__}: "
            f"{', '.join(unknown)} (known: {', '.join(OPS)})"
        )
    return OpGraph(tuple(nodes), tuple(dict.fromkeys(edges)))
