"""Data-parallel runs under ``torchrun``: the process group, each process's share of a
minibatch, and ``DistributedDataParallel`` around the trained modules.

``torchrun --nproc_per_node=N -m hyperdnn.cli run <recipe> ...`` starts N processes with
``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set;
:func:`world_from_env` reads them and :func:`init_world` joins the process group on the
``env://`` rendezvous torchrun provides (gloo on the CPU, NCCL on CUDA, where each process uses
``cuda:LOCAL_RANK``). A run of one process (no torchrun, or ``--nproc_per_node=1``) has a world
of size 1 and no process group: everything below is then the identity.

Every process trains on the same *global* minibatch as a single process would: the recipe
takes its rows with :meth:`Share.rows` (a contiguous slice of about ``batch / N`` of them), and
the gradients of the modules prepared with :func:`wrap` are summed across processes with each
one weighted by its share of the rows (a DDP communication hook; or, for training that does not run through one module's
forward, an optimizer hook: :func:`reduce_on_step`). For a loss that is a mean
over the rows this is exactly the gradient of the mean over the global batch, also where the
batch does not split evenly; so the weights after a data-parallel run equal a single-process
run with the same global batch, up to float rounding.

Example (one process: the identity)::

    >>> import torch
    >>> from hyperdnn.engine.distributed import World, Share
    >>> Share(World()).rows(torch.arange(6)).tolist()
    [0, 1, 2, 3, 4, 5]
    >>> Share(World(rank=1, size=2, local_rank=1)).rows(torch.arange(5)).tolist()
    [3, 4]
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from hyperdnn.engine.errors import UsageError

__all__ = [
    "TORCHRUN_ENV",
    "World",
    "Share",
    "world_from_env",
    "backend_for",
    "init_world",
    "close_world",
    "wrap",
    "reduce_on_step",
]

#: the variables torchrun sets for every process it starts (all or none must be present)
TORCHRUN_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK")

#: how long a process waits for the others (rendezvous, collectives) before it gives up
TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class World:
    """The processes of a run: this one's ``rank`` among ``size``, and its ``local_rank`` on
    its machine (which GPU it uses). The default is a run of one process."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that logs and writes the run folder."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        """Whether the run has more than one process."""
        return self.size > 1


def world_from_env(environ: Mapping[str, str] | None = None) -> World:
    """The :class:`World` torchrun describes in the environment (a world of one without it).

    Args:
        environ: the variables to read (default ``os.environ``).

    Raises:
        UsageError: some of ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` are set and others not,
            or they are not integers with ``0 <= RANK < WORLD_SIZE`` and ``0 <= LOCAL_RANK``.
    """
    env = os.environ if environ is None else environ
    given = {k: env[k] for k in TORCHRUN_ENV if k in env}
    if not given:
        return World()
    if len(given) < len(TORCHRUN_ENV):
        missing = [k for k in TORCHRUN_ENV if k not in given]
        raise UsageError(
            f"torchrun: expected {', '.join(TORCHRUN_ENV)} all set (start the run with torchrun), "
            f"got {', '.join(f'{k}={v}' for k, v in given.items())} without {', '.join(missing)}"
        )
    try:
        size, rank, local = (int(given[k]) for k in TORCHRUN_ENV)
    except ValueError:
        raise UsageError(
            f"torchrun: expected integers in {', '.join(TORCHRUN_ENV)}, got "
            f"{', '.join(f'{k}={given[k]!r}' for k in TORCHRUN_ENV)}"
        ) from None
    if size < 1 or not 0 <= rank < size or local < 0:
        raise UsageError(
            f"torchrun: expected WORLD_SIZE >= 1, 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0, "
            f"got WORLD_SIZE={size}, RANK={rank}, LOCAL_RANK={local}"
        )
    return World(rank=rank, size=size, local_rank=local)


