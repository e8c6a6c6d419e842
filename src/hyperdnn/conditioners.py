"""Conditioners: the hypernetwork's input (the review's first design criterion).

A conditioner turns whatever the user passes as *context* into a float matrix ``(B, d)`` and
says whether the context was batched. It also says how the weights generated for a context
meet the target's input (:meth:`Conditioner.execution`: one :class:`Execution`), whether the
context is the target's input itself, and which BatchNorm statistics its contexts should use;
:class:`~hyperdnn.hypernet.HyperModel` asks these, never the conditioner's class. Task ids (:class:`TaskEmbedding`), the data itself
(:class:`DataEncoder`, dynamic inputs), noise (:class:`Noise`, K weight samples), continuous
values such as hyper-parameters or preference vectors (:class:`Continuous`), nothing at
all (:class:`LearnedLatent`, a static hypernet with a learned code), a set of examples in any
order (:class:`SetEncoder`, a few-shot support set) or a description in words
(:class:`DescriptionEncoder`, a class's attributes for zero-shot learning).

Example::

    >>> import torch
    >>> from hyperdnn import TaskEmbedding
    >>> cond = TaskEmbedding(num_tasks=3, dim=8)
    >>> cond(torch.tensor([0, 2])).c.shape
    torch.Size([2, 8])
    >>> cond([0, 2]).c.shape   # a list of ids works like a tensor of them
    torch.Size([2, 8])
    >>> cond.add_tasks(2); cond.num_tasks
    [3, 4]
    5
    >>> from hyperdnn import create_conditioner, list_conditioners
    >>> create_conditioner("noise", dim=4)(3).c.shape   # by registered name
    torch.Size([3, 4])
    >>> list_conditioners("t*")
    ['task_embedding']

Every built-in conditioner is registered by name (:func:`create_conditioner`,
:func:`list_conditioners`, :func:`register_conditioner`; installed packages add theirs through
the ``hyperdnn.conditioners`` entry-point group).

Anything a conditioner draws or creates at call time (noise, calibration probes) follows the
module's device and dtype: ``Noise(8).double()(4).c`` is float64.
"""

from __future__ import annotations

import difflib
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Sequence
from enum import Enum
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from hyperdnn._checks import check_choice, check_float, check_int
from hyperdnn._factories import factory_registry

__all__ = [
    "Conditioned",
    "Conditioner",
    "Execution",
    "NORM_STATS_POLICIES",
    "check_conditioner",
    "TaskEmbedding",
    "DataEncoder",
    "Noise",
    "Continuous",
    "LearnedLatent",
    "SetEncoder",
    "DescriptionEncoder",
    "register_conditioner",
    "create_conditioner",
    "list_conditioners",
]

NORM_STATS_POLICIES = ("per_context", "batch", "shared")
"""Values of :attr:`Conditioner.norm_stats_policy`."""


class Execution(str, Enum):
    """How the weights generated for a context meet the target's input.

    * ``SHARED`` - one weight set for the whole input batch (an unbatched context);
    * ``PER_SAMPLE`` - one weight set per input sample: ``B`` contexts, ``B`` samples;
    * ``ENSEMBLE`` - ``K`` weight sets on one shared batch of ``N`` (noise samples,
      preference rays): outputs ``(K, N, ...)``.

    The values are the names :meth:`~hyperdnn.target.Target.run` takes as ``mode``.
    """

    SHARED = "shared"
    PER_SAMPLE = "per_sample"
    ENSEMBLE = "ensemble"


class Conditioned(NamedTuple):
    """A conditioner's output: ``c`` is ``(B, out_features)``; ``batched`` says whether the
    user's context had a batch dim (if not, generated weights have none either)."""

    c: torch.Tensor
    batched: bool


class Conditioner(nn.Module, ABC):
    """Abstract conditioner: the hypernetwork's input, and how its contexts are run.

    A subclass sets ``out_features`` and implements :meth:`forward`, :meth:`probe` and
    :meth:`execution`. :class:`~hyperdnn.hypernet.HyperModel` asks only these and two class
    attributes a subclass may set:

    * ``reads_input`` (default ``False``): the context is the target's own input ``x``
      (``model(x)`` passes ``x`` as the context; there is no single network to export);
    * ``norm_stats_policy`` (default ``"batch"``): what ``HyperModel(..., norm_stats="auto")``
      uses for a target with BatchNorm running statistics: ``"per_context"`` (a copy per
      context key: the contexts are a small set of keys, such as task ids; implement
      :meth:`context_keys`), ``"batch"`` (each batch's own statistics: contexts vary
      continuously) or ``"shared"`` (the module's own: one context).

    Example::

        >>> import torch
        >>> from hyperdnn import Conditioned, Conditioner, Execution
        >>> class Scalar(Conditioner):            # a context of one number per weight set
        ...     out_features = 1
        ...     def forward(self, context):
        ...         c = torch.as_tensor(context, dtype=torch.float32)
        ...         return Conditioned(c.reshape(-1, 1), c.dim() == 1)
        ...     def probe(self, n):
        ...         return torch.linspace(0, 1, n)
        ...     def execution(self, batched):
        ...         return Execution.ENSEMBLE if batched else Execution.SHARED
        >>> Scalar().execution(True)
        <Execution.ENSEMBLE: 'ensemble'>
    """

    out_features: int
    reads_input: ClassVar[bool] = False
    norm_stats_policy: ClassVar[str] = "batch"

    @abstractmethod
    def forward(self, context: Any) -> Conditioned:
        """Map the user's context to :class:`Conditioned`."""

    @abstractmethod
    def probe(self, n: int) -> Any:
        """A representative context of ``n`` items, used to calibrate initialisation;
        ``None`` when the conditioner cannot make one (e.g. a data encoder of unknown input)."""

    @abstractmethod
    def execution(self, batched: bool) -> Execution:
        """How the weights of a context run against the target's input.

        Args:
            batched: whether the context was batched (``Conditioned.batched``).

        Returns:
            ``SHARED`` for an unbatched context (one weight set); for a batched one of ``B``
            items, ``PER_SAMPLE`` (item ``b`` for input sample ``b``) or ``ENSEMBLE`` (every
            item on the whole input batch).
        """

    def context_keys(self, context: Any) -> torch.Tensor:
        """The key of each context item for per-context BatchNorm statistics: int64 ``(B,)``
        (``(1,)`` for an unbatched context). Needed when :attr:`norm_stats_policy` is
        ``"per_context"``.

        Raises:
            TypeError: this conditioner's contexts have no keys.
        """
        raise TypeError(
            f"{type(self).__name__}: its contexts have no keys for per-context statistics (its "
            f"norm_stats_policy is {self.norm_stats_policy!r}); a conditioner with policy 'per_context' "
            "implements context_keys(context)"
        )


