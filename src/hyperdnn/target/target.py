"""The :class:`Target`: a module whose selected parameters come from outside.

Checks at the public entry point, dispatch to the execution mode, the shared weight swap or
the grouped forward swaps (:mod:`hyperdnn.target.swap`), empty batches, the ensemble's shared
first layer, and export (:meth:`Target.materialize`).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence
from torch.utils import _pytree as pytree

from hyperdnn.spec import Selection, WeightSpec, _normalize_selection
from hyperdnn.target.kernels import CONV, CONVOLUTION, LINEAR, from_grouped_channels
from hyperdnn.target.reparam import legacy_hooks
from hyperdnn.target.structure import Chain, Structure
from hyperdnn.target.swap import Active, Frame, hooked

__all__ = ["Target", "MODES"]

MODES = ("auto", "shared", "per_sample", "ensemble")
"""Values of ``Target.run(..., mode=...)``."""
_MODES = {m: m for m in MODES}


def _where(mode: str) -> str:
    """The entry point named in error messages of a call in ``mode``."""
    return "Target" if mode == "auto" else f"Target.{mode}"


_FROM_SPEC = object()  # Target built from an explicit spec, not from a selection


class Target(nn.Module):
    """A functional view of ``module`` whose selected parameters come from outside.

    Args:
        module: any ``nn.Module``. It is kept as a submodule (so ``.to()`` moves it and its
            other parameters and buffers train as usual); see "What a call changes" below.
        select: which parameters are generated; see :meth:`WeightSpec.from_module`.
        spec: a prebuilt :class:`WeightSpec` (instead of ``select``).
        batch_dim: where the module's inputs and outputs carry their batch (an int ``>= 0``,
            default 0). Layers that read their input layout-free (``Linear``, ``LayerNorm``,
            ``Embedding``, modules run under vmap) find the batch there; layers with a batch
            position of their own keep it: convolutions, ``BatchNorm`` and ``GroupNorm`` at
            dim 0, ``MultiheadAttention`` and ``RNN``/``GRU``/``LSTM`` per ``batch_first``.
        per_sample: ``"auto"`` (each layer's grouped kernel from the table in
            :mod:`hyperdnn.target.kernels`, vmap for layers without one) or ``"vmap"`` (the
            whole module under ``torch.func.vmap``; a reference path).
        channels_last: run convolutions in channels-last memory layout: 4-D (5-D) floating
            point inputs are converted with ``.to(memory_format=torch.channels_last)``
            (``channels_last_3d``) at every call, and the grouped per-sample and ensemble
            convolutions keep that layout. Results are the same; on CPU (oneDNN) this is
            often much faster for convolutions, on GPU it depends on the card and dtype.
            Generated conv weights keep their own layout (converting them costs more than
            it saves).

    One entry point, :meth:`run`, takes the mode: ``target.run(weights, *inputs,
    mode="shared" | "per_sample" | "ensemble" | "auto")``. ``target(weights, *inputs)`` is
    ``mode="auto"`` (weights without batch dims run shared, weights ``(B, ...)`` per sample on
    inputs of batch ``B``); :meth:`shared`, :meth:`per_sample` and :meth:`ensemble` name the
    mode. Every weight must have the dtype and device of the module's own parameter of that
    name. An empty batch (``B = 0``, or ``K = 0`` or ``N = 0`` in an ensemble) returns the
    empty result plain PyTorch returns.

    What a call changes: exactly what the module's own forward would change in its buffers
    (in training mode, ``BatchNorm`` running statistics and ``num_batches_tracked``, unless
    per-context statistics are in use). Never changed: parameters (objects and values; the
    module's copies of generated tensors are never read and receive no gradient), the module
    tree, ``forward`` methods, hooks, and what modules cache from their parameters (RNN flat
    weights, the attribute a legacy ``weight_norm`` hook writes): for the duration of a call
    parameters and forwards are swapped and they are restored in ``finally``, also when the
    call fails.

    Supported inside the module, in every mode:

    * ``torch.utils.checkpoint`` (either ``use_reentrant``): during a call, checkpoint is handed
      a function that re-enters the call's swap, so the recomputation in backward reads the
      generated tensors (with ``use_reentrant=True`` they are also passed as inputs of the
      checkpointed function, so their gradients flow back). Gradients equal those without
      checkpointing. Inside a part that runs under vmap, checkpoint cannot recompute and runs
      that part without checkpointing (exact, without the memory saving).
    * ``torch.nn.utils.parametrize`` parametrisations (``parametrizations.weight_norm``,
      ``orthogonal``, your own): generate the originals (their names are what
      ``named_parameters()`` lists); per sample each set is parametrised on its own.
      ``parametrizations.spectral_norm`` runs per sample only in eval mode (in training mode
      its power iteration updates one pair of vectors in place).
    * Legacy hooks: ``torch.nn.utils.weight_norm`` (generate ``weight_g``/``weight_v``) and
      ``torch.nn.utils.prune`` (generate ``weight_orig``); the legacy ``spectral_norm`` hook
      runs shared only, and one on a ``MultiheadAttention``'s ``out_proj`` is refused (attention
      reads ``out_proj.weight`` without calling ``out_proj``, so the hook never applies).

    The structure the module had at construction is checked at every call (the class of
    each module and the identities of its submodules and parameters: about 1.5 us for a
    3-layer MLP, 16 us for a 6-layer ``TransformerEncoder``).
    After a change (a layer replaced, a parameter or parametrisation added) the call
    re-plans when the generated tensors are still parameters of the same names and shapes
    (and, when built from ``select``, the selection still gives exactly them), and raises a
    ``ValueError`` naming the differences otherwise.

    Example::

        >>> import torch, torch.nn as nn
        >>> from hyperdnn import Target
        >>> target = Target(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)))
        >>> w = {k: torch.randn(8, *s) for k, s in target.spec.shapes.items()}
        >>> target(w, torch.randn(8, 3)).shape           # weight set b for sample b
        torch.Size([8, 2])
        >>> target.ensemble(w, torch.randn(5, 3)).shape  # 8 members on one batch of 5
        torch.Size([8, 5, 2])
        >>> net = target.materialize({k: v[0] for k, v in w.items()})  # a plain nn.Module
        >>> type(net).__name__
        'Sequential'
    """

    def __init__(
        self,
        module: nn.Module,
        select: Selection = None,
        *,
        spec: WeightSpec | None = None,
        batch_dim: int = 0,
        per_sample: str = "auto",
        channels_last: bool = False,
    ):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"Target: expected an nn.Module, got {type(module).__name__}")
        if isinstance(batch_dim, bool) or not isinstance(batch_dim, int):
            raise TypeError(f"Target: batch_dim must be an int >= 0, got {batch_dim!r} ({type(batch_dim).__name__})")
        if batch_dim < 0:
            raise ValueError(
                f"Target: batch_dim must be an int >= 0, got {batch_dim} (count from the front: a negative "
                "dim would point at different dims for inputs of different rank)"
            )
        if not isinstance(per_sample, str):
            raise TypeError(
                f"Target: per_sample must be 'auto' or 'vmap', got {per_sample!r} ({type(per_sample).__name__})"
            )
        if per_sample not in ("auto", "vmap"):
            raise ValueError(f"Target: per_sample must be 'auto' or 'vmap', got {per_sample!r}")
        if not isinstance(channels_last, bool):
            raise TypeError(f"Target: channels_last must be a bool, got {type(channels_last).__name__}")
        if spec is None:
            _normalize_selection(select, where="Target")
            spec = WeightSpec.from_module(module, select)
            self._select: Any = select
        else:
            if select is not None:
                raise ValueError(f"Target: pass either select or spec, not both (got select={select!r} and a spec)")
            if not isinstance(spec, WeightSpec):
                raise TypeError(f"Target: spec must be a WeightSpec, got {type(spec).__name__}")
            params = dict(module.named_parameters())
            bad = [t.name for t in spec if t.name not in params or tuple(params[t.name].shape) != t.shape]
            if bad:
                raise ValueError(f"Target: spec tensors {bad} are not parameters of the module with those shapes")
            self._select = _FROM_SPEC
        self.module = module
        self._spec = spec
        self.batch_dim = batch_dim
        self.per_sample_mode = per_sample
        self.channels_last = channels_last
        self._built: Structure | None = Structure(module, spec, per_sample == "vmap")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_built"] = None  # rebuilt on the next call
        return state

    @property
    def spec(self) -> WeightSpec:
        """The :class:`WeightSpec` of the generated tensors."""
        return self._spec

    def default_weights(self) -> dict[str, torch.Tensor]:
        """The module's own current values of the generated tensors (detached copies)."""
        own = self._current().own
        return {t.name: own[t.name].detach().clone() for t in self._spec}

    # ------------------------------------------------------------------ calling

    # ------------------------------------------------------------------ calling
    def run(
        self,
        weights: Mapping[str, torch.Tensor],
        *args: Any,
        mode: str = "auto",
        validate: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Run the module on ``args``/``kwargs`` with ``weights``, in ``mode``.

        Args:
            weights: spec name -> tensor, each of the spec's shape (``"shared"``), or with one
                leading batch dim: ``(B, *shape)`` (``"per_sample"``) or ``(K, *shape)``
                (``"ensemble"``); of the dtype and on the device of the module's own parameter.
            *args, **kwargs: the module's inputs (per sample: of batch ``B`` at ``batch_dim``;
                ensemble: one shared batch ``N``). Keyword inputs named ``mode`` or
                ``validate`` reach the module through :meth:`shared`, :meth:`per_sample`,
                :meth:`ensemble` or ``target(...)`` instead.
            mode: ``"shared"`` (one weight set for the whole batch), ``"per_sample"`` (set
                ``b`` for sample ``b``), ``"ensemble"`` (``K`` sets on one shared batch), or
                ``"auto"`` (shared without a batch dim, per sample with one).
            validate: check the names, shapes, dtypes and devices of every weight (one pass
                over the mapping). ``False`` trusts them (weights generated for this spec, as
                :class:`~hyperdnn.hypernet.HyperModel` passes); the batch dims are still
                checked against ``mode``.

        Returns:
            What the module returns; per sample, sample ``b`` computed with weight set ``b``;
            ensemble, every output tensor ``(K, N, ...)``: the member dim first, then the
            output's own dims with its batch at ``batch_dim + 1``. A ``PackedSequence`` input
            holds ``N`` sequences (per sample, sequence ``b`` runs with set ``b``); as an
            ensemble output it stays one ``PackedSequence`` of ``K * N`` sequences, member-major
            (sequence ``k * N + i``: member ``k`` on sequence ``i``). When the module is itself
            an ``RNN``/``GRU``/``LSTM``, its final states are split at their own batch dim:
            ``(K, layers * directions, N, hidden)``; when it is an attention or transformer
            layer, its masks are repeated at their own batch dims (key padding masks and 3-D
            attention masks at dim 0, a 2-D attention mask shared) and attention weights come
            back ``(K, N, ...)``. A custom module's inputs are repeated where they have ``N`` at
            ``batch_dim``.

        Raises:
            TypeError, ValueError: an unknown mode; wrong names (all listed), shapes, dtypes or
                devices of the weights; batch dims that do not fit the mode; a batch that
                does not match the inputs'.

        Example::

            >>> import torch, torch.nn as nn
            >>> from hyperdnn import Target
            >>> target = Target(nn.Linear(3, 2))
            >>> w = {"weight": torch.randn(4, 2, 3), "bias": torch.randn(4, 2)}
            >>> target.run(w, torch.randn(4, 3), mode="per_sample").shape
            torch.Size([4, 2])
            >>> target.run(w, torch.randn(7, 3), mode="ensemble").shape
            torch.Size([4, 7, 2])
        """
        return self._run(weights, args, kwargs, mode, validate)

    def forward(self, weights: Mapping[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """``run(weights, *args, mode="auto", **kwargs)``: shared if the weights have no batch
        dim, else per sample (see :meth:`run`)."""
        return self._run(weights, args, kwargs, "auto", True)

    def shared(self, weights: Mapping[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """``run(weights, *args, mode="shared", **kwargs)``: one weight set (each tensor of its
        spec shape) for the whole input batch."""
        return self._run(weights, args, kwargs, "shared", True)

    def per_sample(self, weights: Mapping[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """``run(weights, *args, mode="per_sample", **kwargs)``: weight set ``b`` for sample
        ``b``; weights ``(B, ...)``, inputs of batch ``B``."""
        return self._run(weights, args, kwargs, "per_sample", True)

    def ensemble(self, weights: Mapping[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """``run(weights, *args, mode="ensemble", **kwargs)``: K weight sets on one shared input
        of batch N; returns outputs ``(K, N, ...)`` (the member dim first, then the output's
        own dims with its batch at ``batch_dim + 1``)."""
        return self._run(weights, args, kwargs, "ensemble", True)

    def input_batch(self, *args: Any, **kwargs: Any) -> int | None:
        """The batch size of the inputs: the size at ``batch_dim`` of the first tensor input
        that has that dim, or the number of sequences of a ``PackedSequence`` input, whichever
        comes first (``None`` when there is neither).

        Example::

            >>> import torch, torch.nn as nn
            >>> from hyperdnn import Target
            >>> Target(nn.Linear(3, 2)).input_batch(torch.randn(5, 3))
            5
        """
        for a in list(args) + list(kwargs.values()):
            if isinstance(a, torch.Tensor) and a.dim() > self.batch_dim:
                return a.shape[self.batch_dim]
            if isinstance(a, PackedSequence):
                return int(a.batch_sizes[0])
        return None

    def materialize(self, weights: Mapping[str, torch.Tensor]) -> nn.Module:
        """A deep copy of the module with ``weights`` loaded as its ordinary parameters.

        The copy needs nothing from hyperdnn: it runs, trains and saves like the original
        (``torch.save(m.state_dict())``, then ``load_state_dict`` into a freshly constructed
        module of the same class). Its parameters are detached copies of ``weights`` with the
        module's own ``requires_grad``; tied parameters stay tied; buffers (e.g. BatchNorm
        running statistics) are the module's current ones. The module itself is unchanged.

        Args:
            weights: one weight set: spec name -> tensor of the spec's shape (no batch dim).

        Returns:
            The new module; ``materialize(w)(x)`` equals ``target(w, x)``.

        Raises:
            ValueError: batched weights (index one set: ``{k: v[i] for k, v in w.items()}``),
                or the checks of :meth:`forward`.

        Example::

            >>> import torch, torch.nn as nn
            >>> from hyperdnn import Target
            >>> target = Target(nn.Linear(3, 2))
            >>> w = {"weight": torch.ones(2, 3), "bias": torch.zeros(2)}
            >>> target.materialize(w)(torch.ones(1, 3))
            tensor([[3., 3.]], grad_fn=<AddmmBackward0>)
        """
        structure = self._current()
        batch = self._spec.check(weights, where="Target.materialize", like=structure.own)
        if len(batch):
            raise ValueError(
                f"Target.materialize: expected one weight set without batch dims, got batch shape {tuple(batch)}; "
                "index one set first: {k: v[i] for k, v in weights.items()}"
            )
        # The attribute a legacy hook writes is a non-leaf tensor, which deepcopy refuses;
        # the copy gets it recomputed from its own (loaded) parameters below.
        memo: dict[int, Any] = {}
        for m, name in structure.legacy:
            if isinstance(m.__dict__.get(name), torch.Tensor):
                memo[id(m.__dict__[name])] = None
        copy_ = copy.deepcopy(self.module, memo)
        params = dict(copy_.named_parameters())
        with torch.no_grad():
            for t in self._spec:
                params[t.name].copy_(weights[t.name])
        for m in copy_.modules():
            for kind, hook in legacy_hooks(m).values():
                if kind == "weight_norm":
                    setattr(m, hook.name, hook.compute_weight(m))
                elif kind == "prune":
                    setattr(m, hook._tensor_name, hook.apply_mask(m))
                else:
                    setattr(m, hook.name, hook.compute_weight(m, do_power_iteration=False))
        return copy_

    # ------------------------------------------------------------------ internals
    # The entry points above validate; HyperModel calls these directly with weights it
    # generated for this spec.

    # ------------------------------------------------------------------ internals
    def _run(self, weights, args: tuple, kwargs: dict, mode: str, validate: bool) -> Any:
        mode_given = mode
        mode = _MODES.get(mode) if type(mode) is str else next((m for m in MODES if m == mode), None)
        if mode is None:  # not a mode (a str enum such as Execution compares equal to its value)
            expected = "'auto', 'shared', 'per_sample' or 'ensemble'"
            if not isinstance(mode_given, str):
                raise TypeError(
                    f"Target.run: mode must be {expected} (a string), got {mode_given!r} ({type(mode_given).__name__})"
                )
            raise ValueError(f"Target.run: mode must be {expected}, got {mode_given!r}")
        if not isinstance(validate, bool):
            raise TypeError(f"Target.run: validate must be a bool, got {validate!r} ({type(validate).__name__})")
        if not validate:
            return self._run_trusted(weights, args, kwargs, mode)
        structure = self._current()
        batch = self._spec.check(weights, where=_where(mode), like=structure.own)
        return self._dispatch(structure, weights, batch, args, kwargs, mode)

    def _run_trusted(self, weights, args: tuple, kwargs: dict, mode: str, scales: dict | None = None) -> Any:
        """:meth:`run` with ``validate=False`` and ``mode`` one of :data:`MODES` (a plain
        string, as :class:`~hyperdnn.hypernet.HyperModel` passes): names, shapes, dtypes and
        devices are the spec's; the batch is read off one tensor. ``scales`` (name -> float):
        the weights are to be multiplied by them (a per-sample chain folds each into the
        layer's product; any other call multiplies the tensors first)."""
        structure = self._current()
        first = self._spec._tensors[0]
        w = weights[first.name]
        batch = w.shape[: w.dim() - len(first.shape)]
        return self._dispatch(structure, weights, batch, args, kwargs, mode, scales)

    def _dispatch(
        self, structure: Structure, weights, batch, args: tuple, kwargs: dict, mode: str, scales: dict | None = None
    ) -> Any:
        """Run in ``mode`` (one of :data:`MODES`) after checking the weights' batch dims ``batch``
        against it. (An ``"auto"`` call never fails these checks, so the messages name ``mode``
        as given; the name is built only for a message, off the hot path.)"""
        if scales is not None and mode != "per_sample" and mode != "ensemble":
            weights, scales = _scaled(weights, scales), None
        if mode == "auto":
            if len(batch) > 1:
                raise ValueError(f"Target: weights may have at most one batch dim, got batch shape {tuple(batch)}")
            mode = "per_sample" if len(batch) else "shared"
        if mode == "shared":
            if len(batch):
                raise ValueError(f"{_where(mode)}: expected weights without batch dims, got batch shape {tuple(batch)}")
            return self._shared(structure, weights, args, kwargs)
        if len(batch) != 1:
            dim = "B" if mode == "per_sample" else "K"
            raise ValueError(
                f"{_where(mode)}: expected weights with one batch dim ({dim}, ...), got batch shape {tuple(batch)}"
            )
        if mode == "per_sample":
            return self._per_sample(structure, weights, batch[0], args, kwargs, scales)
        return self._ensemble(structure, weights, batch[0], args, kwargs, scales)

    def _current(self) -> Structure:
        """The cached structure, rebuilt (and re-validated) if the module changed since."""
        structure = self._built
        if structure is None or not structure.fingerprint.unchanged():
            self._check_structure()
            structure = self._built = Structure(self.module, self._spec, self.per_sample_mode == "vmap")
        return structure

    def _check_structure(self) -> None:
        """Raise if the module no longer has the generated tensors of the spec."""
        params = dict(self.module.named_parameters())
        if self._select is _FROM_SPEC:
            now = {n: tuple(params[n].shape) for n in self._spec.names if n in params}
        else:
            try:
                now = WeightSpec.from_module(self.module, self._select).shapes
            except ValueError:  # the selection matches nothing now
                now = {}
        was = self._spec.shapes
        missing = [n for n in was if n not in now]
        new = [n for n in now if n not in was]
        reshaped = [f"{n}: {was[n]} -> {now[n]}" for n in was if n in now and now[n] != was[n]]
        if missing or new or reshaped:
            raise ValueError(
                "Target: the module changed since this Target was built and no longer matches its spec "
                f"(the tensors the hypernetwork generates). No longer parameters: {missing}. "
                f"Newly selected: {new}. Reshaped: {reshaped}. Build a new Target (and hypernetwork) "
                "for the changed module."
            )

    def _frame(self, structure: Structure, weights, groups: int | None = None, per_group_norm: bool = False) -> Frame:
        return Frame(structure, weights, groups, per_group_norm, self.channels_last, self.batch_dim)

    def _shared(self, structure: Structure, weights, args, kwargs):
        # functional_call's own swap, minus its per-call walk over the module: the owners
        # of the generated tensors (tied aliases included) are resolved once and cached.
        args, kwargs = self._layout(args, kwargs)
        chain = self._usable_chain(structure, args, kwargs)
        if chain is not None:
            # an nn.Sequential of plain layers: the same calls without the module machinery
            return chain.run(weights, args[0])
        with Active((self._frame(structure, weights),)):
            return self.module(*args, **kwargs)

    @staticmethod
    def _usable_chain(structure: Structure, args: tuple, kwargs: dict) -> Chain | None:
        """The module's :class:`Chain` when this call (one positional input) may run it, else
        ``None``. Eager mode only: traced, module calls cost nothing, and a chain built while
        tracing would fail the graph's guards on the next call."""
        if torch.compiler.is_compiling() or len(args) != 1 or kwargs:
            return None
        chain = structure.chain
        return chain if chain is not None and chain.usable() else None

    def _per_sample(self, structure: Structure, weights, B: int, args, kwargs, scales: dict | None = None):
        n = self.input_batch(*args, **kwargs)
        if n is None:
            raise ValueError(
                f"Target.per_sample: expected a tensor input with a batch dim at {self.batch_dim}, got none"
            )
        if n != B:
            raise ValueError(
                f"Target.per_sample: weights have batch {B} but the input has batch {n} at dim "
                f"{self.batch_dim}; they must match (use Target.ensemble for K weight sets on one shared input)"
            )
        if B:
            chain = self._chain_for(structure, args, kwargs, ensemble=False)
            if chain is not None:
                # an nn.Sequential of plain layers: the grouped kernels' calls without the frames
                return chain.run_per_sample(weights, args[0], B, scales=scales)
        if scales is not None:
            weights = _scaled(weights, scales)
        if B == 0:
            return self._empty(structure, weights, 0, args, kwargs)
        return self._grouped(structure, weights, B, args, kwargs, per_group_norm=False)

    def _ensemble(self, structure: Structure, weights, K: int, args, kwargs, scales: dict | None = None):
        if scales is not None:
            chain = self._chain_for(structure, args, kwargs, ensemble=True)
            if chain is not None and K and args[0].dim() and args[0].shape[0]:
                return chain.ensemble_output(chain.run_ensemble(weights, args[0], K, scales), K)
            weights = _scaled(weights, scales)
        layout = _sequence_layout(self.module)
        if layout is not None:
            return self._ensemble_sequence(structure, weights, K, layout, args, kwargs)
        d = self.batch_dim
        n = self.input_batch(*args, **kwargs)
        if n is None:
            raise ValueError(f"Target.ensemble: expected a tensor input with a batch dim at {d}, got none")
        if K == 0 and any(isinstance(a, PackedSequence) for a in (*args, *kwargs.values())):
            raise ValueError(
                "Target.ensemble: expected at least one weight set with a PackedSequence input, got K = 0 "
                "(a PackedSequence cannot hold no sequences)"
            )
        if K == 0 or n == 0:
            out = self._empty(structure, weights, n, args, kwargs)
        else:
            out = self._ensemble_shared_first_layer(structure, weights, K, n, args, kwargs)
        if out is None:

            def rep(t):
                if isinstance(t, PackedSequence):
                    return _repeat_packed(t, K)
                if isinstance(t, torch.Tensor) and t.dim() > d and t.shape[d] == n:
                    t = t.unsqueeze(d).expand(*t.shape[:d], K, *t.shape[d:])
                    return t.reshape(*t.shape[:d], K * n, *t.shape[d + 2 :])
                return t

            args_r = tuple(pytree.tree_map(rep, a, is_leaf=_is_packed) for a in args)
            kwargs_r = {k: pytree.tree_map(rep, v, is_leaf=_is_packed) for k, v in kwargs.items()}
            out = self._grouped(structure, weights, K, args_r, kwargs_r, per_group_norm=True)

        def split(t, at=d):
            if isinstance(t, torch.Tensor) and t.dim() > at and t.shape[at] == K * n:
                return t.reshape(*t.shape[:at], K, n, *t.shape[at + 1 :]).movedim(at, 0)
            return t  # a PackedSequence stays one, of K * n sequences, member-major

        return pytree.tree_map(split, out, is_leaf=_is_packed)

    def _ensemble_sequence(
        self, structure: Structure, weights, K: int, layout: tuple[inspect.Signature, int], args, kwargs
    ):
        """Ensemble of an attention, transformer or RNN layer (the module itself): each argument
        is repeated ``K`` times at its own batch dim (masks and RNN states keep theirs whatever
        ``batch_first`` says; a 2-D mask is shared), and each output is split at its own."""
        signature, b = layout
        bound = signature.bind(self.module, *args, **kwargs)
        dims = {name: _argument_batch_dim(name, value, b) for name, value in bound.arguments.items()}
        n = next(
            (
                int(v.batch_sizes[0]) if isinstance(v, PackedSequence) else v.shape[dims[name]]
                for name, v in bound.arguments.items()
                if isinstance(v, PackedSequence) or (isinstance(v, torch.Tensor) and dims[name] == b)
            ),
            None,
        )
        if n is None:
            raise ValueError(
                f"Target.ensemble: {type(self.module).__name__} with batched weights expected a batched (3-D) input "
                f"with its batch at dim {b} (batch_first={b == 0}) or a PackedSequence, got none (an unbatched "
                "input has no batch to share among the members; add a batch dim)"
            )
        packed = any(isinstance(v, PackedSequence) for v in bound.arguments.values())
        if K == 0 and packed:
            raise ValueError(
                "Target.ensemble: expected at least one weight set with a PackedSequence input, got K = 0 "
                "(a PackedSequence cannot hold no sequences)"
            )
        empty = K == 0 or n == 0

        def rep(value, dim):
            if isinstance(value, PackedSequence):
                return _repeat_packed(value, K)
            if not isinstance(value, torch.Tensor) or dim is None:
                return value
            if empty:  # no samples: the module's forward on an empty batch
                return value.narrow(dim, 0, 0)
            value = value.unsqueeze(dim).expand(*value.shape[:dim], K, *value.shape[dim:])
            return value.reshape(*value.shape[:dim], -1, *value.shape[dim + 2 :])

        for name, value in list(bound.arguments.items()):
            if name != "self":
                dim = dims[name]
                bound.arguments[name] = pytree.tree_map(lambda t, dim=dim: rep(t, dim), value, is_leaf=_is_packed)
        call_args, call_kwargs = bound.args[1:], bound.kwargs
        if empty:
            out = self._shared(structure, {k: v.sum(0) for k, v in weights.items()}, call_args, call_kwargs)
        else:
            out = self._grouped(structure, weights, K, call_args, call_kwargs, per_group_norm=True)

        def split(t, at):
            if isinstance(t, torch.Tensor) and t.dim() > at:
                return t.reshape(*t.shape[:at], K, n, *t.shape[at + 1 :]).movedim(at, 0)
            return t  # a PackedSequence stays one, of K * n sequences, member-major

        if not isinstance(out, tuple):  # transformers: one tensor
            return split(out, b)
        # attention: (output, weights (N, ...) or None); RNNs: (output, h_n or (h_n, c_n)) at dim 1
        second = 1 if isinstance(self.module, nn.RNNBase) else 0
        return split(out[0], b), pytree.tree_map(lambda t: split(t, second), out[1])

    def _empty(self, structure: Structure, weights, n: int, args, kwargs):
        """No samples (per sample ``B = 0``; ensemble ``K = 0`` or ``N = 0``): the module's
        forward on the inputs cut to an empty batch, with one weight set summed from the
        generated tensors (so the empty outputs stay connected to them)."""
        d = self.batch_dim

        def cut(t):
            if isinstance(t, torch.Tensor) and t.dim() > d and t.shape[d] == n:
                return t.narrow(d, 0, 0)
            return t

        one = {k: v.sum(0) for k, v in weights.items()}
        return self._shared(structure, one, tuple(cut(a) for a in args), {k: cut(v) for k, v in kwargs.items()})

    def _layout(self, args, kwargs):
        """Inputs in the memory layout the target runs in (channels-last when asked)."""
        if not self.channels_last:
            return args, kwargs

        def conv(t):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                if t.dim() == 4:
                    return t.to(memory_format=torch.channels_last)
                if t.dim() == 5:
                    return t.to(memory_format=torch.channels_last_3d)
            return t

        return tuple(conv(a) for a in args), {k: conv(v) for k, v in kwargs.items()}

    def _grouped(self, structure: Structure, weights, G: int, args, kwargs, per_group_norm: bool):
        args, kwargs = self._layout(args, kwargs)
        with Active((self._frame(structure, weights, G, per_group_norm),)):
            return self.module(*args, **kwargs)

    def _chain_for(self, structure: Structure, args: tuple, kwargs: dict, ensemble: bool) -> Chain | None:
        """The module's :class:`Chain` when a per-sample call (:meth:`Chain.run_per_sample`)
        or an ensemble call (:meth:`Chain.run_ensemble`, which needs a generated ``Linear``
        first) on ``args`` runs it: batch at dim 0, ``per_sample="auto"``, no channels-last, a
        tensor input, the chain usable; else ``None``."""
        if self.batch_dim != 0 or self.per_sample_mode != "auto" or self.channels_last:
            return None
        if not args or not isinstance(args[0], torch.Tensor):
            return None
        chain = self._usable_chain(structure, args, kwargs)
        if chain is None or (ensemble and not chain.starts_generated()):
            return None
        return chain

    def _ensemble_shared_first_layer(self, structure: Structure, weights, K: int, n: int, args, kwargs):
        """Ensemble fast path for an ``nn.Sequential`` that starts with a generated ``Linear``
        or (ungrouped) convolution: that layer meets the shared input once for all K weight
        sets (one GEMM, or one convolution with K times the output channels) instead of
        meeting K copies of it; the other layers run grouped. ``None`` when the module is not
        of that form (then the input is replicated K times)."""
        m = self.module
        if type(m) is not nn.Sequential or len(m) == 0 or self.batch_dim != 0 or kwargs or len(args) != 1:
            return None
        first = m[0]
        x = args[0]
        if not isinstance(x, torch.Tensor) or self.per_sample_mode != "auto" or hooked(m) or hooked(first):
            return None
        chain = self._chain_for(structure, args, kwargs, ensemble=True)
        if chain is not None:
            # a chain that starts with its generated Linear: the whole of it without the frames
            return chain.run_ensemble(weights, x, K)
        entry = next((e for e in structure.plan if e.module is first), None)
        if entry is None or entry.kernel not in (LINEAR, CONVOLUTION) or entry.derived or "weight" not in entry.names:
            return None
        gen = {local: weights[canon] for local, canon in entry.names.items()}
        w = gen["weight"]
        b = gen["bias"] if "bias" in gen else first.bias
        bias = None if b is None else (b.reshape(-1) if "bias" in gen else b.repeat(K))
        (x,), _ = self._layout((x,), {})
        if entry.kernel is LINEAR:
            y = F.linear(x, w.reshape(-1, w.shape[-1]), bias)  # (n, ..., K*O)
            y = y.unflatten(-1, (K, w.shape[1])).movedim(-2, 0)  # (K, n, ..., O)
            h = y.reshape(K * n, *y.shape[2:])
        else:
            nd = len(first.kernel_size)
            if first.groups != 1 or x.dim() != nd + 2:
                return None
            padding = first.padding
            if first.padding_mode != "zeros":
                x = F.pad(x, first._reversed_padding_repeated_twice, mode=first.padding_mode)
                padding = 0
            y = CONV[nd](x, w.reshape(-1, *w.shape[2:]), bias, first.stride, padding, first.dilation, 1)
            h = from_grouped_channels(y, K, self.channels_last)
        with Active((self._frame(structure, weights, K, True),)):
            for layer in list(m)[1:]:
                h = layer(h)
        return h


def _scaled(weights, scales: dict) -> dict:
    """``weights`` with each tensor multiplied by its scale (name -> float)."""
    return {n: w if scales[n] == 1.0 else w * scales[n] for n, w in weights.items()}


def _is_packed(value: Any) -> bool:
    return isinstance(value, PackedSequence)


def _repeat_packed(p: PackedSequence, K: int) -> PackedSequence:
    """``p``'s ``n`` sequences ``K`` times over, member-major: sequence ``k * n + i`` of the result
    is sequence ``i`` of ``p``. Each step's rows are repeated in place, so the result stays
    sorted by length (sorted position ``j * K + k`` is copy ``k`` of sorted position ``j``)."""
    n = int(p.batch_sizes[0])
    order = torch.arange(n, device=p.data.device) if p.sorted_indices is None else p.sorted_indices
    sorted_indices = (order.unsqueeze(1) + n * torch.arange(K, device=order.device)).reshape(-1)
    return PackedSequence(p.data.repeat_interleave(K, dim=0), p.batch_sizes * K, sorted_indices, None)


_SEQUENCE_LAYERS = (
    nn.MultiheadAttention,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
    nn.TransformerEncoder,
    nn.TransformerDecoder,
    nn.Transformer,
    nn.RNN,
    nn.LSTM,
    nn.GRU,
)
_SIGNATURES: dict[type, inspect.Signature] = {}


def _sequence_layout(module: nn.Module) -> tuple[inspect.Signature, int] | None:
    """``(signature of forward, batch dim of its sequences)`` when ``module`` is an attention,
    transformer or RNN layer running its class's own forward (whose arguments keep their batch
    at known dims); ``None`` otherwise."""
    base = next((c for c in _SEQUENCE_LAYERS if isinstance(module, c)), None)
    if base is None or type(module).forward is not base.forward or "forward" in module.__dict__:
        return None
    if isinstance(module, (nn.MultiheadAttention, nn.Transformer, nn.RNNBase)):
        batch_first = module.batch_first
    else:
        layer = module if hasattr(module, "self_attn") else module.layers[0]
        batch_first = layer.self_attn.batch_first
    if base not in _SIGNATURES:
        _SIGNATURES[base] = inspect.signature(base.forward)
    return _SIGNATURES[base], 0 if batch_first else 1


def _argument_batch_dim(name: str, value: Any, b: int) -> int | None:
    """Where an argument of an attention, transformer or RNN layer carries its batch: RNN
    states at dim 1; key padding masks ``(N, S)`` and 3-D attention masks ``(N * heads, L, S)``
    at dim 0 (a 2-D attention mask is shared: ``None``); sequences (3-D) at ``b``."""
    if name == "hx":
        return 1
    if not isinstance(value, torch.Tensor):
        return None
    if name.endswith("key_padding_mask"):
        return 0 if value.dim() == 2 else None
    if name.endswith("mask"):
        return 0 if value.dim() == 3 else None
    return b if value.dim() == 3 else None
