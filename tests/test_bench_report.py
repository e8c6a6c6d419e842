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
