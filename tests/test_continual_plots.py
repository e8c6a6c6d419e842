"""The continual recipe's heat maps: colours span the data, numbers are readable."""

from __future__ import annotations

import math

import pytest
import torch

from hyperdnn.apps.continual import _heatmap_figure

plt = pytest.importorskip("matplotlib.pyplot")


def _lower(T: int, lo: float, hi: float, seed: int = 0) -> torch.Tensor:
    """A (T, T) accuracy matrix in [lo, hi] below and on the diagonal, NaN above (not measured)."""
    g = torch.Generator().manual_seed(seed)
    m = lo + (hi - lo) * torch.rand(T, T, generator=g, dtype=torch.float64)
    m[0, 0], m[-1, 0] = lo, hi  # the extremes are in the data
    return m.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("nan"))


def test_each_panel_spans_its_own_data_with_a_colour_bar_and_readable_numbers():
    T = 10
    mats = {"hnet": _lower(T, 0.85, 0.93), "finetune": _lower(T, 0.40, 0.99, seed=1)}
    fig = _heatmap_figure(mats, "toy")
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
    fig = _heatmap_figure({"joint": joint}, "toy")
    try:
        (ax,) = [ax for ax in fig.axes if ax.images]
        assert ax.images[0].get_clim() == pytest.approx((89.5, 90.5))
        assert sorted(t.get_text() for t in ax.texts) == ["90.0"] * 3
        assert min(t.get_fontsize() for t in ax.texts) >= 8.0
    finally:
        plt.close(fig)


def test_cells_too_small_to_read_show_colours_only():
    fig = _heatmap_figure({"hnet": _lower(60, 0.5, 0.9)}, "toy")
    try:
        (ax,) = [ax for ax in fig.axes if ax.images]
        assert len(ax.texts) == 0
        assert ax.images[0].get_clim() == pytest.approx((50.0, 90.0))
    finally:
        plt.close(fig)
