"""Timing and memory: every variant of a workload interleaved with its static baseline.

A *step* is one training step: ``zero_grad`` + forward + loss + backward + optimizer step.
:func:`measure` warms every variant up (recording the wall time of its first step, which for a
compiled variant includes the compilation), then runs ``rounds`` rounds; each round times a block
of ``steps`` steps of every variant, in an order rotated from round to round, so that a
disturbance (another process, frequency scaling) hits all variants alike. Per variant it
reports the median step time over all timed steps and, for the ratios, the median over rounds
of the ratio of block medians taken in the same round (a paired estimate that survives load
better than a ratio of two medians).

Peak memory is measured in a separate pass, one variant at a time: on CPU the process's peak
resident set size (``VmHWM`` from ``/proc/self/status``, reset through ``/proc/self/clear_refs``
after ``malloc_trim`` returns freed memory), on GPU ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import ctypes
import gc
import math
import platform
import resource
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Variant", "Measurement", "measure", "peak_memory", "machine_info", "sync_fn"]

ROLES = ("static", "reference", "ours", "peer")
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclass
class Variant:
    """One way of running a workload.

    Attributes:
        name: short unique name within the workload (``"hyperdnn"``, ``"torch-baddbmm"``...).
        library: ``"torch"`` (hand-written), ``"hyperdnn"``, ``"hypnettorch"`` or ``"hyperlight"``.
        role: ``"static"`` (the plain target trained directly), ``"reference"`` (hand-written
            plain PyTorch hypernet), ``"ours"`` or ``"peer"``.
        step: one training step; ``None`` when the variant is unavailable.
        params: trainable parameters the optimizer updates.
        note: how the variant runs (shown in the table).
        error: why the variant is unavailable (missing peer, failed import or build, no
            support for the workload); such a variant is reported, never dropped.
        documented: for a peer, whether this is the way its documentation says to do it.
        compiled: the step runs under ``torch.compile`` (compared with the compiled
            hand-written variants; its first steps compile).
    """

    name: str
    library: str
    role: str
    step: Callable[[], Any] | None
    params: int = 0
    note: str = ""
    error: str | None = None
    documented: bool = False
    compiled: bool = False

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"Variant {self.name!r}: role must be one of {ROLES}, got {self.role!r}")
        if self.step is None and self.error is None:
            raise ValueError(f"Variant {self.name!r}: a variant without a step must say why (error)")


@dataclass
class Measurement:
    """Timing and memory of one variant; times in milliseconds."""

    name: str
    library: str
    role: str
    params: int
    note: str
    documented: bool
    compiled: bool = False
    status: str = "ok"  # "ok", "unavailable", "failed"
    error: str | None = None
    median_ms: float | None = None
    q1_ms: float | None = None
    q3_ms: float | None = None
    steps_timed: int = 0
    ratio_static: float | None = None
    ratio_reference: float | None = None
    peak_mb: float | None = None
    step_mb: float | None = None
    block_ms: list[float] = field(default_factory=list)
    first_step_s: float | None = None  # wall seconds of the first warm-up step (compilation included)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["block_ms"] = [round(b, 4) for b in self.block_ms]
        return d


def sync_fn(device: torch.device) -> Callable[[], None]:
    """A function that waits for queued device work (a no-op on CPU)."""
    if device.type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def _short_error(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}{where}: {msg}"[:300]


def measure(
    variants: list[Variant],
    device: torch.device,
    *,
    warmup: int,
    rounds: int,
    steps: int,
    memory: bool = True,
    clock: str = "wall",
    log: Callable[[str], None] = lambda s: None,
) -> list[Measurement]:
    """Time ``variants`` interleaved (see the module docstring); ratios are filled in by the caller.

    ``clock``: ``"wall"`` (``time.perf_counter``, the default and the only one on GPU) or
    ``"cpu"`` (``time.process_time``: CPU time of the whole process, which leaves out the time
    other processes hold the cores; meaningful with one torch thread on a busy machine).
    """
    if clock not in CLOCKS:
        raise ValueError(f"measure: clock must be one of {tuple(CLOCKS)}, got {clock!r}")
    now = CLOCKS[clock]
    sync = sync_fn(device)
    results = {
        v.name: Measurement(v.name, v.library, v.role, v.params, v.note, v.documented, v.compiled) for v in variants
    }
    live: list[Variant] = []
    for v in variants:
        m = results[v.name]
        if v.step is None:
            m.status, m.error = "unavailable", v.error
            continue
        try:
            t0 = time.perf_counter()
            v.step()
            sync()
            m.first_step_s = time.perf_counter() - t0
            for _ in range(warmup - 1):
                v.step()
            sync()
        except Exception as exc:  # a peer that breaks is reported, not hidden
            m.status, m.error = "failed", _short_error(exc)
            log(f"    {v.name}: failed in warm-up: {m.error}")
            continue
        live.append(v)
    times: dict[str, list[float]] = {v.name: [] for v in live}
    for r in range(rounds):
        order = live[r % len(live) :] + live[: r % len(live)] if live else []
        for v in order:
            block = []
            try:
                for _ in range(steps):
                    t0 = now()
                    v.step()
                    sync()
                    block.append((now() - t0) * 1e3)
            except Exception as exc:
                results[v.name].status, results[v.name].error = "failed", _short_error(exc)
                continue
            times[v.name] += block
            results[v.name].block_ms.append(statistics.median(block))
    for v in live:
        m = results[v.name]
        t = times[v.name]
        if m.status != "ok" or not t:
            continue
        q = statistics.quantiles(t, n=4) if len(t) > 1 else [t[0]] * 3
        m.median_ms, m.q1_ms, m.q3_ms, m.steps_timed = statistics.median(t), q[0], q[2], len(t)
    if memory:
        for v in live:
            m = results[v.name]
            if m.status != "ok":
                continue
            try:
                m.peak_mb, m.step_mb = peak_memory(v.step, device)
            except Exception as exc:
                m.status, m.error = "failed", _short_error(exc)
    return [results[v.name] for v in variants]


def paired_ratio(a: Measurement, b: Measurement) -> float | None:
    """Median over rounds of a's block median over b's block median from the same round."""
    if a.status != "ok" or b.status != "ok" or not a.block_ms or not b.block_ms:
        return None
    pairs = [x / y for x, y in zip(a.block_ms, b.block_ms) if y > 0]
    return statistics.median(pairs) if pairs else None


# ----------------------------------------------------------------------------- memory

_LIBC = None


def _malloc_trim() -> None:
    global _LIBC
    if sys.platform != "linux":
        return
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL("libc.so.6")
        _LIBC.malloc_trim(0)
    except OSError:
        pass


def _proc_status(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory(step: Callable[[], Any], device: torch.device, steps: int = 2) -> tuple[float, float]:
    """(peak MB, growth MB during the steps) over ``steps`` steps.

    CPU: peak resident set size of the process (includes the interpreter, torch and every
    live model) and its growth above the resident size before the steps. GPU: peak and
    growth of ``torch.cuda.memory_allocated``.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(device)
        return peak / 2**20, (peak - base) / 2**20
    _malloc_trim()
    base = _proc_status("VmRSS")
    if base is not None and _reset_peak_rss():
        for _ in range(steps):
            step()
        peak = _proc_status("VmHWM")
        if peak is not None:
            return peak, max(peak - base, 0.0)
    # no /proc: the process-wide peak so far (monotonic), growth unknown
    for _ in range(steps):
        step()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = rss / 2**20 if sys.platform == "darwin" else rss / 1024.0
    return peak, math.nan


# ----------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    import os

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gb"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
        info["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    return info
