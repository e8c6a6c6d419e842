"""An MLP hypernetwork over a flat architecture encoding: the baseline of a graph hypernetwork.

:class:`FlatArchHyperNetwork` reads an architecture as one flat vector (per cell slot its
width, kernel, normalisation and skip: :meth:`~hyperdnn.arch.SearchSpace.encode`), maps it
through an MLP trunk and generates every parameter with the same component-wise generation as
:class:`~hyperdnn.arch.GraphHyperNetwork` (:class:`~hyperdnn.DynamicHyperNetwork`: each row from
its description's embedding, the same learned code of its row index, and the trunk's code).
What it lacks is the graph: no node learns from its neighbours (the "MLP" hypernetwork of
GHN-2, Knyazev et al., NeurIPS 2021).

Example::

    >>> import torch
    >>> from hyperdnn import Target
    >>> from hyperdnn.arch import Architecture, Cell, SearchSpace
    >>> from hyperdnn.baselines import FlatArchHyperNetwork
    >>> space = SearchSpace(depths=(2, 3), widths=(8,), kernels=(3,))
    >>> hnet = FlatArchHyperNetwork(space.encode(space.sample(torch.Generator())).numel(), max_component_size=72)
    >>> arch = Architecture((Cell(8, 3), Cell(8, 3)))
    >>> target = Target(arch.build())
    >>> target(hnet(space.encode(arch), target), torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from hyperdnn.arch.ghn import row_indices
from hyperdnn.conditioners import Continuous
from hyperdnn.dynamic import DynamicHyperNetwork
from hyperdnn.init import calibrate as calibrate_last_layers
from hyperdnn.spec import WeightSpec
from hyperdnn.target import Target
from hyperdnn.trunks import MLP

__all__ = ["FlatArchHyperNetwork"]


class FlatArchHyperNetwork(nn.Module):
    """Parameters of a network from a flat encoding of its architecture.

    Args:
        encoding_dim: width of the encoding (values in ``[0, 1]``).
        max_component_size: numbers generated per row (the widest fan-in served).
        trunk_hidden: hidden widths of the MLP over the encoding.
        embed_dim: width of the component embeddings.
        descriptor_hidden: hidden widths of the MLP from a component's description to its
            embedding.
        generator_hidden: pointwise hidden widths of the shared row generator.
        max_rows: rows per tensor with a learned code (the widest layer served).
        example: targets to calibrate the initialisation on, with the conditioner's probe
            encodings and the row codes (``None``: skip).
    """

    def __init__(
        self,
        encoding_dim: int,
        *,
        max_component_size: int,
        trunk_hidden: Sequence[int] = (64,),
        embed_dim: int = 32,
        descriptor_hidden: Sequence[int] = (64,),
        generator_hidden: Sequence[int] = (),
        max_rows: int = 64,
        example: Target | Iterable[Target] | None = None,
    ):
        super().__init__()
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise ValueError(f"FlatArchHyperNetwork: max_rows must be an int >= 1, got {max_rows!r}")
        self.hnet = DynamicHyperNetwork(
            Continuous(encoding_dim),
            MLP(tuple(trunk_hidden)),
            max_component_size=max_component_size,
            embed_dim=embed_dim,
            descriptor_hidden=descriptor_hidden,
            hidden=generator_hidden,
        )
        self.rows = nn.Embedding(max_rows, embed_dim)
        self._row_index: dict[WeightSpec, torch.Tensor] = {}
        if example is not None:
            targets = [example] if isinstance(example, Target) else list(example)
            with torch.no_grad():
                probe = self.hnet.conditioner.probe(16)
                run = lambda: [self.hnet.raw(probe, t, self.row_codes(t)) for t in targets]  # noqa: E731
                calibrate_last_layers(self, [self.hnet.generator.final_layers()], run)

    def row_codes(self, target: Target) -> torch.Tensor:
        """``(components, embed_dim)``: the learned code of each row's index in its tensor.

        Raises:
            ValueError: a tensor with more than ``max_rows`` rows.
        """
        if target.spec not in self._row_index:
            comps = self.hnet.components(target)
            rows = row_indices(comps.tensors)
            if int(rows.max()) >= self.rows.num_embeddings:
                wide = sorted({t for t, r in zip(comps.tensors, rows.tolist()) if r >= self.rows.num_embeddings})
                raise ValueError(
                    f"FlatArchHyperNetwork: {wide} have more than max_rows={self.rows.num_embeddings} rows"
                )
            self._row_index[target.spec] = rows
        return self.rows(self._row_index[target.spec].to(self.rows.weight.device))

    def forward(self, encoding: torch.Tensor, target: Target) -> dict[str, torch.Tensor]:
        """The parameters of ``target`` from its architecture's ``encoding`` (``(encoding_dim,)``):
        name -> tensor of ``target.spec``'s shapes."""
        return self.hnet(encoding, target, self.row_codes(target))
