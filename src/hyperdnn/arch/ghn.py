"""A graph hypernetwork: parameters for any architecture of known operations, from its graph.

:class:`GraphHyperNetwork` reads a target network as a graph of operations
(:func:`~hyperdnn.arch.build_graph`), embeds every node by message passing
(:class:`~hyperdnn.arch.GraphEncoder`) and generates every parameter tensor from the embedding
of the node that owns it, through the component-wise generation of
:class:`~hyperdnn.DynamicHyperNetwork`: each output unit (row) of a tensor is a component whose
embedding is that of its description (role, layer kind, sizes, position) plus a projection of
its node's embedding plus a learned code of the row's index within its tensor
(``component_embeddings``; the row codes keep the units of a layer apart from the start, so
no normalisation is needed to tell them apart). One set of parameters serves every
architecture whose rows fit ``max_component_size``, also those never seen in training, deeper
or wider ones included (GHN, Zhang et al., ICLR 2019; GHN-2, Knyazev et al., NeurIPS 2021).

A target is prepared once (:meth:`GraphHyperNetwork.prepare`: its graph, the encoder's inputs and
the node of each component) and then generated for as often as needed.

Example::

    >>> import torch
    >>> from hyperdnn import Target
    >>> from hyperdnn.arch import Architecture, Cell, GraphHyperNetwork
    >>> ghn = GraphHyperNetwork(max_component_size=72, hidden=16, embed_dim=8)
    >>> target = Target(Architecture((Cell(8, 3), Cell(8, 3, "none", True))).build())
    >>> weights = ghn(ghn.prepare(target))             # name -> tensor, target.spec's shapes
    >>> target(weights, torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from hyperdnn.arch.encoder import GraphEncoder, GraphInputs
from hyperdnn.arch.graph import OpGraph, build_graph
from hyperdnn.conditioners import LearnedLatent
from hyperdnn.dynamic import DynamicHyperNetwork
from hyperdnn.init import calibrate as calibrate_last_layers
from hyperdnn.target import Target
from hyperdnn.trunks import MLP

__all__ = ["GraphTarget", "GraphHyperNetwork", "row_indices"]


def row_indices(tensors: Sequence[str]) -> torch.Tensor:
    """The index of each component within its tensor, for components listed in layout order
    (``Components.tensors``: a tensor's rows are consecutive): ``("a", "a", "b")`` ->
    ``[0, 1, 0]`` (int64)."""
    out, previous, count = [], None, 0
    for name in tensors:
        count = count + 1 if name == previous else 0
        out.append(count)
        previous = name
    return torch.tensor(out, dtype=torch.long)


@dataclass(frozen=True)
class GraphTarget:
    """A target prepared for a :class:`GraphHyperNetwork` (:meth:`GraphHyperNetwork.prepare`).

    Attributes:
        target: the target network.
        graph: its graph of operations.
        inputs: the encoder's inputs for the graph.
        owners: ``(components,)`` int64: the node that owns each component (row) of the
            target's spec, in layout order.
        rows: ``(components,)`` int64: each component's row index within its tensor.
    """

    target: Target
    graph: OpGraph
    inputs: GraphInputs
    owners: torch.Tensor
    rows: torch.Tensor


class GraphHyperNetwork(nn.Module):
    """Parameters of a network from its graph of operations (see the module docstring).

    Args:
        max_component_size: numbers generated per row: the widest fan-in (``in channels x
            kernel elements``) of any network served.
        hidden: width of the node embeddings.
        rounds: message-passing rounds of the encoder (0: no graph, each node alone).
        embed_dim: width of the component embeddings of the decoder.
        latent_dim: width of the decoder's learned code.
        trunk_hidden: hidden widths of the decoder's trunk.
        descriptor_hidden: hidden widths of the MLP from a component's description to its
            embedding.
        generator_hidden: pointwise hidden widths of the shared row generator.
        max_rows: rows per tensor with a learned code (the widest layer served).
        granularity: ``"unit"`` (a component per output unit, a row) or ``"tensor"`` (a
            component per tensor: its numbers come from their own output weights, as GHN-2's
            decoder makes a whole tensor per node; ``max_component_size`` is then the largest
            tensor's size).
        example: targets to calibrate the initialisation on, with the graph's and the rows'
            embeddings included (``None``: skip; :meth:`calibrate`).

    Raises:
        ValueError: a width or count out of range (named by the part that checks it).
    """

    def __init__(
        self,
        *,
        max_component_size: int,
        hidden: int = 64,
        rounds: int = 2,
        embed_dim: int = 32,
        latent_dim: int = 16,
        trunk_hidden: Sequence[int] = (64,),
        descriptor_hidden: Sequence[int] = (64,),
        generator_hidden: Sequence[int] = (),
        max_rows: int = 64,
        granularity: str = "unit",
        example: Target | Iterable[Target] | None = None,
    ):
        super().__init__()
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise ValueError(f"GraphHyperNetwork: max_rows must be an int >= 1, got {max_rows!r}")
        self.encoder = GraphEncoder(hidden, rounds)
        self.project = nn.Linear(hidden, embed_dim)
        nn.init.zeros_(self.project.weight)  # starts as the decoder alone, whose initialisation is calibrated
        nn.init.zeros_(self.project.bias)
        self.decoder = DynamicHyperNetwork(
            LearnedLatent(latent_dim),
            MLP(tuple(trunk_hidden)),
            max_component_size=max_component_size,
            embed_dim=embed_dim,
            descriptor_hidden=descriptor_hidden,
            hidden=generator_hidden,
            granularity=granularity,
        )
        self.rows = nn.Embedding(max_rows, embed_dim)
        if example is not None:
            self.calibrate(example)

    def prepare(self, target: Target) -> GraphTarget:
        """Trace ``target``'s module and map each generated row to the node that owns it.

        Raises:
            TypeError: ``target`` is not a :class:`~hyperdnn.Target`.
            ValueError: the module cannot be traced or uses an operation the graph builder
                does not know (the node named), a generated tensor no node owns, or a row
                larger than ``max_component_size``.
        """
        if not isinstance(target, Target):
            raise TypeError(f"GraphHyperNetwork.prepare: expected a Target, got {type(target).__name__}")
        graph = build_graph(target.module)
        owners = graph.owners()
        comps = self.decoder.components(target)
        orphans = sorted({t for t in comps.tensors if t not in owners})
        if orphans:
            raise ValueError(f"GraphHyperNetwork.prepare: no node of the graph owns {orphans}")
        rows = row_indices(comps.tensors)
        if int(rows.max()) >= self.rows.num_embeddings:
            wide = sorted({t for t, r in zip(comps.tensors, rows.tolist()) if r >= self.rows.num_embeddings})
            raise ValueError(
                f"GraphHyperNetwork.prepare: {wide} have more than max_rows={self.rows.num_embeddings} rows"
            )
        index = torch.tensor([owners[t] for t in comps.tensors], dtype=torch.long)
        return GraphTarget(target, graph, GraphEncoder.prepare(graph), index, rows)

    def component_embeddings(self, prepared: GraphTarget) -> torch.Tensor:
        """``(components, embed_dim)``: each row's projected node embedding plus its row code."""
        nodes = self.project(self.encoder(prepared.inputs))
        rows = self.rows(prepared.rows.to(nodes.device))
        return nodes.index_select(0, prepared.owners.to(nodes.device)) + rows

    def forward(self, target: GraphTarget | Target) -> dict[str, torch.Tensor]:
        """The parameters of ``target`` (prepared, or a :class:`~hyperdnn.Target` prepared
        on the fly): name -> tensor of ``target.spec``'s shapes."""
        prepared = target if isinstance(target, GraphTarget) else self.prepare(target)
        return self.decoder(None, prepared.target, self.component_embeddings(prepared))

    @torch.no_grad()
    def calibrate(self, example: Target | Iterable[Target]) -> None:
        """Re-draw the decoder's last layers so that raw outputs start with unit variance over
        the components of ``example`` (:func:`hyperdnn.init.calibrate`), graph and row
        embeddings included."""
        prepared = [self.prepare(t) for t in ([example] if isinstance(example, Target) else example)]
        if not prepared:
            raise ValueError("GraphHyperNetwork.calibrate: expected at least one example target, got none")

        def run() -> None:
            for p in prepared:
                self.decoder.raw(None, p.target, self.component_embeddings(p))

        calibrate_last_layers(self, [self.decoder.generator.final_layers()], run)
