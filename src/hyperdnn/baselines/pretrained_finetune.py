"""Fine-tuning a pretrained feature extractor (Chen et al., 2019, "A closer look at few-shot
classification"): train a network to classify every training class at once, then for a new
task fit a new linear classifier on its support set's features.

:class:`PretrainedFineTuning` fulfils :class:`~hyperdnn.methods.fewshot.FewShotLearner`. Its
training step is ordinary classification: an episode's support and query examples with their
classes among all training classes (an episode of many classes, a few examples each, makes a
classification batch). To predict, it
freezes the backbone, starts a linear classifier of ``ways`` outputs at zero and takes
``steps`` full-batch Adam steps of cross-entropy on the support features (no random number is
drawn, so a prediction is repeatable; :func:`fit_linear_head` takes ``torch.optim.Adam``'s steps
with the gradient written out, in a fifth of the time of autograd and the optimizer).

Example::

    >>> import torch
    >>> from hyperdnn.baselines.pretrained_finetune import PretrainedFineTuning
    >>> from hyperdnn.networks import conv_net
    >>> learner = PretrainedFineTuning(conv_net(1, 8), 8, (1, 28, 28), ways=5, classes=range(20), steps=10)
    >>> learner.predict(torch.rand(5, 2, 1, 28, 28), torch.rand(7, 1, 28, 28)).shape
    torch.Size([7, 5])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn._checks import check_float, check_int
from hyperdnn.data.episodes import Episode
from hyperdnn.methods.fewshot import FewShotLearner, _check_shape

__all__ = ["PretrainedFineTuning", "fit_linear_head"]


class PretrainedFineTuning(FewShotLearner):
    """Classification pretraining over the training classes; a new linear head per task.

    Args:
        backbone: ``f``, a module mapping examples ``(M, *shape)`` to ``(M, features)``.
        features: the width of ``f``'s output.
        shape: the shape of one example.
        ways: classes per test episode.
        classes: the data set's training classes (an episode's classes must be among them).
        steps: Adam steps that fit a task's classifier.
        lr: their learning rate.
    """

    def __init__(
        self,
        backbone: nn.Module,
        features: int,
        shape: Sequence[int],
        ways: int,
        classes: Sequence[int],
        steps: int = 100,
        lr: float = 0.01,
    ):
        super().__init__()
        where = "PretrainedFineTuning"
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"{where}: backbone must be an nn.Module, got {type(backbone).__name__}")
        check_int(where, "features", features)
        self.shape = _check_shape(where, shape)
        self.ways = check_int(where, "ways", ways, 2)
        ids = [int(c) for c in classes]
        if len(ids) < 2 or len(set(ids)) != len(ids) or min(ids) < 0:
            raise ValueError(f"{where}: classes must be at least 2 distinct class indices >= 0, got {ids[:10]}")
        self.steps = check_int(where, "steps", steps)
        self.lr = check_float(where, "lr", lr, 0.0)
        self.backbone = backbone
        self.classifier = nn.Linear(features, len(ids))
        lookup = torch.full((max(ids) + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(ids)] = torch.arange(len(ids))
        self.register_buffer("lookup", lookup, persistent=False)

    def loss(self, episode: Episode) -> torch.Tensor:
        """Cross-entropy over all training classes on the episode's support and query examples
        (an episode of any number of classes: a classification batch)."""
        self.check("PretrainedFineTuning.loss", episode.support, episode.query, ways=episode.ways)
        known = episode.classes.max() < len(self.lookup) and bool((self.lookup[episode.classes.clamp(max=len(self.lookup) - 1)] >= 0).all())  # fmt: skip
        if not known:
            raise ValueError(f"PretrainedFineTuning.loss: the episode's classes {episode.classes.tolist()} are not all training classes")  # fmt: skip
        local = torch.cat([episode.support_labels(), episode.query_labels])
        x = torch.cat([episode.support.flatten(0, 1), episode.query])
        return F.cross_entropy(self.classifier(self.backbone(x)), self.lookup[episode.classes][local])

    def predict(self, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        self.check("PretrainedFineTuning.predict", support, query)
        ways, shots = support.shape[:2]
        with torch.no_grad():
            train = self.backbone(support.flatten(0, 1))
            test = self.backbone(query)
        labels = torch.arange(ways, device=train.device).repeat_interleave(shots)
        with torch.no_grad():
            return F.linear(test, *fit_linear_head(train, labels, ways, self.steps, self.lr))


def fit_linear_head(
    features: torch.Tensor, labels: torch.Tensor, classes: int, steps: int, lr: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear classifier fitted from zero by ``steps`` full-batch Adam steps (``torch.optim.Adam``'s
    defaults: betas 0.9 and 0.999, eps 1e-8) of mean cross-entropy on ``features (n, d)`` with
    ``labels (n,)`` in ``[0, classes)``: ``(weight (classes, d), bias (classes,))``.

    The same updates as ``nn.Linear`` trained by ``torch.optim.Adam``, bit for bit, without
    autograd and the optimizer's bookkeeping (a fifth of their time on so small a layer): the
    logits' gradient ``g`` is ``(softmax - onehot) / n``, the weight's ``g^T x``, the bias's
    ``g``'s column sums. ``g`` comes from log-softmax's backward kernel, as in autograd, so that
    the rounding is the same: a balanced support set's bias gradient is zero up to rounding, and
    Adam's normalisation turns that rounding into steps of ``lr``.

    Example::

        >>> import torch
        >>> weight, bias = fit_linear_head(torch.eye(3), torch.tensor([0, 1, 2]), 3, steps=50, lr=0.1)
        >>> (torch.eye(3) @ weight.T + bias).argmax(1)
        tensor([0, 1, 2])
    """
    n = features.shape[0]
    target = F.one_hot(labels, classes).to(features) * (-1.0 / n)  # d(mean cross-entropy)/d(log-softmax)
    params = [features.new_zeros(classes, features.shape[1]), features.new_zeros(classes)]
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for t in range(1, steps + 1):
        logp = torch.log_softmax(F.linear(features, params[0], params[1]), 1)
        g = torch._log_softmax_backward_data(target, logp, 1, logp.dtype)  # autograd's kernel, its rounding
        for p, grad, (m, v) in zip(params, (g.T.mm(features), g.sum(0)), moments):
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1 - beta1**t))
    return params[0], params[1]