CONDITIONERS, register_conditioner, create_conditioner, list_conditioners = factory_registry(
    "conditioner", Conditioner, "hyperdnn.conditioners"
)
"""``register_conditioner(name, factory)`` (or ``@register_conditioner(name)``), ``create_conditioner(name, **kwargs)``,
``list_conditioners(pattern=None)``: conditioner factories by name (see :mod:`hyperdnn._factories`)."""


@register_conditioner("task_embedding")
class TaskEmbedding(Conditioner):
    """A learned embedding per task (task-conditioned hypernets; static inputs).

    Args:
        num_tasks: number of tasks at the start.
        dim: embedding size.
        init_std: standard deviation of new embeddings.

    Context: a task id (an ``int``: unbatched weights), or task ids ``(B,)`` as a
    ``LongTensor`` or a list of ints (``[0, 2]`` works like ``torch.tensor([0, 2])``).
    :meth:`task_ids` is the validation both go through. A batched context runs per sample;
    task ids are the keys of per-context BatchNorm statistics.

    Each task is its own parameter and a call stacks only the tasks it uses, so other tasks
    get no gradient at all (``None``, not a zero that optimizer momentum would act on).
    :meth:`add_tasks` grows the table and keeps existing embeddings exactly; an optimizer built
    before that call does not see the new embeddings unless it is passed as ``optimizer=``.

    Under ``torch.compile`` an ``int`` task id reads one of these parameters, so each task id
    compiles a graph of its own (the price of giving other tasks no gradient). ``torch._dynamo``
    recompiles a function at most ``torch._dynamo.config.recompile_limit`` times (8 by default;
    with ``fullgraph=True`` the next task raises, otherwise it runs eagerly): with more tasks,
    raise that limit to the number of tasks before the first call.

    Example::

        >>> import torch
        >>> from hyperdnn import TaskEmbedding
        >>> cond = TaskEmbedding(num_tasks=2, dim=4)
        >>> opt = torch.optim.SGD(cond.parameters(), lr=0.1)
        >>> cond.add_tasks(1, optimizer=opt, generator=torch.Generator().manual_seed(0))
        [2]
        >>> len(opt.param_groups)   # the new task trains with the old tasks' settings
        2
    """

    norm_stats_policy = "per_context"

    def __init__(self, num_tasks: int, dim: int, init_std: float = 1.0):
        super().__init__()
        check_int("TaskEmbedding", "num_tasks", num_tasks)
        check_int("TaskEmbedding", "dim", dim)
        self.init_std = check_float("TaskEmbedding", "init_std", init_std, 0.0)
        self.out_features = dim
        self.embeddings = nn.ParameterList([nn.Parameter(torch.randn(dim) * init_std) for _ in range(num_tasks)])

    @property
    def num_tasks(self) -> int:
        """Current number of tasks."""
        return len(self.embeddings)

    @property
    def weight(self) -> torch.Tensor:
        """All embeddings stacked ``(num_tasks, dim)``."""
        return torch.stack(list(self.embeddings))

    def add_tasks(
        self,
        n: int = 1,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        generator: torch.Generator | None = None,
    ) -> list[int]:
        """Append ``n`` new task embeddings and return their ids.

        Existing embeddings are untouched (each task is its own parameter, so an optimizer
        over the old ones stays valid). The new embeddings are new parameters: an optimizer
        built before this call does not update them. Pass it as ``optimizer`` and they are
        added to it as one parameter group with the settings (learning rate, weight decay...)
        of the group that holds task 0's embedding, or the optimizer's defaults if no group
        does; or add ``[cond.embeddings[i] for i in ids]`` yourself.

        Args:
            n: number of tasks to add.
            optimizer: an optimizer to add the new embeddings to.
            generator: the random generator to draw the new embeddings from ``N(0, init_std^2)``
                (default: the global one); drawn on the generator's device, then moved to the
                embeddings' device and dtype.

        Returns:
            The new task ids ``[num_tasks, ..., num_tasks + n - 1]``.

        On bad input nothing changes: neither the table nor the optimizer.
        """
        check_int("TaskEmbedding.add_tasks", "n", n)
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"TaskEmbedding.add_tasks: optimizer must be a torch.optim.Optimizer or None, "
                f"got {type(optimizer).__name__}"
            )
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"TaskEmbedding.add_tasks: generator must be a torch.Generator or None, got {type(generator).__name__}"
            )
        ref = self.embeddings[0]
        new = []
        for _ in range(n):
            if generator is None:
                draw = torch.randn(self.out_features, device=ref.device, dtype=ref.dtype)
            else:
                draw = torch.randn(self.out_features, generator=generator, device=generator.device, dtype=ref.dtype)
            new.append(nn.Parameter((draw * self.init_std).to(ref.device)))
        if optimizer is not None:
            template = next((g for g in optimizer.param_groups if any(p is ref for p in g["params"])), None)
            group = {k: v for k, v in (template or {}).items() if k not in ("params", "param_names")}
            if template is not None and "param_names" in template:
                # an optimizer built from named_parameters(): name the new embeddings as task
                # 0's is named there ("...embeddings.0" -> "...embeddings.<id>")
                first = template["param_names"][next(i for i, p in enumerate(template["params"]) if p is ref)]
                stem = first[:-1] if first.endswith(".0") else first + "."
                group["param_names"] = [f"{stem}{self.num_tasks + i}" for i in range(n)]
            optimizer.add_param_group({**group, "params": new})
        start = self.num_tasks
        self.embeddings.extend(new)
        return list(range(start, start + n))

    def task_ids(self, context: int | Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Validate a task context: the ids as an int64 tensor ``(B,)`` and whether the context
        was batched (an ``int`` or a 0-d tensor is one unbatched task, ids ``(1,)``).

        Raises:
            TypeError: not an int, a list of ints or an integer tensor.
            ValueError: an id outside ``[0, num_tasks - 1]``, no ids, or a tensor of 2+ dims.
        """
        if isinstance(context, numbers.Integral) and not isinstance(context, bool):
            ids, batched = torch.tensor([int(context)]), False
        elif isinstance(context, (list, tuple)):
            bad = [t for t in context if isinstance(t, bool) or not isinstance(t, numbers.Integral)]
            if bad:
                raise TypeError(f"TaskEmbedding: expected a list of int task ids, got {context!r}")
            ids, batched = torch.tensor([int(t) for t in context], dtype=torch.long), True
        elif isinstance(context, torch.Tensor):
            if context.dtype.is_floating_point or context.dtype.is_complex or context.dtype == torch.bool:
                raise TypeError(f"TaskEmbedding: expected integer task ids, got a tensor of dtype {context.dtype}")
            if context.dim() > 1:
                raise ValueError(f"TaskEmbedding: expected task ids of shape (B,), got {tuple(context.shape)}")
            ids, batched = context.reshape(-1).long(), context.dim() == 1
        else:
            raise TypeError(
                "TaskEmbedding: expected a task id (int), a list of ids or a LongTensor of ids, "
                f"got {type(context).__name__}"
            )
        if not ids.numel():
            raise ValueError("TaskEmbedding: expected at least one task id, got none")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.num_tasks:
            raise ValueError(
                f"TaskEmbedding: task ids must be in [0, {self.num_tasks - 1}], got "
                f"{lo if lo < 0 else hi} (call add_tasks to grow the table)"
            )
        return ids, batched

    def forward(self, context: int | Sequence[int] | torch.Tensor) -> Conditioned:
        if type(context) is int and context >= 0:  # one task: a direct lookup
            if not torch.compiler.is_compiling():
                # eager: ParameterList keeps entry i as parameter "i"
                e = self._modules["embeddings"]._parameters.get(str(context))
                if e is not None:
                    return Conditioned(e.unsqueeze(0), False)
            elif context < len(self.embeddings):
                return Conditioned(self.embeddings[context].unsqueeze(0), False)
        ids, batched = self.task_ids(context)
        # Stack only the tasks in use: unused embeddings get no gradient at all (not a zero
        # one), so optimizer momentum never moves the embeddings of other tasks.
        uniq = torch.unique(ids)
        table = torch.stack([self.embeddings[i] for i in uniq.tolist()])
        pos = torch.searchsorted(uniq, ids)
        return Conditioned(table[pos.to(table.device)], batched)

    def probe(self, n: int) -> torch.Tensor:
        return torch.arange(self.num_tasks)

    def execution(self, batched: bool) -> Execution:
        return Execution.PER_SAMPLE if batched else Execution.SHARED

    def context_keys(self, context: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The task ids of ``context``, int64 ``(B,)`` (validated by :meth:`task_ids`)."""
        return self.task_ids(context)[0]


@register_conditioner("data_encoder")
class DataEncoder(Conditioner):
    """Encode the target's own input (data-conditioned, dynamic inputs): ``c = encoder(x)``.

    Args:
        encoder: any module mapping a batch of inputs to ``(B, out_features)``.
        out_features: the encoder's output width.
        example_input: optional example batch, used to calibrate initialisation.

    Context: the input batch ``x`` (``HyperModel`` passes it when no context is given).
    Weights are always batched, one set per sample. The example input is a (non-persistent)
    buffer, so it follows ``.to()``.
    """

    reads_input = True

    def __init__(self, encoder: nn.Module, out_features: int, example_input: torch.Tensor | None = None):
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"DataEncoder: expected an nn.Module encoder, got {type(encoder).__name__}")
        check_int("DataEncoder", "out_features", out_features)
        if example_input is not None and not isinstance(example_input, torch.Tensor):
            raise TypeError(
                f"DataEncoder: example_input must be a tensor batch or None, got {type(example_input).__name__}"
            )
        self.encoder = encoder
        self.out_features = out_features
        self.register_buffer("_example", example_input, persistent=False)

    def forward(self, context: torch.Tensor) -> Conditioned:
        if not isinstance(context, torch.Tensor):
            raise TypeError(f"DataEncoder: expected an input tensor, got {type(context).__name__}")
        c = self.encoder(context)
        if c.dim() != 2 or c.shape[1] != self.out_features:
            raise ValueError(
                f"DataEncoder: the encoder must return (B, {self.out_features}), returned {tuple(c.shape)}"
            )
        return Conditioned(c, True)

    def probe(self, n: int) -> torch.Tensor | None:
        return None if self._example is None else self._example[:n]

    def execution(self, batched: bool) -> Execution:
        return Execution.PER_SAMPLE


