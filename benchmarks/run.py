"""Run the hyperdnn benchmarks: hypernet cost against the static target, hand-written PyTorch and peers.

Usage::

    python benchmarks/run.py                      # full CPU run (make bench), a few minutes
    python benchmarks/run.py --quick              # smoke run, under 2 minutes (make bench-quick)
    python benchmarks/run.py --device cuda        # GPU (benchmarks/gpu.sh wraps it)
    python benchmarks/run.py --workloads W1,W3 --repeats 15
    python benchmarks/run.py --compiled           # eager and torch.compile'd variants side by side

Writes ``<out>/<date>-<device>[-quick][-<tag>].json`` and ``.md`` (and ``-w5.png`` when W5 ran);
``<out>`` is ``benchmarks/results`` (tracked: the published tables), or for ``--quick``
``benchmarks/results/quick`` (ignored by git), unless ``--out`` says otherwise.
Peers (hypnettorch, HyperLight) come from ``pip install -e '.[peers]'``; a missing one is
reported in every table, not skipped.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks import peers, report
from benchmarks.common import OPTIMIZERS, Config
from benchmarks.harness import machine_info, measure
from benchmarks.workloads import WORKLOADS, list_workloads
from hyperdnn.engine.config import build_config, describe, format_fields, load_config_file, option, parse_argv
from hyperdnn.engine.errors import UsageError

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
#: where --quick writes unless --out is given: smoke runs stay out of the tracked results (.gitignore)
QUICK_OUT = DEFAULT_OUT / "quick"
FULL = {"warmup": 3, "repeats": 10, "steps": 5}
QUICK = {"warmup": 2, "repeats": 3, "steps": 3}


@dataclass
class BenchOptions:
    """The options of ``benchmarks/run.py``: a typed config of the recipe engine, so the command
    line is checked as ``hyperdnn run``'s is (``--key value``, ``--flag``, ``--config file.yaml``,
    types, choices and ranges, unknown keys with a did-you-mean) and ``--help`` lists them."""

    quick: bool = option(False, "fewer rounds and W5 sizes: a smoke run under 2 minutes")
    device: str = option("cpu", "where to run", choices=("cpu", "cuda"))
    workloads: tuple[str, ...] = option(tuple(list_workloads()), "the workloads to run (default all)")
    repeats: int | None = option(None, "interleaved timing rounds (default 10; --quick 3)", low=1)
    steps: int | None = option(None, "timed steps per variant per round (default 5; --quick 3)", low=1)
    warmup: int | None = option(None, "warm-up steps per variant (default 3; --quick 2)", low=1)
    optimizer: str = option("fused", "Adam implementation for every variant", choices=OPTIMIZERS)
    clock: str = option(
        "wall",
        "wall: elapsed time; cpu: process CPU time (steadier on a busy machine, --threads 1)",
        choices=("wall", "cpu"),
    )
    threads: int | None = option(None, "torch CPU threads (default torch's)", low=1)
    compiled: bool = option(
        False, "also time torch.compile'd hyperdnn and hand-written variants (CUDA: mode reduce-overhead)"
    )
    compile_backend: str = option(
        "inductor",
        "torch.compile backend of --compiled (aot_eager: a fast smoke run)",
        choices=("inductor", "aot_eager"),
    )
    no_peers: bool = option(False, "do not build hypnettorch / HyperLight variants")
    no_memory: bool = option(False, "skip the peak-memory pass")
    seed: int = option(0, "seed for data and initialisation")
    tag: str | None = option(None, "suffix for the result file names (e.g. t1-cpuclock)")
    out: str | None = option(
        None, "results folder (default benchmarks/results; --quick: benchmarks/results/quick, which git ignores)"
    )

    def __post_init__(self) -> None:
        names = [w.strip().upper() for w in self.workloads if w.strip()]
        unknown = [w for w in names if w not in WORKLOADS]
        if not names or unknown:
            raise ValueError(
                f"--workloads: expected some of {','.join(list_workloads())}, got {','.join(self.workloads) or 'none'}"
            )
        self.workloads = tuple(dict.fromkeys(names))
        if self.tag is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", self.tag):
            raise ValueError(f"--tag: expected letters, digits, '-' and '_', got {self.tag!r}")
        if self.device == "cuda" and self.clock == "cpu":
            raise ValueError("--clock cpu measures host CPU time; on --device cuda use the default --clock wall")


def parse_options(argv: list[str]) -> BenchOptions:
    """The options of ``argv`` (``--config file.yaml`` first, then the command line).

    Raises:
        ConfigError: an unknown option (with a did-you-mean), a wrong type, choice or range, in
            one line naming the option, what was expected and what was given.
    """
    values, config_path = parse_argv(argv, describe(BenchOptions))
    if config_path is not None:
        values = {**load_config_file(config_path), **values}
    return build_config(BenchOptions, values)


def usage() -> str:
    """The ``--help`` text."""
    return (
        f"usage: python benchmarks/run.py [--key value ...] [--config file.yaml]\n\n{__doc__}\noptions:\n"
        + format_fields(describe(BenchOptions))
    )


def output_folder(args: BenchOptions) -> Path:
    """``--out``, else :data:`QUICK_OUT` for ``--quick`` (ignored by git), else :data:`DEFAULT_OUT`."""
    if args.out is not None:
        return Path(args.out)
    return QUICK_OUT if args.quick else DEFAULT_OUT


def run(args: BenchOptions, log=print) -> dict[str, Any]:
    """Run the selected workloads; returns the result record (also written to ``args.out``)."""
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = QUICK if args.quick else FULL
    warmup = args.warmup or preset["warmup"]
    repeats = args.repeats or preset["repeats"]
    steps = args.steps or preset["steps"]
    compile_mode = (
        "reduce-overhead" if args.compiled and device.type == "cuda" and args.compile_backend == "inductor" else None
    )
    cfg = Config(
        device=device,
        optimizer=args.optimizer,
        quick=args.quick,
        peers=not args.no_peers,
        seed=args.seed,
        compile_backend=args.compile_backend if args.compiled else None,
        compile_mode=compile_mode,
    )
    started = time.time()
    date = _dt.date.today().isoformat()
    result: dict[str, Any] = {
        "meta": {
            "date": date,
            "device": device.type,
            "quick": args.quick,
            "optimizer": args.optimizer,
            "clock": args.clock,
            "compiled": {"backend": cfg.compile_backend, "mode": compile_mode} if args.compiled else None,
            "warmup": warmup,
            "repeats": repeats,
            "steps": steps,
            "workloads": list(args.workloads),
            "machine": machine_info(device),
            "peers": peers.all_status()
            if cfg.peers
            else {n: {"available": False, "version": None, "error": "--no-peers"} for n in peers.PEERS},
            "load_before": _load(),
        },
        "workloads": {},
    }
    load, cpus = _load(), os.cpu_count() or 1
    if load and load[0] > max(0.5, 0.25 * cpus) and torch.get_num_threads() > 1 and args.clock == "wall":
        log(
            f"note: load average {load[0]} on {cpus} CPUs before starting: other processes compete for the "
            f"cores, and {torch.get_num_threads()} torch threads can then run many times slower; "
            "for steadier ratios use --threads 1 --clock cpu, for the official table a quiet machine"
        )
    for name, st in result["meta"]["peers"].items():
        log(f"peer {name}: " + (f"{st['version']}" if st["available"] else f"NOT AVAILABLE - {st['error']}"))
    w5_parts: dict[str, dict[str, Any]] = {}
    for wname in args.workloads:
        workload = WORKLOADS[wname]
        for key, build in workload.parts(cfg):
            t0 = time.time()
            log(f"{key}: {workload.title}")
            built = build()
            ms = measure(
                built.variants,
                device,
                warmup=warmup,
                rounds=repeats,
                steps=steps,
                memory=not args.no_memory,
                clock=args.clock,
                log=log,
            )
            used = report.fill_ratios(ms, built.baseline)
            static = next((m for m in ms if m.name == used["static"] and m.status == "ok"), None)
            entry: dict[str, Any] = {
                "title": workload.title,
                "info": built.info,
                "baseline": used,
                "variants": [m.as_dict() for m in ms],
                "checks": report.checks(key, ms, result["meta"]["peers"], device.type),
            }
            if built.extra is not None:
                entry["extra"] = built.extra()
            result["workloads"][key] = entry
            if wname == "W5":
                w5_parts[key] = entry
            for m in ms:
                if m.status == "ok":
                    medians = m.median_ms / static.median_ms if static is not None and static.median_ms else None
                    log(
                        f"    {m.name:<28} {m.median_ms:9.2f} ms  x static {report._fmt(m.ratio_static)} paired"
                        f" ({report._fmt(medians)} from the medians)  x hand-written {report._fmt(m.ratio_reference)}"
                    )
                    if m.compiled:
                        log(f"    {'':<28} first step (compilation included) {report._fmt(m.first_step_s, '.1f')} s")
                else:
                    log(f"    {m.name:<28} {m.status}: {m.error}")
            for c in entry["checks"]:
                log(f"    target {c['check']}: {report._fmt(c['value'], '.3f')} (bar {c['bar']}) holds={c['holds']}")
            log(f"    ({time.time() - t0:.1f} s)")
            del built, ms
    out = output_folder(args)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{date}-{device.type}" + ("-quick" if args.quick else "") + (f"-{args.tag}" if args.tag else "")
    if w5_parts:
        sc = report.scaling(w5_parts)
        sc["plot"] = None
        if len(w5_parts) > 1:
            png = report.plot_scaling(sc["series"], str(out / f"{stem}-w5.png"), device.type)
            sc["plot"] = Path(png).name if png else None
        result["scaling"] = sc
        for c in sc["checks"]:
            log(f"W5 target {c['check']}: {report._fmt(c['value'], '.3f')} (bar {c['bar']}) holds={c['holds']}")
    result["meta"]["load_after"] = _load()
    result["meta"]["seconds"] = round(time.time() - started, 1)
    (out / f"{stem}.json").write_text(json.dumps(_clean(result), indent=1))
    (out / f"{stem}.md").write_text(report.markdown(result))
    log(f"wrote {out / (stem + '.json')} and .md in {result['meta']['seconds']} s")
    return result


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _clean(o: Any) -> Any:
    """JSON-safe copy: NaN and infinities become null."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if o is None or isinstance(o, (str, int, bool)):
        return o
    return str(o)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print(usage())
        return 0
    try:
        args = parse_options(argv)
        if args.device == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"--device cuda: torch {torch.__version__} sees no CUDA device")
    except UsageError as e:
        print(f"benchmarks/run.py: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    try:
        run(args)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
