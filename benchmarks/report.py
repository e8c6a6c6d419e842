"""Ratios, the issue's targets, markdown tables and the W5 scaling plot."""

from __future__ import annotations

import math
from typing import Any

from benchmarks.harness import Measurement, paired_ratio

# the issue's bars
REFERENCE_BAR = {"W1": 1.05, "W2": 1.05, "W4": 1.05, "W6": 1.05}
W3_REFERENCE_BAR = 1.1
W3_PEER_SPEEDUP = 5.0
W5_SLOPE_BAR = 1.05  # log-log slope; 1 is linear, the margin absorbs timing noise
#: weight generation at the largest W5 size (GPU) as a fraction of the measured matmul throughput
W5_MATMUL_FRACTION_BAR = 0.5
#: compiled hyperdnn / compiled hand-written, per device
COMPILED_BAR = {"cpu": 1.1, "cuda": 1.2}


def _ok(
    ms: list[Measurement], role: str | None = None, library: str | None = None, compiled: bool | None = False
) -> list[Measurement]:
    """Timed measurements of ``role`` and ``library``; eager ones only unless ``compiled`` says
    otherwise (``True``: compiled ones only, ``None``: both)."""
    return [
        m
        for m in ms
        if m.status == "ok"
        and m.median_ms is not None
        and (role is None or m.role == role)
        and (library is None or m.library == library)
        and (compiled is None or m.compiled == compiled)
    ]


def _best(ms: list[Measurement]) -> Measurement | None:
    return min(ms, key=lambda m: m.median_ms) if ms else None


def fill_ratios(ms: list[Measurement], baseline: str) -> dict[str, str | None]:
    """Set each measurement's ratio to the (eager) static baseline and to the best hand-written
    variant: an eager variant's to the best eager one, a compiled variant's to the best compiled one."""
    by = {m.name: m for m in ms}
    static = by.get(baseline)
    ref = _best(_ok(ms, "reference"))
    ref_c = _best(_ok(ms, "reference", compiled=True))
    for m in ms:
        if static is not None:
            m.ratio_static = paired_ratio(m, static)
        r = ref_c if m.compiled else ref
        if r is not None:
            m.ratio_reference = paired_ratio(m, r)
    used: dict[str, str | None] = {"static": baseline if static else None, "reference": ref.name if ref else None}
    if ref_c is not None:
        used["compiled_reference"] = ref_c.name
    return used


def _check(what: str, value: float | None, bar: float, op: str, detail: str) -> dict[str, Any]:
    if value is None:
        return {"check": what, "value": None, "bar": f"{op} {bar:g}", "holds": None, "detail": detail}
    holds = value <= bar if op == "<=" else value >= bar
    return {"check": what, "value": round(value, 3), "bar": f"{op} {bar:g}", "holds": holds, "detail": detail}


def compiled_checks(key: str, ms: list[Measurement], device: str) -> list[dict[str, Any]]:
    """Compiled hyperdnn against the compiled hand-written references (bar :data:`COMPILED_BAR`
    of the device), and on CUDA for W3 each peer's documented eager way against compiled hyperdnn."""
    ours = _best(_ok(ms, "ours", compiled=True))
    if ours is None:
        return []
    bar = COMPILED_BAR.get(device, COMPILED_BAR["cpu"])
    out = []
    refs = _ok(ms, "reference", compiled=True)
    ref = _best(refs)
    r = paired_ratio(ours, ref) if ref else None
    detail = f"{ours.name} vs {ref.name if ref else '-'}"
    out.append(_check("compiled hyperdnn / compiled hand-written", r, bar, "<=", detail))
    same = _best([m for m in refs if m.name.endswith("-hyperfan-compiled")])
    if same is not None:
        out.append(
            _check(
                "compiled hyperdnn / compiled hand-written with the hyperfan scale",
                paired_ratio(ours, same),
                bar,
                "<=",
                f"{ours.name} vs {same.name}: the same math by hand",
            )
        )
    if key == "W3" and device == "cuda":
        for lib in sorted({m.library for m in ms if m.role == "peer"}):
            doc = [m for m in ms if m.library == lib and m.documented and m.status == "ok"]
            value = paired_ratio(doc[0], ours) if doc else None
            why = doc[0].note if doc else "not run: no documented variant timed"
            out.append(_check(f"{lib} documented way (eager) / compiled hyperdnn", value, W3_PEER_SPEEDUP, ">=", why))
    return out


