"""The benchmark tables say what their ratios are, and a quick run stays out of the tracked results."""

from __future__ import annotations

import subprocess
from pathlib import Path

from benchmarks import report
from benchmarks import run as bench

ROOT = Path(__file__).resolve().parent.parent


def _variant(name: str, median: float, paired: float | None, role: str = "ours") -> dict:
    return {
        "name": name,
        "library": "torch" if role != "ours" else "hyperdnn",
        "role": role,
        "status": "ok",
        "error": None,
        "documented": False,
        "note": "",
        "params": 10,
        "median_ms": median,
        "q1_ms": median,
        "q3_ms": median,
        "ratio_static": paired,
        "ratio_reference": paired,
        "peak_mb": 1.0,
        "step_mb": 0.0,
    }


def _record() -> dict:
    meta = {
        "date": "2026-01-01",
        "device": "cpu",
        "machine": {"cpu": "x", "cpu_count": 2, "torch_threads": 2, "torch": "2", "python": "3", "gpu": None},
        "load_before": [3.0],
        "load_after": [3.0],
        "optimizer": "fused",
        "warmup": 1,
        "repeats": 3,
        "steps": 1,
        "quick": True,
        "clock": "wall",
        "peers": {},
    }
    # under load: the paired ratio (0.82x) and the ratio of the medians (162.6 / 126.4 = 1.29x) disagree
    variants = [_variant("static", 126.4, 1.0, role="static"), _variant("hyperdnn", 162.6, 0.82)]
    return {"meta": meta, "workloads": {"W0": {"title": "t", "baseline": {"static": "static"}, "variants": variants}}}


def test_the_table_shows_the_paired_ratio_and_the_ratio_of_medians_and_says_which_is_which():
    text = report.markdown(_record())
    assert "medians of per-round ratios" in text and "not ratios of" in text
    header = next(line for line in text.splitlines() if line.startswith("| variant |"))
    assert "x static (paired) | x static (medians) | x hand-written (paired)" in header
    row = next(line for line in text.splitlines() if line.startswith("| hyperdnn |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4].startswith("162.60") and cells[5:8] == ["0.82x", f"{162.6 / 126.4:.2f}x", "0.82x"]
    assert len(cells) == len(header.strip("|").split("|"))


def test_ratio_of_medians():
    assert report.ratio_of_medians({"median_ms": 3.0}, {"median_ms": 2.0}) == 1.5
    assert report.ratio_of_medians({"median_ms": 3.0}, None) is None


def test_a_quick_run_writes_to_an_ignored_folder_by_default():
    quick = bench.output_folder(bench.parse_options(["--quick"]))
    full = bench.output_folder(bench.parse_options([]))
    assert full == ROOT / "benchmarks" / "results"
    assert quick == ROOT / "benchmarks" / "results" / "quick"
    assert bench.output_folder(bench.parse_options(["--quick", "--out", "elsewhere"])) == Path("elsewhere")
    probe = quick / "2026-01-01-cpu-quick.json"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(probe.relative_to(ROOT))], cwd=ROOT, capture_output=True, check=False
    )
    if ignored.returncode == 128:  # not a git checkout (e.g. an unpacked sdist): nothing to check
        return
    assert ignored.returncode == 0, "benchmarks/results/quick/ must be in .gitignore"


def _m(name: str, role: str, blocks: list[float], compiled: bool = False, library: str = "torch", documented=False):
    from benchmarks.harness import Measurement

    m = Measurement(name, library, role, 10, "", documented, compiled)
    m.block_ms, m.median_ms = blocks, sorted(blocks)[len(blocks) // 2]
    return m


def test_compiled_rows_are_compared_with_compiled_references_and_the_bar_follows_the_device():
    ms = [
        _m("static", "static", [1.0, 1.0, 1.0]),
        _m("torch", "reference", [2.0, 2.0, 2.0]),
        _m("hyperdnn", "ours", [2.2, 2.2, 2.2], library="hyperdnn"),
        _m("torch-compiled", "reference", [1.0, 1.0, 1.0], compiled=True),
        _m("torch-hyperfan-compiled", "reference", [1.1, 1.1, 1.1], compiled=True),
        _m("hyperdnn-compiled", "ours", [1.15, 1.15, 1.15], compiled=True, library="hyperdnn"),
        _m("peer-loop", "peer", [12.0, 12.0, 12.0], library="peer", documented=True),
    ]
    used = report.fill_ratios(ms, "static")
    assert used["reference"] == "torch" and used["compiled_reference"] == "torch-compiled"
    by = {m.name: m for m in ms}
    assert by["hyperdnn"].ratio_reference == 1.1  # eager against eager
    assert abs(by["hyperdnn-compiled"].ratio_reference - 1.15) < 1e-9  # compiled against compiled
    # the eager checks never pick a compiled reference
    eager = report.checks("W2", ms, {}, "cpu")
    first = next(c for c in eager if c["check"] == "best hyperdnn / best hand-written")
    assert first["value"] == 1.1 and first["detail"] == "hyperdnn vs torch"
    cpu = {c["check"]: c for c in report.compiled_checks("W3", ms, "cpu")}
    assert cpu["compiled hyperdnn / compiled hand-written"]["holds"] is False  # 1.15 > 1.1
    assert cpu["compiled hyperdnn / compiled hand-written with the hyperfan scale"]["value"] == round(1.15 / 1.1, 3)
    assert not any("peer" in k for k in cpu)  # the peer speed-up is a GPU target
    cuda = {c["check"]: c for c in report.compiled_checks("W3", ms, "cuda")}
    assert cuda["compiled hyperdnn / compiled hand-written"]["holds"] is True  # bar 1.2 on CUDA
    peer = cuda["peer documented way (eager) / compiled hyperdnn"]
    assert peer["bar"] == ">= 5" and peer["holds"] is True and abs(peer["value"] - 12 / 1.15) < 1e-3
    assert report.compiled_checks("W3", ms[:3], "cpu") == []  # nothing compiled: no rows
