"""Target: run any ``nn.Module`` with generated weights, one set, one per sample, or K on one batch.

Three execution modes, named by ``Target.run(weights, *inputs, mode=...)``:

* **shared** - weights without batch dims: one weight set for the whole input batch
  (``torch.func.functional_call``'s swap of the parameter slots, with the slots cached).
* **per_sample** - weights ``(B, ...)`` and inputs of batch ``B``: sample ``b`` runs with
  weight set ``b``. Runs batched, never as a Python loop over samples: every layer type in
  the kernel table has a grouped kernel (``baddbmm`` for ``Linear``, grouped convolution for
  ``Conv``/``ConvTranspose``, batched affine for norm layers, a batched gather for
  ``Embedding``, a batched time loop for ``RNN``/``GRU``/``LSTM``, batched projections and
  ``scaled_dot_product_attention`` for ``MultiheadAttention``); any other layer that owns
  generated tensors runs its subtree under ``torch.func.vmap``.
* **ensemble** - weights ``(K, ...)`` and one shared input batch of ``N``: K predictions
  ``(K, N, ...)`` in one batched pass.

What a call changes in the module is what the module's own forward would change in its
buffers: in training mode ``BatchNorm`` running statistics and ``num_batches_tracked`` (unless
per-context statistics are in use). Parameters, the module tree, ``forward`` methods, hooks and
what modules cache from their parameters (RNN flat weights, legacy ``weight_norm`` attributes)
are never changed: a call swaps parameters (shared) or ``forward`` on the owning modules
(grouped) and restores them in ``finally``.

One module per concept:

* :mod:`hyperdnn.target.target` - :class:`Target`: checks, dispatch by mode, export;
* :mod:`hyperdnn.target.kernels` - the grouped kernels and the table from module type to
  kernel (:func:`register_kernel` adds a layer type of your own);
* :mod:`hyperdnn.target.vmap` - the vmap fallback;
* :mod:`hyperdnn.target.reparam` - parametrisations and legacy hooks, derived per group;
* :mod:`hyperdnn.target.plan` - which layers a grouped call replaces (:class:`PlanEntry`);
* :mod:`hyperdnn.target.structure` - what a call needs from the module's structure, and the
  per-call check that it has not changed;
* :mod:`hyperdnn.target.swap` - the swaps a call enters and always leaves (checkpoint included).

Example::

    >>> import torch, torch.nn as nn
    >>> from hyperdnn import Target
    >>> target = Target(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)))
    >>> w = {k: torch.randn(8, *s) for k, s in target.spec.shapes.items()}
    >>> target(w, torch.randn(8, 3)).shape                       # per sample: 8 sets, 8 samples
    torch.Size([8, 2])
    >>> target.run(w, torch.randn(5, 3), mode="ensemble").shape  # 8 members on one batch of 5
    torch.Size([8, 5, 2])

Sharp edges: in per-sample mode ``BatchNorm`` normalises over the whole batch (only its affine
is per sample); in ensemble mode each member normalises over its own copy of the batch.
Inputs must carry their batch at ``batch_dim`` (0 by default); layers with a batch position of
their own keep it (convolutions and ``BatchNorm``/``GroupNorm`` at dim 0, non-batch-first
``MultiheadAttention``/RNN layers at dim 1).
"""

from hyperdnn.target.kernels import GroupedCall, GroupedKernel, kernel_for, register_kernel
from hyperdnn.target.plan import PlanEntry
from hyperdnn.target.target import MODES, Target

__all__ = ["Target", "MODES", "GroupedCall", "GroupedKernel", "register_kernel", "kernel_for", "PlanEntry"]