@register_conditioner("noise")
class Noise(Conditioner):
    """Gaussian noise input (noise-conditioned hypernets: draw K weight sets).

    Args:
        dim: noise size.

    Context: an ``int`` K (draw K samples from the global RNG; :meth:`sample` takes a
    ``generator``) or a noise tensor ``(K, dim)`` / ``(dim,)``. K samples run as an ensemble
    on the whole input batch (outputs ``(K, N, ...)``); one ``(dim,)`` vector runs shared.

    Drawn noise has the module's device and dtype (``.to()``, ``.double()`` move it).
    """

    def __init__(self, dim: int):
        super().__init__()
        check_int("Noise", "dim", dim)
        self.out_features = dim
        # an empty floating-point buffer: it follows .to(), so it carries the module's device and dtype
        self.register_buffer("_device_probe", torch.zeros(0), persistent=False)

    def sample(self, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``(k, dim)`` standard normal noise on the module's device, in its dtype.

        Args:
            k: number of samples.
            generator: the random generator (default: the global one of the module's device);
                the noise is drawn on the generator's device and moved to the module's.
        """
        check_int("Noise.sample", "k", k)
        probe = self._device_probe
        if generator is None:
            return torch.randn(k, self.out_features, device=probe.device, dtype=probe.dtype)
        if not isinstance(generator, torch.Generator):
            raise TypeError(
                f"Noise.sample: generator must be a torch.Generator or None, got {type(generator).__name__}"
            )
        noise = torch.randn(k, self.out_features, generator=generator, device=generator.device, dtype=probe.dtype)
        return noise.to(probe.device)

    def forward(self, context: int | torch.Tensor) -> Conditioned:
        if isinstance(context, bool):
            raise TypeError("Noise: expected a sample count (int) or a noise tensor, got bool")
        if isinstance(context, numbers.Integral):
            context = int(context)  # a NumPy integer too
            if context < 1:
                raise ValueError(f"Noise: the number of samples must be >= 1, got {context}")
            return Conditioned(self.sample(context), True)
        if not isinstance(context, torch.Tensor):
            raise TypeError(f"Noise: expected a sample count (int) or a noise tensor, got {type(context).__name__}")
        if context.dim() not in (1, 2) or context.shape[-1] != self.out_features:
            raise ValueError(
                f"Noise: expected noise of shape (K, {self.out_features}) or ({self.out_features},), got {tuple(context.shape)}"
            )
        if context.dtype != self._device_probe.dtype:
            raise TypeError(
                f"Noise: expected noise of the module's dtype {self._device_probe.dtype}, got {context.dtype} "
                f"(convert the noise, or the model with .to(dtype))"
            )
        if context.dim() == 1:
            return Conditioned(context.unsqueeze(0), False)
        return Conditioned(context, True)

    def probe(self, n: int) -> int:
        return n

    def execution(self, batched: bool) -> Execution:
        return Execution.ENSEMBLE if batched else Execution.SHARED


def _bounds(name: str, value: Any, n: int) -> torch.Tensor:
    """``Continuous``'s ``low``/``high``: a finite number or ``n`` finite numbers, as ``(n,)``
    in the default dtype (as the module's other tensors; a float64 default keeps them exact)."""
    expected = f"a finite number or {n} finite numbers"
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.dtype.is_complex:
            raise TypeError(f"Continuous: {name} must be {expected}, got a tensor of dtype {value.dtype}")
        values = value.detach().cpu().to(torch.float64).reshape(-1)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        values = torch.tensor([float(value)], dtype=torch.float64)
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
            raise TypeError(f"Continuous: {name} must be {expected}, got {list(value)!r}")
        values = torch.tensor([float(v) for v in value], dtype=torch.float64)
    else:
        raise TypeError(f"Continuous: {name} must be {expected}, got {value!r} ({type(value).__name__})")
    if values.numel() not in (1, n) or (isinstance(value, torch.Tensor) and value.dim() > 1):
        raise ValueError(f"Continuous: {name} must be {expected}, got {values.numel()} numbers")
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"Continuous: {name} must be {expected}, got {value!r}")
    return values.expand(n).clone().to(torch.get_default_dtype())


@register_conditioner("continuous")
class Continuous(Conditioner):
    """Continuous context (hyper-parameters, preference vectors, loss weights).

    Args:
        in_features: width of the raw context.
        encoding: ``"identity"`` or ``"fourier"`` (sin/cos features at ``num_frequencies``
            octaves; useful when the hypernet must resolve small changes of a scalar).
        num_frequencies: octaves for the Fourier encoding.
        low, high: the expected range of each raw value, a number or ``in_features``
            numbers (used to standardise inputs to [-1, 1], and to draw calibration probes).
        execution: how ``B`` contexts run: ``"per_sample"`` (context ``b`` for input sample
            ``b``, e.g. a hyper-parameter per sample) or ``"ensemble"`` (all ``B`` on the whole
            input batch, e.g. ``K`` preference rays of a Pareto front: outputs ``(K, N, ...)``).

    Context: a float tensor ``(B, in_features)`` or ``(in_features,)`` (one context: shared),
    of the module's dtype.

    ``low``, ``high`` and the Fourier frequencies are stored in the default dtype at
    construction: for a float64 model, build it under ``torch.set_default_dtype(torch.float64)``
    (``.double()`` on a float32 module keeps their float32 rounding, which matters for bounds
    far from zero such as timestamps).

    Example::

        >>> import torch, torch.nn as nn
        >>> from hyperdnn import Continuous, HyperModel, HyperNetwork, Target
        >>> target = Target(nn.Linear(4, 2))
        >>> rays = Continuous(2, execution="ensemble")      # preference rays
        >>> model = HyperModel(HyperNetwork(target, rays), target)
        >>> model(torch.randn(7, 4), torch.rand(5, 2)).shape  # 5 rays on one batch of 7
        torch.Size([5, 7, 2])
    """

    def __init__(
        self,
        in_features: int,
        encoding: str = "identity",
        num_frequencies: int = 4,
        low: float | Sequence[float] = 0.0,
        high: float | Sequence[float] = 1.0,
        execution: str = "per_sample",
    ):
        super().__init__()
        check_int("Continuous", "in_features", in_features)
        check_choice("Continuous", "encoding", encoding, ("identity", "fourier"))
        self.batched_execution = Execution(
            check_choice("Continuous", "execution", execution, ("per_sample", "ensemble"))
        )
        check_int("Continuous", "num_frequencies", num_frequencies)
        self.in_features = in_features
        self.encoding = encoding
        self.num_frequencies = num_frequencies
        lo = _bounds("low", low, in_features)
        hi = _bounds("high", high, in_features)
        if not bool((hi > lo).all()):
            raise ValueError(f"Continuous: high must be > low for every input, got low={low}, high={high}")
        self.register_buffer("low", lo)
        self.register_buffer("high", hi)
        octaves = 2.0 ** torch.arange(num_frequencies, dtype=torch.float64)
        self.register_buffer("freqs", (octaves * math.pi).to(torch.get_default_dtype()))
        self.out_features = in_features if encoding == "identity" else in_features * (1 + 2 * num_frequencies)

    def forward(self, context: torch.Tensor) -> Conditioned:
        if not isinstance(context, torch.Tensor) or not context.dtype.is_floating_point:
            raise TypeError(
                f"Continuous: expected a float tensor, got {type(context).__name__ if not isinstance(context, torch.Tensor) else context.dtype}"
            )
        batched = context.dim() == 2
        if context.dim() not in (1, 2) or context.shape[-1] != self.in_features:
            raise ValueError(
                f"Continuous: expected a context of shape (B, {self.in_features}) or ({self.in_features},), "
                f"got {tuple(context.shape)}"
            )
        if context.dtype != self.low.dtype:
            raise TypeError(
                f"Continuous: expected a context of the module's dtype {self.low.dtype}, got {context.dtype} "
                f"(convert the context, or the model with .to(dtype))"
            )
        x = context.reshape(-1, self.in_features)
        z = 2 * (x - self.low) / (self.high - self.low) - 1
        if self.encoding == "fourier":
            a = z.unsqueeze(-1) * self.freqs
            z = torch.cat([z, torch.sin(a).flatten(1), torch.cos(a).flatten(1)], dim=1)
        return Conditioned(z, batched)

    def probe(self, n: int) -> torch.Tensor:
        """``n`` contexts uniform in ``[low, high]`` (a fixed draw), on the module's device and
        in its dtype."""
        g = torch.Generator().manual_seed(0)
        u = torch.rand(n, self.in_features, generator=g).to(self.low)
        return self.low + (self.high - self.low) * u

    def execution(self, batched: bool) -> Execution:
        return self.batched_execution if batched else Execution.SHARED

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, encoding={self.encoding!r}, execution={self.batched_execution.value!r}"


@register_conditioner("learned_latent")
class LearnedLatent(Conditioner):
    """A single learned code (a static hypernet with no input, e.g. for compression).

    Args:
        dim: code size.
        init_std: standard deviation of the initial code.

    Context: ``None``; weights are unbatched (one network: its BatchNorm statistics are the
    module's own).
    """

    norm_stats_policy = "shared"

    def __init__(self, dim: int, init_std: float = 1.0):
        super().__init__()
        check_int("LearnedLatent", "dim", dim)
        init_std = check_float("LearnedLatent", "init_std", init_std, 0.0)
        self.out_features = dim
        self.latent = nn.Parameter(torch.randn(dim) * init_std)

    def forward(self, context: None = None) -> Conditioned:
        if context is not None:
            raise TypeError(f"LearnedLatent: takes no context (None), got {type(context).__name__}")
        return Conditioned(self.latent.unsqueeze(0), False)

    def probe(self, n: int) -> None:
        return None

    def execution(self, batched: bool) -> Execution:
        return Execution.SHARED


class _AttentionPool(nn.Module):
    """Pooling by multi-head attention (Lee et al. 2019, PMA): a learned query attends over the
    items, ``(B, S, d)`` -> ``(B, d)``; padded items (``mask`` true) get no weight."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, dim) / math.sqrt(dim))
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, items: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        query = self.query.expand(items.shape[0], 1, -1)
        return self.attention(query, items, items, key_padding_mask=mask, need_weights=False)[0][:, 0]


def _pooling(where: str, pooling: str, dim: int, heads: int) -> _AttentionPool | None:
    check_choice(where, "pooling", pooling, ("mean", "attention"))
    check_int(where, "heads", heads)
    if pooling == "mean":
        return None
    if dim % heads:
        raise ValueError(f"{where}: heads must divide the pooled width {dim}, got heads={heads}")
    return _AttentionPool(dim, heads)


@register_conditioner("set_encoder")
class SetEncoder(Conditioner):
    """Encode a set, whatever its order: ``c = pool_i phi(x_i)`` (Deep Sets; attention pooling as
    in the Set Transformer). A support set in, the weights for that set out (few-shot learning).

    Args:
        item_encoder: ``phi``, any module mapping a batch of items ``(M, *item_shape)`` to
            ``(M, out_features)`` (a CNN for images, an MLP for vectors).
        out_features: the width of ``phi``'s output, which is also ``c``'s.
        item_shape: the shape of one item (``(1, 28, 28)``); it tells a set from a batch of sets.
        pooling: ``"mean"`` (the average of the items' codes) or ``"attention"`` (a learned
            query attends over them with ``heads`` heads); both ignore the order of the items.
        heads: attention heads (pooling ``"attention"``; they must divide ``out_features``).
        execution: how ``B`` sets run: ``"ensemble"`` (every set's weights on the whole input
            batch: one classifier per class set) or ``"per_sample"`` (set ``b`` for input
            sample ``b``).
        example_input: optional sets ``(B, S, *item_shape)``, used to calibrate initialisation.

    Context: one set ``(S, *item_shape)`` (shared weights), ``B`` sets of ``S`` items
    ``(B, S, *item_shape)`` (batched), or a list of ``B`` sets of their own sizes, tensors
    ``(S_b, *item_shape)`` (batched; support sets with unequal shots): each set is pooled over
    its own items only (padding gets no weight), and a list of equal-size sets gives exactly
    what the stacked tensor gives. A set needs at least one item, and items of ``item_shape``.
    The item encoder sees only real items (no padding), so its BatchNorm statistics are those
    of the items.

    Example::

        >>> import torch, torch.nn as nn
        >>> from hyperdnn import HyperModel, HyperNetwork, SetEncoder, Target
        >>> target = Target(nn.Linear(4, 1))                       # one class's scorer
        >>> sets = SetEncoder(nn.Linear(4, 8), 8, item_shape=(4,), pooling="attention", heads=2)
        >>> model = HyperModel(HyperNetwork(target, sets), target)
        >>> support = torch.randn(5, 3, 4)                          # 5 classes, 3 shots each
        >>> model(torch.randn(7, 4), support).shape                 # 5 scorers on 7 queries
        torch.Size([5, 7, 1])
        >>> shuffled = support[:, torch.randperm(3)]
        >>> torch.allclose(sets(shuffled).c, sets(support).c, atol=1e-6)
        True
        >>> ragged = [torch.randn(1, 4), torch.randn(4, 4)]          # 1 shot and 4 shots
        >>> model(torch.randn(7, 4), ragged).shape
        torch.Size([2, 7, 1])
    """

    def __init__(
        self,
        item_encoder: nn.Module,
        out_features: int,
        item_shape: Sequence[int],
        pooling: str = "mean",
        heads: int = 1,
        execution: str = "ensemble",
        example_input: torch.Tensor | None = None,
    ):
        super().__init__()
        where = "SetEncoder"
        if not isinstance(item_encoder, nn.Module):
            raise TypeError(f"{where}: expected an nn.Module item_encoder, got {type(item_encoder).__name__}")
        check_int(where, "out_features", out_features)
        shape_ok = isinstance(item_shape, Sequence) and not isinstance(item_shape, str) and len(item_shape) >= 1
        if not shape_ok or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in item_shape):
            raise ValueError(f"{where}: item_shape must be a non-empty sequence of ints >= 1, got {item_shape!r}")
        self.batched_execution = Execution(check_choice(where, "execution", execution, ("per_sample", "ensemble")))
        self.pool = _pooling(where, pooling, out_features, heads)
        self.item_encoder, self.out_features, self.pooling = item_encoder, out_features, pooling
        self.item_shape = tuple(item_shape)
        if example_input is not None:
            self.sets(example_input)  # refuse examples that are not sets of items
        self.register_buffer("_example", example_input, persistent=False)

    def sets(self, context: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Validate a context: the sets as ``(B, S, *item_shape)`` and whether it was batched.

        Raises:
            TypeError: not a floating-point tensor.
            ValueError: items not of ``item_shape``, or an empty set (naming the shapes).
        """
        if not isinstance(context, torch.Tensor) or not context.dtype.is_floating_point:
            got = (
                type(context).__name__
                if not isinstance(context, torch.Tensor)
                else f"a tensor of dtype {context.dtype}"
            )
            raise TypeError(f"SetEncoder: expected a float tensor of sets or a list of sets, got {got}")
        k = len(self.item_shape)
        item = ", ".join(map(str, self.item_shape))
        if context.dim() not in (k + 1, k + 2) or tuple(context.shape[-k:]) != self.item_shape:
            raise ValueError(
                f"SetEncoder: expected a set (S, {item}), sets (B, S, {item}) or a list of sets (S_b, {item}) "
                f"of items of shape {self.item_shape}, got {tuple(context.shape)}"
            )
        batched = context.dim() == k + 2
        sets = context if batched else context.unsqueeze(0)
        if sets.shape[1] == 0:
            raise ValueError(f"SetEncoder: a set needs at least one item, got sets of shape {tuple(context.shape)}")
        return sets, batched

    def ragged(self, context: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
        """Validate a list of sets of their own sizes: every item, concatenated
        ``(sum S_b, *item_shape)``, and the sizes ``[S_b]``.

        Raises:
            TypeError: an element that is not a floating-point tensor, or sets of different
                dtypes or devices.
            ValueError: an empty list, an empty set, or items not of ``item_shape`` (naming
                the set).
        """
        if len(context) == 0:
            raise ValueError("SetEncoder: expected a list of at least one set, got an empty list")
        item = ", ".join(map(str, self.item_shape))
        first = context[0]
        for b, one in enumerate(context):
            if not isinstance(one, torch.Tensor) or not one.dtype.is_floating_point:
                got = type(one).__name__ if not isinstance(one, torch.Tensor) else f"a tensor of dtype {one.dtype}"
                raise TypeError(f"SetEncoder: set {b} of the list must be a float tensor (S, {item}), got {got}")
            if one.dim() != len(self.item_shape) + 1 or tuple(one.shape[1:]) != self.item_shape:
                raise ValueError(f"SetEncoder: set {b} of the list must have shape (S, {item}), got {tuple(one.shape)}")
            if one.shape[0] == 0:
                raise ValueError(f"SetEncoder: a set needs at least one item, set {b} of the list has none")
            if one.dtype != first.dtype or one.device != first.device:
                raise TypeError(
                    f"SetEncoder: every set of the list must have set 0's dtype and device ({first.dtype}, "
                    f"{first.device}), set {b} has ({one.dtype}, {one.device})"
                )
        return torch.cat(list(context)), [one.shape[0] for one in context]

    def forward(self, context: torch.Tensor | Sequence[torch.Tensor]) -> Conditioned:
        if isinstance(context, (list, tuple)):
            items, sizes = self.ragged(context)
            batched = True
        else:
            sets, batched = self.sets(context)
            items, sizes = sets.flatten(0, 1), [sets.shape[1]] * sets.shape[0]
        B, M = len(sizes), items.shape[0]
        codes = self.item_encoder(items)
        if codes.dim() != 2 or codes.shape != (M, self.out_features):
            raise ValueError(
                f"SetEncoder: the item encoder must return ({M}, {self.out_features}) for {M} items, "
                f"returned {tuple(codes.shape)}"
            )
        if min(sizes) == max(sizes):  # equal sizes: no padding
            codes = codes.view(B, sizes[0], self.out_features)
            c = codes.mean(1) if self.pool is None else self.pool(codes)
            return Conditioned(c, batched)
        padded = nn.utils.rnn.pad_sequence(list(codes.split(sizes)), batch_first=True)  # (B, S_max, F)
        count = torch.tensor(sizes, device=codes.device)
        pad = torch.arange(padded.shape[1], device=codes.device) >= count.unsqueeze(1)  # (B, S_max)
        if self.pool is None:
            c = padded.sum(1) / count.unsqueeze(1).to(padded.dtype)  # padding is zero
        else:
            c = self.pool(padded, pad)
        return Conditioned(c, batched)

    def probe(self, n: int) -> torch.Tensor | None:
        return None if self._example is None else self._example[:n]

    def execution(self, batched: bool) -> Execution:
        return self.batched_execution if batched else Execution.SHARED

    def extra_repr(self) -> str:
        return f"item_shape={self.item_shape}, pooling={self.pooling!r}, execution={self.batched_execution.value!r}"


@register_conditioner("description_encoder")
class DescriptionEncoder(Conditioner):
    """Encode descriptions in words, whatever their order: each word of a fixed vocabulary has a
    learned embedding, and a description is the pool of its words' (mean or attention). A class
    description in, that class's weights out (zero-shot learning).

    Args:
        vocabulary: every word a description may use (distinct, without whitespace), e.g.
            ``ClassData.vocabulary``.
        dim: the embedding width, which is also ``c``'s.
        pooling: ``"mean"`` or ``"attention"`` (a learned query attends over the words).
        heads: attention heads (pooling ``"attention"``; they must divide ``dim``).
        execution: how ``B`` descriptions run: ``"ensemble"`` (every description's weights on
            the whole input batch: one classifier per class) or ``"per_sample"``.
        init_std: standard deviation of the initial embeddings.

    Context: one description, a string of whitespace-separated words (shared weights), or a
    list or tuple of ``B`` of them (batched). Every description needs a word, and every word
    must be in the vocabulary.

    Example::

        >>> import torch, torch.nn as nn
        >>> from hyperdnn import DescriptionEncoder, HyperModel, HyperNetwork, Target
        >>> words = ["colour:red", "colour:blue", "shape:round", "shape:square"]
        >>> target = Target(nn.Linear(6, 1))
        >>> model = HyperModel(HyperNetwork(target, DescriptionEncoder(words, 8)), target)
        >>> model(torch.randn(4, 6), ["colour:red shape:round", "colour:blue shape:square"]).shape
        torch.Size([2, 4, 1])
        >>> model.hypernet.conditioner("colour:red shape:rund")
        Traceback (most recent call last):
        ...
        ValueError: DescriptionEncoder: description 0 ('colour:red shape:rund') has a word outside the vocabulary: 'shape:rund' (did you mean 'shape:round'?); the vocabulary has 4 words
    """

    def __init__(
        self,
        vocabulary: Sequence[str],
        dim: int,
        pooling: str = "mean",
        heads: int = 1,
        execution: str = "ensemble",
        init_std: float = 1.0,
    ):
        super().__init__()
        where = "DescriptionEncoder"
        if isinstance(vocabulary, str) or not isinstance(vocabulary, Sequence):
            raise TypeError(f"{where}: vocabulary must be a sequence of words, got {type(vocabulary).__name__}")
        words = list(vocabulary)
        bad = [w for w in words if not isinstance(w, str) or not w or w.split() != [w]]
        if not words or bad or len(set(words)) != len(words):
            raise ValueError(
                f"{where}: vocabulary must be distinct words without whitespace, got "
                f"{'none' if not words else bad or [w for w in set(words) if words.count(w) > 1]}"
            )
        check_int(where, "dim", dim)
        init_std = check_float(where, "init_std", init_std, 0.0)
        self.batched_execution = Execution(check_choice(where, "execution", execution, ("per_sample", "ensemble")))
        self.pool = _pooling(where, pooling, dim, heads)
        self.vocabulary, self.out_features, self.pooling = tuple(words), dim, pooling
        self._index = {w: i for i, w in enumerate(words)}
        self.embedding = nn.Embedding(len(words), dim)
        with torch.no_grad():
            self.embedding.weight.normal_(0.0, init_std)

    def word_ids(self, context: str | Sequence[str]) -> tuple[list[list[int]], bool]:
        """Validate a context: each description's word indices, and whether it was batched.

        Raises:
            TypeError: not a string or a list or tuple of strings.
            ValueError: no descriptions, an empty description, or a word outside the
                vocabulary (naming the description, the word and close matches).
        """
        if isinstance(context, str):
            texts, batched = [context], False
        elif isinstance(context, (list, tuple)) and all(isinstance(t, str) for t in context):
            texts, batched = list(context), True
        else:
            got = type(context).__name__ if not isinstance(context, (list, tuple)) else f"a {type(context).__name__} with {[type(t).__name__ for t in context if not isinstance(t, str)][:1]}"  # fmt: skip
            raise TypeError(f"DescriptionEncoder: expected a description (str) or a list of them, got {got}")
        if not texts:
            raise ValueError("DescriptionEncoder: expected at least one description, got none")
        ids = []
        for i, text in enumerate(texts):
            words = text.split()
            if not words:
                raise ValueError(f"DescriptionEncoder: description {i} is empty ({text!r}); expected at least one word")
            unknown = [w for w in words if w not in self._index]
            if unknown:
                close = difflib.get_close_matches(unknown[0], self.vocabulary, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(
                    f"DescriptionEncoder: description {i} ({text!r}) has a word outside the vocabulary: "
                    f"{', '.join(map(repr, unknown))}{hint}; the vocabulary has {len(self.vocabulary)} words"
                )
            ids.append([self._index[w] for w in words])
        return ids, batched

    def forward(self, context: str | Sequence[str]) -> Conditioned:
        ids, batched = self.word_ids(context)
        longest = max(map(len, ids))
        device = self.embedding.weight.device
        padded = torch.tensor([row + [0] * (longest - len(row)) for row in ids], device=device)  # (B, L)
        pad = torch.tensor([[j >= len(row) for j in range(longest)] for row in ids], device=device)  # (B, L)
        words = self.embedding(padded)  # (B, L, dim)
        if self.pool is None:
            keep = (~pad).unsqueeze(-1).to(words.dtype)
            c = (words * keep).sum(1) / keep.sum(1)
        else:
            c = self.pool(words, pad)
        return Conditioned(c, batched)

    def probe(self, n: int) -> list[str]:
        """Single-word descriptions: the first ``n`` words of the vocabulary (cycled)."""
        return [self.vocabulary[i % len(self.vocabulary)] for i in range(n)]

    def execution(self, batched: bool) -> Execution:
        return self.batched_execution if batched else Execution.SHARED

    def extra_repr(self) -> str:
        return f"words={len(self.vocabulary)}, pooling={self.pooling!r}, execution={self.batched_execution.value!r}"


def check_conditioner(where: str, conditioner: Any) -> Conditioner:
    """``conditioner`` if it is a :class:`Conditioner` (else a ``TypeError`` naming ``where``)."""
    if not isinstance(conditioner, Conditioner):
        raise TypeError(f"{where}: conditioner must be a Conditioner, got {type(conditioner).__name__}")
    return conditioner
