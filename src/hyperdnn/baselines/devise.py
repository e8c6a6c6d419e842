"""A DeViSE-style compatibility model (Frome et al., 2013): project an example's features into
the space of class descriptions and score each class by the dot product with its description.

:class:`DeViSE` fulfils :class:`~hyperdnn.methods.zeroshot.ZeroShotLearner`. A class is its
description as a multi-hot vector ``a_c`` over the vocabulary (scaled to unit length), the
fixed class embedding; the score is ``score_c(x) = (M f(x)) . a_c``, linear in the description,
with the CNN ``f`` and the projection ``M`` trained jointly by cross-entropy over the seen
classes (DeViSE trains a hinge rank loss on a pretrained network; the compatibility function
is the same). Where the hypernetwork of :class:`~hyperdnn.methods.zeroshot.HypernetZeroShot`
maps a description to a classifier through a nonlinear network, this model's classifier is a
fixed linear function of the description's words.

Example::

    >>> import torch
    >>> from hyperdnn.baselines.devise import DeViSE
    >>> from hyperdnn.networks import conv_net
    >>> model = DeViSE(conv_net(1, 8), 8, (1, 28, 28), ["case:small", "case:capital", "letter:a"])
    >>> model.scores(torch.rand(6, 1, 28, 28), ["case:small letter:a", "case:capital letter:a"]).shape
    torch.Size([6, 2])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn._checks import check_int, check_widths
from hyperdnn.data.classes import attribute_matrix
from hyperdnn.methods.zeroshot import ZeroShotLearner

__all__ = ["DeViSE", "check_vocabulary"]


def check_vocabulary(where: str, vocabulary: Sequence[str]) -> tuple[str, ...]:
    """``vocabulary`` as a tuple of distinct words without whitespace (else one ``ValueError``)."""
    if isinstance(vocabulary, str) or not isinstance(vocabulary, Sequence):
        raise TypeError(f"{where}: vocabulary must be a sequence of words, got {type(vocabulary).__name__}")
    words = tuple(vocabulary)
    bad = [w for w in words if not isinstance(w, str) or w.split() != [w]]
    if not words or bad or len(set(words)) != len(words):
        raise ValueError(
            f"{where}: vocabulary must be distinct words without whitespace, got {bad or 'none or repeats'}"
        )
    return words


class DeViSE(ZeroShotLearner):
    """Bilinear compatibility ``(M f(x)) . a_c`` with ``a_c`` the description's unit multi-hot vector.

    Args:
        backbone: ``f``, a module mapping examples ``(N, *shape)`` to ``(N, features)``.
        features: the width of ``f``'s output.
        shape: the shape of one example.
        vocabulary: every word a description may use.
    """

    def __init__(self, backbone: nn.Module, features: int, shape: Sequence[int], vocabulary: Sequence[str]):
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"DeViSE: backbone must be an nn.Module, got {type(backbone).__name__}")
        check_int("DeViSE", "features", features)
        self.shape = check_widths("DeViSE", "shape", shape, allow_empty=False)
        self.vocabulary = check_vocabulary("DeViSE", vocabulary)
        self.backbone = backbone
        self.projection = nn.Linear(features, len(self.vocabulary))

    def class_embeddings(self, descriptions: Sequence[str]) -> torch.Tensor:
        """``(C, V)``: each description's multi-hot vector over the vocabulary, unit length."""
        return F.normalize(attribute_matrix(list(descriptions), self.vocabulary), dim=1)

    def scores(self, x: torch.Tensor, descriptions: Sequence[str]) -> torch.Tensor:
        self.check("DeViSE.scores", x)
        classes = self.class_embeddings(descriptions).to(x)
        return self.projection(self.backbone(x)) @ classes.T