def backend_for(device: torch.device) -> str:
    """The collective backend for ``device``: NCCL on CUDA, gloo on the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_world(world: World, device: torch.device) -> bool:
    """Join the process group of ``world`` (a no-op for a world of one).

    Args:
        world: this process's place in the run.
        device: the device it computes on (chooses the backend).

    Returns:
        Whether this call created the process group (then :func:`close_world` ends it).

    Raises:
        UsageError: ``MASTER_ADDR`` or ``MASTER_PORT`` is missing (the run was not started by
            torchrun), or the other processes did not join in time.
    """
    import torch.distributed as dist

    if not world.parallel or (dist.is_available() and dist.is_initialized()):
        return False
    if not dist.is_available():  # pragma: no cover - every official build has it
        raise UsageError("torchrun: this build of torch has no torch.distributed")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise UsageError(f"torchrun: {' and '.join(missing)} not set; start data-parallel runs with torchrun")
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(backend, init_method="env://", rank=world.rank, world_size=world.size, timeout=TIMEOUT)
    except (RuntimeError, ValueError) as e:  # DistStoreError (a RuntimeError) on a rendezvous time-out
        first = " ".join(str(e).split())[:300]
        raise UsageError(f"torchrun: process {world.rank} of {world.size} could not join the others: {first}") from None
    return True


def close_world(created: bool) -> None:
    """End the process group :func:`init_world` created (nothing when it did not)."""
    import torch.distributed as dist

    if created and dist.is_initialized():
        dist.destroy_process_group()


class Share:
    """This process's share of each global minibatch, and the weight its gradients carry.

    :meth:`rows` gives rank ``r`` of ``N`` the ``r``-th of ``N`` contiguous, nearly equal
    slices of a global batch of row indices and records ``weight = rows_here / rows_global``,
    which the communication hook of the modules :func:`wrap` prepared multiplies the gradients
    by before they are summed across processes. A process whose slice would be empty (a batch
    of fewer rows than processes) trains on the batch's first row with weight 0.
    """

    def __init__(self, world: World):
        self.world = world
        self.weight = 1.0 / world.size  # plain averaging until rows() is first called

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """This process's rows of the global minibatch ``index``.

        Args:
            index: a 1-D integer tensor of row indices, the same on every process (for a
                boolean mask pass ``mask.nonzero().squeeze(1)``).

        Returns:
            ``index`` itself in a world of one; otherwise a contiguous slice of it.

        Raises:
            ValueError: ``index`` is not a 1-D integer tensor.
        """
        if (
            not isinstance(index, torch.Tensor)
            or index.dim() != 1
            or index.dtype.is_floating_point
            or index.dtype == torch.bool
        ):
            given = (
                f"{index.dtype} tensor of shape {tuple(index.shape)}"
                if isinstance(index, torch.Tensor)
                else type(index).__name__
            )
            raise ValueError(f"RunContext.shard: expected a 1-D tensor of integer row indices, got a {given}")
        if not self.world.parallel:
            return index
        total = len(index)
        mine = index.tensor_split(self.world.size)[self.world.rank]
        if len(mine) == 0 and total > 0:
            self.weight = 0.0
            return index[:1]
        self.weight = len(mine) / total if total else 1.0 / self.world.size
        return mine


def _weighted_sum_hook(share, bucket):  # noqa: ANN001, ANN202 - DDP refuses string annotations here
    """DDP communication hook: this process's gradients (``bucket``, a ``dist.GradBucket``)
    times its share, summed over all processes; returns a ``Future[Tensor]``."""
    import torch.distributed as dist

    buffer = bucket.buffer()
    buffer.mul_(share.weight)
    work = dist.all_reduce(buffer, op=dist.ReduceOp.SUM, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


def _frozen_names(module: nn.Module) -> list[str]:
    """Names of the parameters no optimizer trains: a hypernetwork's target copies of the
    tensors it generates (they never receive gradients)."""
    from hyperdnn.hypernet import HyperModel

    if not isinstance(module, HyperModel):
        return []
    trained = {id(p) for p in module.trainable_parameters()}
    return [n for n, p in module.named_parameters() if p.requires_grad and id(p) not in trained]


def wrap(module: nn.Module, share: Share, device: torch.device, find_unused: bool = False) -> nn.Module:
    """``module`` inside ``DistributedDataParallel`` for the world of ``share`` (the module
    itself in a world of one).

    Args:
        module: the trained module, already on ``device``; every process built it alike
            (DDP copies rank 0's parameters and buffers to the others when it wraps it).
        share: the run's :class:`Share` (its weights scale each process's gradients).
        device: the device it computes on.
        find_unused: let a step leave some trained parameters without gradients (DDP's
            ``find_unused_parameters``; slower).

    Returns:
        The module to call in training steps; the optimizer, ``state_dict`` and evaluation
        keep using ``module`` itself.
    """
    if not share.world.parallel:
        return module
    from torch.nn.parallel import DistributedDataParallel

    frozen = _frozen_names(module)
    if frozen:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, frozen)
    ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    ddp = DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)
    ddp.register_comm_hook(share, _weighted_sum_hook)
    return ddp


def _reduce_gradients(share: Share, optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
    """Optimizer step pre-hook: every parameter's gradient times this process's share, summed
    over all processes (one collective over the flattened gradients)."""
    import torch.distributed as dist

    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.detach().reshape(-1).float() for g in grads]).mul_(share.weight)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        n = p.numel()
        if p.grad is not None:  # the same parameters have gradients on every process
            p.grad.copy_(flat[offset : offset + n].view_as(p))
        offset += n


def reduce_on_step(optimizer: torch.optim.Optimizer, share: Share) -> torch.optim.Optimizer:
    """Make ``optimizer`` sum its parameters' gradients across the processes of ``share``'s
    world, each weighted by its share of the rows, right before every step (an optimizer step
    pre-hook; nothing in a world of one).

    For training steps that do not run through one module's forward (a learner's own
    ``train_step``, a hypernetwork called several times per step); where they do, :func:`wrap`
    overlaps the exchange with the backward pass instead. Use one or the other for a set of
    parameters, and change no gradient between the backward pass and the step (clipping
    there would see this process's gradients only).

    Args:
        optimizer: the optimizer over the trained parameters.
        share: the run's :class:`Share`.

    Returns:
        ``optimizer`` itself.
    """
    if share.world.parallel:
        import functools

        optimizer.register_step_pre_hook(functools.partial(_reduce_gradients, share))
    return optimizer
