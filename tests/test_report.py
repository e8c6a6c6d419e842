"""The shared report: tables to markdown and JSON, and the standard figures, whose axes follow
the data and whose labels stay readable."""

from __future__ import annotations

import math

import pytest
import torch

from hyperdnn.engine.report import (
    Column,
    Report,
    Table,
    bar_chart_figure,
    heatmap_figure,
    learning_curves_figure,
    line_chart_figure,
)

plt = pytest.importorskip("matplotlib.pyplot")


# ---------------------------------------------------------------------- tables
def test_a_table_formats_markdown_and_keeps_raw_values_for_json() -> None:
    t = Table([Column("method"), Column("acc (%)", "acc", ".1f", scale=100), Column("n", "n", ","), Column("ok", "ok")])
    t.add(method="hnet", acc=0.91234, n=4582300, ok=True)
    t.add(method="joint", acc=float("nan"), n=None, ok=False)
    assert t.markdown().splitlines() == [
        "| method | acc (%) | n | ok |",
        "|---|---:|---:|---|",
        "| hnet | 91.2 | 4,582,300 | True |",
        "| joint | n/a | n/a | False |",
    ]
    records = t.records()
    assert records[0] == {"method": "hnet", "acc": 0.91234, "n": 4582300, "ok": True}
    assert math.isnan(records[1]["acc"]) and records[1]["n"] is None
    records[0]["acc"] = 0  # copies
    assert t.rows[0]["acc"] == 0.91234


def test_table_errors_name_the_keys() -> None:
    t = Table([Column("a"), Column("b")])
    with pytest.raises(ValueError, match=r"missing \['b'\], unknown \['c'\]; the columns are \['a', 'b'\]"):
        t.add(a=1, c=2)
    with pytest.raises(ValueError, match="distinct keys"):
        Table([Column("a"), Column("a")])
    with pytest.raises(ValueError, match="align"):
        Column("a", align="centre")


def test_a_report_is_headings_text_tables_and_linked_figures(tmp_path) -> None:
    saved = []

    class Ctx:
        def save_figure(self, figure, name):
            saved.append(name)
            plt.close(figure)

    rep = Report(Ctx(), "toy")
    rep.section("part")
    rep.text("one", "two")
    t = Table([Column("x")])
    t.add(x=1)
    rep.table(t)
    fig = plt.figure()
    assert rep.figure(fig, "f.png", "a figure") == "f.png" and saved == ["f.png"]
    outcome = rep.outcome({"m": 1})
    assert outcome.metrics == {"m": 1}
    assert outcome.summary == "# toy\n\n## part\n\none\n\ntwo\n\n| x |\n|---|\n| 1 |\n\n![a figure](f.png)\n"


# ---------------------------------------------------------------------- heat maps


def _lower(T: int, lo: float, hi: float, seed: int = 0) -> torch.Tensor:
    """A (T, T) accuracy matrix in [lo, hi] below and on the diagonal, NaN above (not measured)."""
    g = torch.Generator().manual_seed(seed)
    m = lo + (hi - lo) * torch.rand(T, T, generator=g, dtype=torch.float64)
    m[0, 0], m[-1, 0] = lo, hi  # the extremes are in the data
    return m.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("nan"))


def test_each_panel_spans_its_own_data_with_a_colour_bar_and_readable_numbers():
    T = 10
    mats = {"hnet": _lower(T, 0.85, 0.93), "finetune": _lower(T, 0.40, 0.99, seed=1)}
    fig = heatmap_figure(mats, "toy")
    try:
        panels = [ax for ax in fig.axes if ax.images]
        assert [ax.get_title() for ax in panels] == ["hnet", "finetune"]
        for ax, m in zip(panels, mats.values()):
            im = ax.images[0]
            measured_values = m[~m.isnan()]
            assert im.get_clim() == pytest.approx(
                (100 * float(measured_values.min()), 100 * float(measured_values.max()))
            )
            assert im.colorbar is not None and im.colorbar.ax.get_ylabel() == "test accuracy (%)"
            texts = ax.texts
            measured = [(i, j) for i in range(T) for j in range(T) if not math.isnan(float(m[i, j]))]
            assert len(texts) == len(measured) == T * (T + 1) // 2
            assert min(t.get_fontsize() for t in texts) >= 8.0  # at 10 x 10
            shown = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in texts}
            assert shown[(T - 1, 0)] == f"{100 * float(m[T - 1, 0]):.0f}"
        # 85% and 93% get the two ends of the colour map, not two near shades of a 0-100 scale
        im = panels[0].images[0]
        assert im.norm(85.0) == pytest.approx(0.0) and im.norm(93.0) == pytest.approx(1.0)
    finally:
        plt.close(fig)


def test_few_tasks_show_a_decimal_and_one_value_gets_a_one_point_range():
    T = 3
    joint = torch.full((T, T), float("nan"), dtype=torch.float64)
    joint[-1] = 0.9
    fig = heatmap_figure({"joint": joint}, "toy")
    try:
        (ax,) = [ax for ax in fig.axes if ax.images]
        assert ax.images[0].get_clim() == pytest.approx((89.5, 90.5))
        assert sorted(t.get_text() for t in ax.texts) == ["90.0"] * 3
        assert min(t.get_fontsize() for t in ax.texts) >= 8.0
    finally:
        plt.close(fig)


