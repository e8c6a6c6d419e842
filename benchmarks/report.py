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


def _ok(ms: list[Measurement], role: str | None = None, library: str | None = None) -> list[Measurement]:
    return [
        m
        for m in ms
        if m.status == "ok"
        and m.median_ms is not None
        and (role is None or m.role == role)
        and (library is None or m.library == library)
    ]


def _best(ms: list[Measurement]) -> Measurement | None:
    return min(ms, key=lambda m: m.median_ms) if ms else None


def fill_ratios(ms: list[Measurement], baseline: str) -> dict[str, str | None]:
    """Set each measurement's ratio to the static baseline and to the best hand-written variant."""
    by = {m.name: m for m in ms}
    static = by.get(baseline)
    ref = _best(_ok(ms, "reference"))
    for m in ms:
        if static is not None:
            m.ratio_static = paired_ratio(m, static)
        if ref is not None:
            m.ratio_reference = paired_ratio(m, ref)
    return {"static": baseline if static else None, "reference": ref.name if ref else None}


def _check(what: str, value: float | None, bar: float, op: str, detail: str) -> dict[str, Any]:
    if value is None:
        return {"check": what, "value": None, "bar": f"{op} {bar:g}", "holds": None, "detail": detail}
    holds = value <= bar if op == "<=" else value >= bar
    return {"check": what, "value": round(value, 3), "bar": f"{op} {bar:g}", "holds": holds, "detail": detail}


def checks(key: str, ms: list[Measurement], peer_status: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets for one workload (W5 is checked across sizes by :func:`scaling`)."""
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
            f"| x hand-written (paired) | {mem_label} |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        static = next(
            (m for m in w["variants"] if m["name"] == (w.get("baseline") or {}).get("static") and m["status"] == "ok"),
            None,
        )
        for m in w["variants"]:
            if m["status"] != "ok":
                lines.append(f"| {m['name']} | {m['library']} | {m['status']}: {m['error']} | - | - | - | - | - | - |")
                continue
            doc = " (documented way)" if m["documented"] else ""
            lines.append(
                f"| {m['name']} | {m['library']} | {m['note']}{doc} | {_params(m['params'])} "
                f"| {_fmt(m['median_ms'])} [{_fmt(m['q1_ms'])}-{_fmt(m['q3_ms'])}] "
                f"| {_fmt(m['ratio_static'], '.2f', 'x')} | {_fmt(ratio_of_medians(m, static), '.2f', 'x')} "
                f"| {_fmt(m['ratio_reference'], '.2f', 'x')} "
                f"| {_fmt(m['peak_mb'], '.0f')} (+{_fmt(m['step_mb'], '.0f')}) |"
            )
        if w.get("extra"):
            lines += ["", "Weight generation alone (forward, no grad):", ""]
            lines += [f"- {k}: {_fmt(v, '.4g') if isinstance(v, float) else v}" for k, v in w["extra"].items()]
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
