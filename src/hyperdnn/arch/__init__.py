"""Architectures as data: widths, FLOPs, search spaces, graphs and the hypernetworks that read them.

* :mod:`~hyperdnn.arch.crop` - :func:`crop_weights`: a narrower network's weights cut out of
  generated full-width tensors (MetaPruning's PruningNet).
* :mod:`~hyperdnn.arch.prunable` - :class:`PrunableCNN`: a convolutional network built at any
  width vector, its checks, uniform widths and FLOPs.
* :mod:`~hyperdnn.arch.flops` - :func:`count_flops`: multiply-accumulates per sample.
* :mod:`~hyperdnn.arch.space` - :class:`SearchSpace`, :class:`Architecture`, :class:`Cell`:
  small convolutional networks drawn in code, their modules and flat encodings.
* :mod:`~hyperdnn.arch.graph` - :func:`build_graph`: a module as a graph of operations
  (:class:`OpGraph`, :class:`OpNode`, the vocabulary :data:`OPS`).
* :mod:`~hyperdnn.arch.encoder` - :class:`GraphEncoder`: node embeddings by message passing.
* :mod:`~hyperdnn.arch.ghn` - :class:`GraphHyperNetwork`: every parameter of a network from
  its graph.
"""

from hyperdnn.arch.crop import crop_weights
from hyperdnn.arch.encoder import NODE_FEATURES, GraphEncoder, GraphInputs, message_operators, node_features
from hyperdnn.arch.flops import FlopCount, count_flops
from hyperdnn.arch.ghn import GraphHyperNetwork, GraphTarget
from hyperdnn.arch.graph import OPS, OpGraph, OpNode, build_graph
from hyperdnn.arch.prunable import PrunableCNN
from hyperdnn.arch.space import NORMS, Architecture, ArchNet, Cell, CellModule, SearchSpace

__all__ = [
    "NODE_FEATURES",
    "NORMS",
    "OPS",
    "ArchNet",
    "Architecture",
    "Cell",
    "CellModule",
    "FlopCount",
    "GraphEncoder",
    "GraphHyperNetwork",
    "GraphInputs",
    "GraphTarget",
    "OpGraph",
    "OpNode",
    "PrunableCNN",
    "SearchSpace",
    "build_graph",
    "count_flops",
    "crop_weights",
    "message_operators",
    "node_features",
]