def checks(
    key: str, ms: list[Measurement], peer_status: dict[str, dict[str, Any]], device: str = "cpu"
) -> list[dict[str, Any]]:
    """The issue's targets for one workload (W5 is checked across sizes by :func:`scaling`),
    the compiled ones (:func:`compiled_checks`) after the eager ones."""
    return _eager_checks(key, ms, peer_status) + compiled_checks(key, ms, device)


def _eager_checks(key: str, ms: list[Measurement], peer_status: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    ours = _best(_ok(ms, "ours"))
    ref = _best(_ok(ms, "reference"))
    peers = sorted({m.library for m in ms if m.role == "peer"})
    if key == "W3":
        by = {m.name: m for m in ms}
        ours3 = by.get("hyperdnn")
        base = by.get("torch-baddbmm")
        r = paired_ratio(ours3, base) if ours3 and base else None
        out.append(_check("hyperdnn / hand-written baddbmm", r, W3_REFERENCE_BAR, "<=", "per-sample grouped path"))
        same = by.get("torch-baddbmm-hyperfan")
        if same is not None and ours3 is not None:
            out.append(
                _check(
                    "hyperdnn / hand-written baddbmm with the hyperfan scale",
                    paired_ratio(ours3, same),
                    W3_REFERENCE_BAR,
                    "<=",
                    "the same math by hand: library overhead alone",
                )
            )
        for lib in peers:
            doc = [m for m in ms if m.library == lib and m.documented]
            if doc and doc[0].status == "ok" and ours3 is not None:
                out.append(
                    _check(
                        f"{lib} documented way / hyperdnn",
                        paired_ratio(doc[0], ours3),
                        W3_PEER_SPEEDUP,
                        ">=",
                        doc[0].note,
                    )
                )
            else:
                why = doc[0].error if doc else "no documented variant"
                out.append(_check(f"{lib} documented way / hyperdnn", None, W3_PEER_SPEEDUP, ">=", f"not run: {why}"))
        return out
    if key in REFERENCE_BAR:
        r = paired_ratio(ours, ref) if ours and ref else None
        detail = f"{ours.name if ours else '-'} vs {ref.name if ref else '-'}"
        out.append(_check("best hyperdnn / best hand-written", r, REFERENCE_BAR[key], "<=", detail))
        same = _best([m for m in _ok(ms, "reference") if m.name.endswith("-hyperfan")])
        if same is not None and ours is not None:
            out.append(
                _check(
                    "best hyperdnn / hand-written with the hyperfan scale",
                    paired_ratio(ours, same),
                    REFERENCE_BAR[key],
                    "<=",
                    f"{ours.name} vs {same.name}: the same math by hand, library overhead alone",
                )
            )
        for lib in peers:
            best_peer = _best(_ok(ms, "peer", lib))
            if best_peer is None or ours is None:
                reasons = sorted({m.error or "" for m in ms if m.library == lib})
                out.append(_check(f"best hyperdnn / best {lib}", None, 1.0, "<=", "not run: " + "; ".join(reasons)))
                continue
            out.append(
                _check(
                    f"best hyperdnn / best {lib}",
                    paired_ratio(ours, best_peer),
                    1.0,
                    "<=",
                    f"{ours.name} vs {best_peer.name}",
                )
            )
    return out


def _slope(xs: list[float], ys: list[float]) -> float | None:
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x and y and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / den if den else None


def scaling(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """W5 across sizes: per variant, time and step-memory growth as log-log slopes."""
    rows: dict[str, list[tuple[int, float | None, float | None]]] = {}
    for part in parts.values():
        n = part["info"]["generated"]
        for m in part["variants"]:
            if m["status"] == "ok":
                rows.setdefault(m["name"], []).append((n, m["median_ms"], m["step_mb"]))
    series: dict[str, Any] = {}
    for name, pts in rows.items():
        pts.sort()
        xs = [p[0] for p in pts]
        series[name] = {
            "sizes": xs,
            "median_ms": [p[1] for p in pts],
            "step_mb": [p[2] for p in pts],
            "time_slope": _slope(xs, [p[1] for p in pts]),
            "memory_slope": _slope(xs, [p[2] for p in pts if p[2] is not None]),
            # the top of the range, where fixed costs no longer hide the growth
            "time_slope_top": _slope(xs[-2:], [p[1] for p in pts][-2:]),
            "memory_slope_top": _slope(xs[-2:], [p[2] for p in pts][-2:]) if None not in [p[2] for p in pts] else None,
        }
    generation: dict[str, Any] = {}
    for lib in ("hyperdnn", "torch"):
        pts = sorted(
            (p["info"]["generated"], p["extra"][f"{lib}_generation_ms"])
            for p in parts.values()
            if p.get("extra") and f"{lib}_generation_ms" in p["extra"]
        )
        if pts:
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            generation[lib] = {
                "sizes": xs,
                "ms": ys,
                "slope": _slope(xs, ys),
                "slope_top": _slope(xs[-2:], ys[-2:]),
            }
    ours = series.get("hyperdnn", {})
    out_checks = [
        _check(
            "hyperdnn step time slope (log-log, top two sizes)",
            ours.get("time_slope_top"),
            W5_SLOPE_BAR,
            "<=",
            "1 = linear in target size",
        ),
        _check(
            "hyperdnn step memory slope (log-log, top two sizes)",
            ours.get("memory_slope_top"),
            W5_SLOPE_BAR,
            "<=",
            "growth of resident (CPU) or allocated (GPU) memory during a step",
        ),
        _check(
            "hyperdnn weight generation time slope (forward, top two sizes)",
            generation.get("hyperdnn", {}).get("slope_top"),
            W5_SLOPE_BAR,
            "<=",
            "the hypernet alone, without the target",
        ),
    ]
    fractions = [
        (p["info"]["generated"], p["extra"])
        for p in parts.values()
        if p.get("extra") and "hyperdnn_fraction_of_matmul_fp32" in p["extra"]
    ]
    if fractions:
        n, extra = max(fractions, key=lambda f: f[0])
        for label in ("fp32", "tf32"):
            out_checks.append(
                _check(
                    f"hyperdnn weight generation / {label} matmul throughput (largest size)",
                    extra.get(f"hyperdnn_fraction_of_matmul_{label}"),
                    W5_MATMUL_FRACTION_BAR,
                    ">=",
                    f"{n:,} generated numbers; matmul {_fmt(extra.get(f'matmul_{label}_tflops'), '.1f')} TFLOP/s "
                    f"({extra.get('matmul_size')}x{extra.get('matmul_size')})",
                )
            )
    static = series.get("static", {})
    if static.get("time_slope_top") is not None:
        out_checks[0]["detail"] += f"; the static target alone: {static['time_slope_top']:.3f}"
    return {"series": series, "generation": generation, "checks": out_checks}


def plot_scaling(series: dict[str, Any], path: str, device: str) -> str | None:
    """Log-log plot of step time and step memory against target size; None if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, s in series.items():
        axes[0].loglog(s["sizes"], s["median_ms"], "o-", label=name)
        mem = [(x, y) for x, y in zip(s["sizes"], s["step_mb"]) if y is not None and y > 0]
        if mem:
            axes[1].loglog([m[0] for m in mem], [m[1] for m in mem], "o-", label=name)
    for ax, label in zip(axes, ("median step time (ms)", "memory growth during a step (MB)")):
        ax.set_xlabel("generated target parameters")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"W5 scaling ({device})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- markdown


def _fmt(v: float | None, spec: str = ".2f", suffix: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:{spec}}{suffix}"


def _params(n: int) -> str:
    return f"{n:,}" if n else "-"


def ratio_of_medians(variant: dict[str, Any], baseline: dict[str, Any] | None) -> float | None:
    """``variant``'s median step time over ``baseline``'s (result-record dicts); ``None`` if either is missing.

    Shown beside the paired ratio (:func:`benchmarks.harness.paired_ratio`, the median of per-round
    ratios), which it matches on a quiet machine and can contradict when the load changes between rounds.
    """
    if baseline is None or not variant.get("median_ms") or not baseline.get("median_ms"):
        return None
    return variant["median_ms"] / baseline["median_ms"]


def _best_row(variants: list[dict[str, Any]], role: str, compiled: bool) -> dict[str, Any] | None:
    rows = [
        m
        for m in variants
        if m["role"] == role and bool(m.get("compiled")) == compiled and m["status"] == "ok" and m.get("median_ms")
    ]
    return min(rows, key=lambda m: m["median_ms"]) if rows else None


def compiled_summary(result: dict[str, Any]) -> list[str]:
    """Markdown lines: per workload, the fastest eager and compiled hyperdnn and hand-written
    variants side by side (empty when no variant was compiled)."""
    rows = []
    for key, w in result["workloads"].items():
        vs = w["variants"]
        if not any(m.get("compiled") for m in vs):
            continue
        role = "static" if key == "W0" else None
        ours_e, ours_c = (_best_row(vs, role or "ours", c) for c in (False, True))
        ref_e, ref_c = (None, None) if role else (_best_row(vs, "reference", c) for c in (False, True))
        ratio_c = ours_c.get("ratio_reference") if ours_c and not role else None
        ratio_e = ours_e.get("ratio_reference") if ours_e and not role else None
        speedup = ours_e["median_ms"] / ours_c["median_ms"] if ours_e and ours_c else None

        def cell(m: dict[str, Any] | None) -> str:
            return f"{_fmt(m['median_ms'])} ({m['name']})" if m else "-"

        first = _fmt(ours_c.get("first_step_s"), ".1f") if ours_c else "-"
        rows.append(
            f"| {key} | {cell(ours_e)} | {cell(ours_c)} | {_fmt(speedup, '.2f', 'x')} | {cell(ref_e)} | {cell(ref_c)} "
            f"| {_fmt(ratio_e, '.3f')} | {_fmt(ratio_c, '.3f')} | {first} |"
        )
    if not rows:
        return []
    return [
        "",
        "## Compiled against eager",
        "",
        "Fastest hyperdnn (W0: the static target) and fastest hand-written variant of each workload, eager and",
        "compiled; ratios paired per round, each against the hand-written variant of its own kind. The first",
        "step of a compiled variant includes its compilation (not part of the step times).",
        "",
        "| workload | hyperdnn eager ms | hyperdnn compiled ms | compiled speed-up | hand-written eager ms "
        "| hand-written compiled ms | eager x hand-written | compiled x compiled hand-written | first compiled step s |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    dev = meta["device"]
    mem_label = "peak alloc MB (+step)" if dev == "cuda" else "peak RSS MB (+step)"
    lines = [
        f"# hyperdnn benchmarks: {meta['date']} on {dev}",
        "",
        f"- machine: {meta['machine'].get('gpu') or meta['machine']['cpu']}"
        f" ({meta['machine']['cpu_count']} CPUs, {meta['machine']['torch_threads']} torch threads),"
        f" torch {meta['machine']['torch']}, Python {meta['machine']['python']}",
        f"- load average before / after: {meta.get('load_before')} / {meta.get('load_after')}",
        f"- optimizer: Adam ({meta['optimizer']}); warm-up {meta['warmup']}, {meta['repeats']} interleaved rounds of "
        f"{meta['steps']} steps{' (quick)' if meta['quick'] else ''}; clock: {meta.get('clock', 'wall')}",
        "- compiled variants: "
        + (
            f"torch.compile(fullgraph=True), backend {meta['compiled']['backend']}, mode {meta['compiled']['mode']}"
            if meta.get("compiled")
            else "none (run with --compiled)"
        ),
        "- peers: "
        + ", ".join(
            f"{n} {s['version']}" if s["available"] else f"{n}: {s['error']}" for n, s in meta["peers"].items()
        ),
        "",
        "Step = zero_grad + forward + loss + backward + Adam step; median ms per step over all timed steps.",
        "",
        "`x static (paired)` and `x hand-written (paired)` are **medians of per-round ratios**, not ratios of",
        "the medians beside them: in each round every variant times a block of steps next to the static target",
        "and the fastest hand-written plain-PyTorch hypernet, and the column is the median over rounds of",
        "(this variant's block) / (the baseline's block in the same round). `x static (medians)` is the plain",
        "ratio of the two medians in the ms column. On a quiet machine the two agree; where they disagree",
        "(e.g. 0.82x paired next to 162.6 ms against 126.4 ms), the load changed between rounds and the",
        "medians mix busy and quiet rounds, while each paired ratio compares blocks timed under the same load.",
        "",
        "## Targets",
        "",
        "| workload | check | value | bar | holds | detail |",
        "|---|---|---|---|---|---|",
    ]
    for key, w in result["workloads"].items():
        for c in w.get("checks", []):
            holds = {True: "yes", False: "**no**", None: "not run"}[c["holds"]]
            lines.append(f"| {key} | {c['check']} | {_fmt(c['value'], '.3f')} | {c['bar']} | {holds} | {c['detail']} |")
    for c in (result.get("scaling") or {}).get("checks", []):
        holds = {True: "yes", False: "**no**", None: "not run"}[c["holds"]]
        lines.append(f"| W5 | {c['check']} | {_fmt(c['value'], '.3f')} | {c['bar']} | {holds} | {c['detail']} |")
    for key, w in result["workloads"].items():
        lines += [
            "",
            f"## {key}: {w['title']}",
            "",
            "| variant | library | how | trainable params | median ms [IQR] | x static (paired) | x static (medians) "
            f"| x hand-written (paired) | {mem_label} | first step s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        static = next(
            (m for m in w["variants"] if m["name"] == (w.get("baseline") or {}).get("static") and m["status"] == "ok"),
            None,
        )
        for m in w["variants"]:
            if m["status"] != "ok":
                lines.append(
                    f"| {m['name']} | {m['library']} | {m['status']}: {m['error']} | - | - | - | - | - | - | - |"
                )
                continue
            doc = " (documented way)" if m["documented"] else ""
            lines.append(
                f"| {m['name']} | {m['library']} | {m['note']}{doc} | {_params(m['params'])} "
                f"| {_fmt(m['median_ms'])} [{_fmt(m['q1_ms'])}-{_fmt(m['q3_ms'])}] "
                f"| {_fmt(m['ratio_static'], '.2f', 'x')} | {_fmt(ratio_of_medians(m, static), '.2f', 'x')} "
                f"| {_fmt(m['ratio_reference'], '.2f', 'x')} "
                f"| {_fmt(m['peak_mb'], '.0f')} (+{_fmt(m['step_mb'], '.0f')}) | {_fmt(m.get('first_step_s'), '.1f')} |"
            )
        if w.get("extra"):
            lines += ["", "Weight generation alone (forward, no grad):", ""]
            lines += [f"- {k}: {_fmt(v, '.4g') if isinstance(v, float) else v}" for k, v in w["extra"].items()]
    lines += compiled_summary(result)
    sc = result.get("scaling")
    if sc:
        lines += [
            "",
            "## W5 scaling (log-log slopes; 1 = linear)",
            "",
            "| variant | time slope (all / top two) | memory slope (all / top two) |",
            "|---|---|---|",
        ]
        for name, s in sc["series"].items():
            lines.append(
                f"| {name} | {_fmt(s['time_slope'])} / {_fmt(s['time_slope_top'])} "
                f"| {_fmt(s['memory_slope'])} / {_fmt(s['memory_slope_top'])} |"
            )
        for lib, g in sc.get("generation", {}).items():
            ms = ", ".join(f"{_fmt(v, '.3g')}" for v in g["ms"])
            lines.append(
                f"| {lib} weight generation alone (ms: {ms}) | {_fmt(g['slope'])} / {_fmt(g['slope_top'])} | - |"
            )
        if sc.get("plot"):
            lines += ["", f"Plot: `{sc['plot']}`"]
    return "\n".join(lines) + "\n"