def test_cells_too_small_to_read_show_colours_only():
    fig = heatmap_figure({"hnet": _lower(60, 0.5, 0.9)}, "toy")
    try:
        (ax,) = [ax for ax in fig.axes if ax.images]
        assert len(ax.texts) == 0
        assert ax.images[0].get_clim() == pytest.approx((50.0, 90.0))
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------- learning curves
def test_learning_curves_show_every_epoch_from_the_data():
    """The y-axis spans the data (the first epochs' low accuracy included), not a fixed 50-100%."""
    curves = {
        "fast": [[0.30, 0.80, 0.90, 0.95, 0.96, 0.97], [0.20, 0.70, 0.92, 0.94, 0.96, 0.975]],
        "slow": [[0.10, 0.40, 0.60, 0.80, 0.90, 0.93]],
    }
    fig = learning_curves_figure(curves, "toy", dashed=["slow"])
    try:
        full, zoom = fig.axes
        lo, hi = full.get_ylim()
        assert lo <= 10.0 and 97.5 <= hi <= 100.5  # every point in view, nothing cut off, nothing above 100%
        zlo, zhi = zoom.get_ylim()
        assert 78.5 < zlo <= 80.0 and 97.5 <= zhi < 98.5  # epochs 4-6: from their minimum to their maximum
        x, y = full.lines[0].get_data()
        assert list(x) == [1, 2, 3, 4, 5, 6]
        assert y[0] == pytest.approx(25.0)  # the mean over runs
        assert full.lines[1].get_linestyle() == "--"
        band = full.collections[0].get_paths()[0].vertices
        assert band[:, 1].min() == pytest.approx(20.0) and band[:, 1].max() == pytest.approx(97.5)
    finally:
        plt.close(fig)


def test_learning_curves_of_a_short_run_are_one_panel():
    fig = learning_curves_figure({"a": [[0.5, 0.6]]}, "short")
    try:
        assert len(fig.axes) == 1
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------- bar and line charts
def test_bar_chart_axis_spans_zero_and_the_data_or_only_the_data_when_zoomed() -> None:
    values = {"hnet": {"CL1": 0.91, "CL2": 0.79}, "separate": {"CL1": 0.92, "CL2": 0.87}, "joint": {"CL1": 0.93}}
    errors = {"hnet": {"CL1": 0.01}}
    fig = bar_chart_figure(values, "toy", "accuracy", errors=errors)
    try:
        (ax,) = fig.axes
        lo, hi = ax.get_ylim()
        assert lo == 0.0 and 0.93 < hi < 1.1  # zero and every bar (and error bar) in view
        assert len(ax.patches) == 5  # joint has no CL2 bar
        assert [t.get_text() for t in ax.get_xticklabels()] == ["hnet", "separate", "joint"]
        assert ax.get_legend() is not None and [t.get_text() for t in ax.get_legend().get_texts()] == ["CL1", "CL2"]
        assert sorted(t.get_text() for t in ax.texts) == sorted(["0.91", "0.79", "0.92", "0.87", "0.93"])
    finally:
        plt.close(fig)
    fig = bar_chart_figure(values, "toy", "accuracy", zoom=True)
    try:
        (ax,) = fig.axes
        lo, hi = ax.get_ylim()
        assert 0.75 < lo < 0.79 and 0.93 < hi < 0.97  # 79% and 93% far apart, not two near-equal bars
        assert "does not start at 0" in ax.get_title()
    finally:
        plt.close(fig)


def test_bar_chart_rotates_long_labels_and_refuses_bad_values() -> None:
    fig = bar_chart_figure({f"a rather long method name {i}": {"x": float(i + 1)} for i in range(6)}, "t", "y")
    try:
        assert all(t.get_rotation() == 30 for t in fig.axes[0].get_xticklabels())
        assert all(t.get_fontsize() >= 8 for t in fig.axes[0].get_xticklabels())
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="values must be finite, got a/x=nan"):
        bar_chart_figure({"a": {"x": float("nan")}}, "t", "y")
    with pytest.raises(ValueError, match="at least one value"):
        bar_chart_figure({}, "t", "y")


def test_line_chart_axes_follow_the_data() -> None:
    series = {"hyperdnn": ([1e5, 1e6, 1e7], [2.0, 3.0, 9.0]), "torch": ([1e5, 1e6], [1.0, 2.5])}
    fig = line_chart_figure(series, "scaling", "parameters", "ms per step", logx=True, dashed=["torch"])
    try:
        (ax,) = fig.axes
        assert ax.get_xscale() == "log"
        lo, hi = ax.get_ylim()
        assert 0.0 < lo < 1.0 and 9.0 < hi < 10.0  # the data with a margin, not from zero
        assert ax.lines[1].get_linestyle() == "--"
    finally:
        plt.close(fig)
    fig = line_chart_figure({"w": ([32, 64, 96, 128], [0.9, 0.95, 0.94, 0.96])}, "widths", "width", "acc")
    try:
        ticks = fig.axes[0].get_xticks()
        assert all(float(t).is_integer() for t in ticks)
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="'a': 2 x values but 1 y values; 'b': a value <= 0 on a logarithmic axis"):
        line_chart_figure({"a": ([1, 2], [1]), "b": ([0, 1], [1, 2])}, "t", "x", "y", logx=True)
