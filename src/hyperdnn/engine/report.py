"""The shared report: tables to markdown and JSON, and the standard plots.

* :class:`Table` - rows of raw values under typed :class:`Column` s: :meth:`Table.markdown`
  formats them for summary.md, :meth:`Table.records` keeps the raw values for results.json.
* :class:`Report` - builds a run's summary.md from headings, text, tables and figures (saved
  as PNGs in the run folder) and returns the recipe's :class:`~hyperdnn.engine.run.Outcome`.
* The standard figures, each drawn from data alone (the axes follow the values, labels stay
  readable), returned as a matplotlib figure for :meth:`Report.figure` or
  :meth:`~hyperdnn.engine.run.RunContext.save_figure`:

  - :func:`learning_curves_figure` - a metric per epoch, one line per model, mean and min-max
    band over runs, with the second half of training zoomed;
  - :func:`heatmap_figure` - square matrices (continual accuracy matrices) with their numbers;
  - :func:`bar_chart_figure` - values per group and series, with optional error bars;
  - :func:`line_chart_figure` - y against x per series (sizes, widths, trade-offs).
  - :func:`image_grid_figure` - images in a grid, a row per method (reconstructions).
  - :func:`grid_figure` - a value over a two-parameter grid, one panel per method, on one
    colour scale (normalised return over physical parameters, a hyper-parameter sweep).
  - :func:`reliability_figure` - reliability diagrams: accuracy against confidence per bin,
    a panel per model (calibration);
  - :func:`band_figure` - a predictive mean and its band against x, a panel per model, with
    the data (1-D regression);
  - :func:`histogram_figure` - distributions of a score, one outline per set, a panel per
    model (predictive entropy in and out of distribution).
  - :func:`curves_and_points_figure` - curves (a model swept over a continuous input) against
    separately trained points, a panel per quantity (Pareto fronts, hyper-parameter sweeps).

matplotlib (the ``apps`` extra) is imported only when a figure is drawn.

Example::

    >>> from hyperdnn.engine.report import Column, Table
    >>> t = Table([Column("method"), Column("accuracy (%)", "acc", ".1f", scale=100), Column("BWT", "bwt", "+.1f")])
    >>> t.add(method="hnet", acc=0.9112, bwt=-0.4)
    >>> t.add(method="joint", acc=0.95, bwt=None)
    >>> print(t.markdown())
    | method | accuracy (%) | BWT |
    |---|---:|---:|
    | hnet | 91.1 | -0.4 |
    | joint | 95.0 | n/a |
    >>> t.records()[1]
    {'method': 'joint', 'acc': 0.95, 'bwt': None}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from hyperdnn.engine.run import Outcome

if TYPE_CHECKING:  # matplotlib is optional and imported where a figure is drawn
    from matplotlib.figure import Figure

    from hyperdnn.engine.run import RunContext

__all__ = [
    "Column",
    "Table",
    "Report",
    "learning_curves_figure",
    "heatmap_figure",
    "bar_chart_figure",
    "line_chart_figure",
    "image_grid_figure",
    "reliability_figure",
    "band_figure",
    "histogram_figure",
    "grid_figure",
    "curves_and_points_figure",
]


# ====================================================================== tables
@dataclass(frozen=True)
class Column:
    """One column of a :class:`Table`.

    Args:
        header: the markdown header.
        key: the row's key for this column (default: ``header``), also the JSON key.
        format: a format spec for numbers (``".1f"``, ``"+.2f"``, ``","``) or a function from
            the raw value to the cell's text; ``""``: ``str``.
        scale: numbers are multiplied by this before formatting (``100`` for percentages);
            the JSON keeps the raw value.
        align: ``"left"``, ``"right"`` or ``None`` (right for a numeric format, else left).
    """

    header: str
    key: str | None = None
    format: str | Callable[[Any], str] = ""
    scale: float = 1.0
    align: str | None = None

    def __post_init__(self) -> None:
        if self.align not in (None, "left", "right"):
            raise ValueError(f"Column {self.header!r}: align must be 'left', 'right' or None, got {self.align!r}")

    @property
    def name(self) -> str:
        """The key of this column in a row and in the JSON records."""
        return self.key or self.header

    def cell(self, value: Any) -> str:
        """The markdown text of ``value``: ``n/a`` for ``None`` and NaN."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        if callable(self.format):
            return self.format(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and self.format:
            return format(value * self.scale if self.scale != 1.0 else value, self.format)
        return str(value)

    @property
    def right(self) -> bool:
        return self.align == "right" if self.align else isinstance(self.format, str) and bool(self.format)


class Table:
    """Rows of raw values under :class:`Column` s.

    Args:
        columns: the columns, in order.

    Raises:
        ValueError: no columns, or two with the same key.
    """

    def __init__(self, columns: Sequence[Column]):
        names = [c.name for c in columns]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"Table: expected columns with distinct keys, got {names}")
        self.columns = list(columns)
        self.rows: list[dict[str, Any]] = []

    def add(self, **values: Any) -> None:
        """Append a row: one value per column key.

        Raises:
            ValueError: a key is missing or unknown (both listed).
        """
        names = [c.name for c in self.columns]
        missing, unknown = [n for n in names if n not in values], sorted(set(values) - set(names))
        if missing or unknown:
            raise ValueError(f"Table.add: missing {missing}, unknown {unknown}; the columns are {names}")
        self.rows.append({n: values[n] for n in names})

    def markdown(self) -> str:
        """The table in markdown (one line per row, no trailing newline)."""
        lines = [
            "| " + " | ".join(c.header for c in self.columns) + " |",
            "|" + "|".join("---:" if c.right else "---" for c in self.columns) + "|",
        ]
        for row in self.rows:
            lines.append("| " + " | ".join(c.cell(row[c.name]) for c in self.columns) + " |")
        return "\n".join(lines)

    def records(self) -> list[dict[str, Any]]:
        """The rows as JSON records of raw values (copies)."""
        return [dict(row) for row in self.rows]


class Report:
    """Builds a run's summary.md, saving its figures in the run folder.

    Args:
        ctx: the run's context (figures are saved through it).
        title: the first heading.

    Example (in a recipe's ``run``)::

        report = Report(ctx, "demo: digits, seed 0")
        report.text("Three models, the same target.")
        report.table(table)
        report.figure(learning_curves_figure(curves, "accuracy"), "learning_curves.png", "learning curves")
        return report.outcome({"models": table.records()})
    """

    def __init__(self, ctx: RunContext, title: str):
        self.ctx = ctx
        self.lines: list[str] = [f"# {title}"]

    def section(self, heading: str) -> None:
        """A ``##`` heading."""
        self.lines += ["", f"## {heading}"]

    def text(self, *paragraphs: str) -> None:
        """Paragraphs of markdown, each after an empty line."""
        for p in paragraphs:
            self.lines += ["", p]

    def table(self, table: Table) -> None:
        """A :class:`Table` in markdown."""
        self.lines += ["", table.markdown()]

    def figure(self, figure: Figure, name: str, caption: str) -> str:
        """Save ``figure`` as ``name`` (a PNG in the run folder), close it and link it; returns
        ``name``."""
        self.ctx.save_figure(figure, name)
        self.lines += ["", f"![{caption}]({name})"]
        return name

    def markdown(self) -> str:
        """The summary so far, ending with a newline."""
        return "\n".join(self.lines) + "\n"

    def outcome(self, metrics: Mapping[str, Any]) -> Outcome:
        """The recipe's :class:`~hyperdnn.engine.run.Outcome`: ``metrics`` and this summary."""
        return Outcome(metrics, self.markdown())


# ====================================================================== figures
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curves_figure(
    curves: Mapping[str, Sequence[Sequence[float]]],
    title: str,
    dashed: Collection[str] = (),
    ylabel: str = "test accuracy (%)",
    scale: float = 100.0,
    limits: tuple[float, float] | None = (-0.5, 100.5),
) -> Figure:
    """A metric per epoch, one line per model: the mean over runs and the min-max band.

    The data set the axes: the left panel shows every epoch from the lowest to the highest
    value reached (the first epochs included), the right one zooms into the second half of
    training, where the models differ by a point or two (only with 4 or more epochs).

    Args:
        curves: label -> runs -> value per epoch (accuracy in [0, 1] by default); every run
            of a label has the same number of epochs.
        title: the figure's title.
        dashed: labels drawn with a dashed line (e.g. a width the model never saw).
        ylabel: the y-axis label.
        scale: values are multiplied by this (100: fractions as percent).
        limits: the y-axis never leaves this range (``None``: no bound).

    Returns:
        The matplotlib figure (Agg backend); the caller saves and closes it.

    Example::

        >>> from hyperdnn.engine.report import learning_curves_figure
        >>> fig = learning_curves_figure({"a": [[0.2, 0.8, 0.9, 0.95]]}, "toy")
        >>> [round(v) for v in fig.axes[0].get_ylim()]  # the first epoch's 20% is in view
        [16, 99]
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = max(len(run) for runs in curves.values() for run in runs)
    zoom = epochs >= 4
    fig, axes = plt.subplots(1, 2 if zoom else 1, figsize=(11 if zoom else 6.5, 4), squeeze=False)
    first_zoomed = epochs // 2 + 1  # epochs are numbered from 1
    for label, runs in curves.items():
        values = scale * torch.tensor(runs, dtype=torch.float64)  # (runs, epochs)
        mean, lo, hi = values.mean(0), values.min(0).values, values.max(0).values
        x = torch.arange(1, values.shape[1] + 1)
        style = "--" if label in dashed else "-"
        for ax, keep in zip(axes[0], (slice(None), slice(first_zoomed - 1, None))):
            (line,) = ax.plot(x[keep], mean[keep], style, label=label)
            if values.shape[0] > 1:
                ax.fill_between(x[keep], lo[keep], hi[keep], alpha=0.2, color=line.get_color())
    for ax in axes[0]:
        if limits is not None:
            lo, hi = ax.get_ylim()  # matplotlib's limits around the data, kept inside the bounds
            ax.set_ylim(max(lo, limits[0]), min(hi, limits[1]))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0][0].set_title("every epoch")
    axes[0][0].legend(loc="best", fontsize=8)
    if zoom:
        axes[0][1].set_title(f"epochs {first_zoomed}-{epochs}, zoomed")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def heatmap_figure(
    matrices: Mapping[str, torch.Tensor],
    title: str,
    xlabel: str = "task tested",
    ylabel: str = "after training task",
    colorbar: str = "test accuracy (%)",
    scale: float = 100.0,
) -> Figure:
    """One heat map per entry of its ``(T, T)`` matrix (NaN: not measured).

    Each panel's colours span that matrix's own minimum to maximum, with a colour bar, so that
    85% and 93% differ visibly; every measured cell shows its value at a font size scaled to
    the cell (at least 8 pt with 10 rows; none once cells are too small to read). Ticks are
    numbered from 1.

    Args:
        matrices: panel title -> ``(T, T)`` values (accuracies in [0, 1] by default); all of
            the same ``T``.
        title: the figure's title.
        xlabel, ylabel, colorbar: the axis and colour-bar labels.
        scale: values are multiplied by this (100: fractions as percent).

    Returns:
        The matplotlib figure (Agg backend); the caller saves and closes it.
    """
    plt = _pyplot()
    names = list(matrices)
    T = next(iter(matrices.values())).shape[0]
    cols = min(len(names), 3)
    rows = -(-len(names) // cols)
    side = min(7.0, max(3.2, 0.34 * T + 1.4))  # inches per panel: cells grow with the size up to a point
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols, side * rows * 0.9), squeeze=False, layout="constrained")
    drawn = []
    for k, ax in enumerate(axes.flat):
        if k >= len(names):
            ax.set_visible(False)
            continue
        name = names[k]
        m = matrices[name].double() * scale
        measured = m[~m.isnan()]
        lo, hi = (float(measured.min()), float(measured.max())) if measured.numel() else (0.0, scale)
        if hi - lo < scale / 100:  # one value (or nearly): a range of a hundredth of the scale around it
            lo, hi = (lo + hi) / 2 - scale / 200, (lo + hi) / 2 + scale / 200
        im = ax.imshow(m.numpy(), vmin=lo, vmax=hi, cmap="viridis")
        fig.colorbar(im, ax=ax, shrink=0.85, label=colorbar)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        if k % cols == 0:
            ax.set_ylabel(ylabel)
        ax.set_xticks(range(T), [str(t) for t in range(1, T + 1)])
        ax.set_yticks(range(T), [str(t) for t in range(1, T + 1)])
        drawn.append((ax, im, m))
    fig.suptitle(title)
    fig.draw_without_rendering()  # lay out first: the font size follows the cells' drawn size
    decimals = 1 if T <= 5 else 0
    for ax, im, m in drawn:
        cell = ax.get_window_extent().width * 72.0 / fig.dpi / T  # points per cell
        chars = 2 + (decimals + 1 if decimals else 0)
        size = min(14.0, 0.45 * cell, 0.8 * cell / (0.6 * chars))
        if size < 6.0:  # too small to read: the colours alone
            continue
        for i in range(T):
            for j in range(T):
                v = float(m[i, j])
                if math.isnan(v):
                    continue
                r, g, b, _ = im.cmap(im.norm(v))
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                ax.text(
                    j,
                    i,
                    f"{v:.{decimals}f}",
                    ha="center",
                    va="center",
                    fontsize=size,
                    color="white" if dark else "black",
                )
    return fig


def _readable_ticks(ax: Any, labels: Sequence[str]) -> None:
    """Tick labels that do not overlap: rotated when they are long or many."""
    longest = max((len(t) for t in labels), default=0)
    if longest * len(labels) > 60 or longest > 14:
        ax.set_xticks(ax.get_xticks(), labels, rotation=30, ha="right", fontsize=9)
    else:
        ax.set_xticks(ax.get_xticks(), labels, fontsize=9)


def bar_chart_figure(
    values: Mapping[str, Mapping[str, float]],
    title: str,
    ylabel: str,
    errors: Mapping[str, Mapping[str, float]] | None = None,
    zoom: bool = False,
    fmt: str = ".3g",
) -> Figure:
    """Bars of ``values[group][series]``: groups along x, the series of a group side by side.

    The data set the axes: without ``zoom`` the y-axis spans zero and every bar (with its error
    bar) plus a margin; with ``zoom`` it spans only the values and their error bars (bars that
    differ by a point stay apart), and the title says the axis does not start at zero. Each bar
    carries its value (``fmt``) while there are at most 24 bars; long or many group labels are
    rotated so they do not overlap.

    Args:
        values: group -> series -> value (a group may lack a series: no bar there).
        title: the figure's title.
        ylabel: the y-axis label.
        errors: the same layout: half-widths of error bars (e.g. standard deviations).
        zoom: let the y-axis start near the smallest value instead of at zero.
        fmt: the format spec of the value printed on each bar.

    Returns:
        The matplotlib figure (Agg backend); the caller saves and closes it.

    Raises:
        ValueError: no values, or a value that is not finite.
    """
    groups = list(values)
    series = list(dict.fromkeys(s for g in groups for s in values[g]))
    flat = [(g, s, float(values[g][s])) for g in groups for s in series if s in values[g]]
    if not flat:
        raise ValueError("bar_chart_figure: expected at least one value, got none")
    bad = [f"{g}/{s}={v}" for g, s, v in flat if not math.isfinite(v)]
    if bad:
        raise ValueError(f"bar_chart_figure: values must be finite, got {', '.join(bad)}")
    plt = _pyplot()
    err = {(g, s): float(errors[g][s]) for g, s, _ in flat if errors and s in errors.get(g, {})} if errors else {}
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(groups) * max(1, len(series)) ** 0.5 + 2.0), 4))
    for i, s in enumerate(series):
        xs = [gi + (i - (len(series) - 1) / 2) * width for gi, g in enumerate(groups) if s in values[g]]
        ys = [float(values[g][s]) for g in groups if s in values[g]]
        es = [err.get((g, s), 0.0) for g in groups if s in values[g]]
        bars = ax.bar(xs, ys, width * 0.95, yerr=es if err else None, capsize=3, label=s if len(series) > 1 else None)
        if len(flat) <= 24:
            ax.bar_label(bars, [format(y, fmt) for y in ys], fontsize=8, padding=2)
    tops = [v + err.get((g, s), 0.0) for g, s, v in flat]
    bottoms = [v - err.get((g, s), 0.0) for g, s, v in flat]
    lo, hi = min(bottoms), max(tops)
    if not zoom:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    span = (hi - lo) or abs(hi) or 1.0
    ax.set_ylim(lo - (0.08 * span if zoom or lo < 0 else 0.0), hi + 0.12 * span)
    ax.set_xticks(range(len(groups)))
    _readable_ticks(ax, groups)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8, loc="best")
    ax.set_title(title + (" (zoomed: the axis does not start at 0)" if zoom else ""), fontsize=11)
    fig.tight_layout()
    return fig


def line_chart_figure(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    logy: bool = False,
    dashed: Collection[str] = (),
) -> Figure:
    """``y`` against ``x``, one line per series (sizes, widths, trade-offs, curves).

    The data set the axes: both span the plotted points with a margin (never a fixed range);
    points carry markers while a series has at most 30 of them;
    integer ``x`` values get integer ticks; a logarithmic axis is used only where asked and
    every value on it is positive. More than six series put the legend beside the plot.

    Args:
        series: label -> (x values, y values) of equal length.
        title, xlabel, ylabel: the figure's texts.
        logx, logy: logarithmic axes.
        dashed: labels drawn with a dashed line.

    Returns:
        The matplotlib figure (Agg backend); the caller saves and closes it.

    Raises:
        ValueError: no series, x and y of different lengths, a value that is not finite, or a
            value ``<= 0`` on a logarithmic axis (every offending series named).
    """
    if not series:
        raise ValueError("line_chart_figure: expected at least one series, got none")
    problems = []
    for label, (x, y) in series.items():
        if len(x) != len(y):
            problems.append(f"{label!r}: {len(x)} x values but {len(y)} y values")
        elif not all(math.isfinite(float(v)) for v in (*x, *y)):
            problems.append(f"{label!r}: a value that is not finite")
        elif (logx and min(map(float, x)) <= 0) or (logy and min(map(float, y)) <= 0):
            problems.append(f"{label!r}: a value <= 0 on a logarithmic axis")
    if problems:
        raise ValueError(f"line_chart_figure: {'; '.join(problems)}")
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.5 if len(series) <= 6 else 8.5, 4))
    for label, (x, y) in series.items():
        marker = "o" if len(x) <= 30 else ""  # markers while the points can be told apart
        ax.plot(list(x), list(y), ("--" if label in dashed else "-") + marker, markersize=4, label=label)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    xs = [float(v) for x, _ in series.values() for v in x]
    if not logx and all(v.is_integer() for v in xs):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(0.05, 0.08)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3, which="both" if logx or logy else "major")
    if len(series) > 6:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def grid_figure(
    panels: Mapping[str, torch.Tensor],
    xticks: Sequence[str],
    yticks: Sequence[str],
    title: str,
    xlabel: str,
    ylabel: str,
    colorbar: str,
    marked: torch.Tensor | None = None,
    limits: tuple[float, float] | None = None,
) -> Figure:
    """A value over a grid of two parameters, one panel per entry, on one shared colour scale.

    Unlike :func:`heatmap_figure` (square matrices, each on its own scale) the panels here are
    meant to be compared cell by cell: one colour bar serves them all. Every cell shows its
    value (two decimals) while the cells are large enough to read; cells of ``marked`` are
    outlined (e.g. the training tasks); NaN cells stay blank.

    Args:
        panels: panel title -> ``(R, C)`` values (rows along y, columns along x); all of one
            shape.
        xticks, yticks: ``C`` and ``R`` labels of the columns and rows.
        title, xlabel, ylabel, colorbar: the figure's texts.
        marked: ``(R, C)`` bool: cells to outline.
        limits: the colour scale's ``(low, high)``; default: the values' own range.

    Returns:
        The matplotlib figure (Agg backend); the caller saves and closes it.

    Raises:
        ValueError: no panels, panels of different shapes, tick labels or ``marked`` that do
            not fit them, or ``limits`` with ``high <= low``.
    """
    if not panels:
        raise ValueError("grid_figure: expected at least one panel, got none")
    shapes = {name: tuple(v.shape) for name, v in panels.items()}
    shape = next(iter(shapes.values()))
    problems = [f"panel {n!r} has shape {s}" for n, s in shapes.items() if s != shape or len(s) != 2]
    if not problems and (len(xticks), len(yticks)) != (shape[1], shape[0]):
        problems.append(f"{len(xticks)} x ticks and {len(yticks)} y ticks for panels of shape {shape}")
    if marked is not None and tuple(marked.shape) != shape:
        problems.append(f"marked has shape {tuple(marked.shape)}")
    if limits is not None and not limits[1] > limits[0]:
        problems.append(f"limits {limits} do not rise")
    if problems:
        raise ValueError(
            f"grid_figure: expected panels of one shape (R, C) = {shape} and labels that fit: {'; '.join(problems)}"
        )
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    names = list(panels)
    values = torch.stack([panels[n].double() for n in names])
    finite = values[values.isfinite()]
    lo, hi = limits or ((float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 1.0))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    rows_, cols_ = shape
    cols = min(len(names), 4)
    rows = -(-len(names) // cols)
    side = min(5.0, max(2.8, 0.42 * max(rows_, cols_) + 1.2))
    fig, axes = plt.subplots(
        rows, cols, figsize=(side * cols + 1.2, side * rows * 0.95), squeeze=False, layout="constrained"
    )
    image = None
    for k, ax in enumerate(axes.flat):
        if k >= len(names):
            ax.set_visible(False)
            continue
        m = values[k]
        image = ax.imshow(m.numpy(), vmin=lo, vmax=hi, cmap="viridis", origin="lower", aspect="auto")
        ax.set_title(names[k], fontsize=10)
        ax.set_xticks(range(cols_), list(xticks), fontsize=7, rotation=45 if max(map(len, xticks)) > 4 else 0)
        ax.set_yticks(range(rows_), list(yticks), fontsize=7)
        if k % cols == 0:
            ax.set_ylabel(ylabel)
        if k // cols == rows - 1 or k + cols >= len(names):
            ax.set_xlabel(xlabel)
        if marked is not None:
            for i, j in marked.nonzero().tolist():
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="white", linewidth=1.5))
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.85, label=colorbar)
    fig.suptitle(title)
    fig.draw_without_rendering()
    cell = axes[0][0].get_window_extent().width * 72.0 / fig.dpi / cols_  # points per cell
    size = min(9.0, 0.3 * cell)
    if size >= 5.0:
        for k, ax in enumerate(axes.flat[: len(names)]):
            for i in range(rows_):
                for j in range(cols_):
                    v = float(values[k, i, j])
                    if math.isnan(v):
                        continue
                    r, g, b, _ = image.cmap(image.norm(v))
                    dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                    ax.text(
                        j, i, f"{v:.2f}", ha="center", va="center", fontsize=size, color="white" if dark else "black"
                    )
    return fig


def _panel_grid(plt: Any, n: int, width: float = 3.4, height: float = 3.0) -> tuple[Any, list[Any]]:
    """A figure of ``n`` panels, at most 3 per row; the unused ones hidden."""
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained")
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def reliability_figure(bins: Mapping[str, Mapping[str, Sequence[float]]], title: str) -> Figure:
    """Reliability diagrams: per confidence bin, the accuracy (bars) against the diagonal of
    perfect calibration, a panel per model; each panel's title gives its ECE, recomputed from
    the bins.

    Args:
        bins: model -> ``{"edges", "confidence", "accuracy", "count"}`` as
            :func:`hyperdnn.metrics.reliability_bins` returns them.
        title: the figure's title.

    Returns:
        The matplotlib figure (Agg backend); the caller saves and closes it.

    Raises:
        ValueError: no models, or bins whose lengths do not fit their edges.

    Example::

        >>> import torch
        >>> from hyperdnn.engine.report import reliability_figure
        >>> from hyperdnn.metrics import reliability_bins
        >>> p, y = torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([0, 0])
        >>> fig = reliability_figure({"net": reliability_bins(p, y, 5)}, "toy")
        >>> fig.axes[0].get_title()  # both in the top bin: |accuracy 0.5 - confidence 0.85|
        'net: ECE 0.350'
    """
    if not bins:
        raise ValueError("reliability_figure: expected at least one model, got none")
    for name, b in bins.items():
        k = len(b["edges"]) - 1
        if k < 1 or not len(b["confidence"]) == len(b["accuracy"]) == len(b["count"]) == k:
            raise ValueError(
                f"reliability_figure: {name!r}: expected {k} bins for {k + 1} edges, got {len(b['confidence'])} "
                f"confidences, {len(b['accuracy'])} accuracies and {len(b['count'])} counts"
            )
    plt = _pyplot()
    fig, axes = _panel_grid(plt, len(bins))
    for ax, (name, b) in zip(axes, bins.items()):
        edges = [float(e) for e in b["edges"]]
        counts = [int(c) for c in b["count"]]
        total = max(sum(counts), 1)
        ece = sum(c / total * abs(float(a) - float(f)) for c, a, f in zip(counts, b["accuracy"], b["confidence"]))
        full = [i for i, c in enumerate(counts) if c > 0]  # empty bins draw nothing
        ax.bar(
            [edges[i] for i in full],
            [float(b["accuracy"][i]) for i in full],
            [edges[i + 1] - edges[i] for i in full],
            align="edge",
            edgecolor="black",
            linewidth=0.5,
            label="accuracy",
        )
        ax.plot(
            [float(b["confidence"][i]) for i in full],
            [float(b["accuracy"][i]) for i in full],
            "o",
            color="tab:red",
            markersize=3,
            label="(mean confidence, accuracy)",
        )
        ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{name}: ECE {ece:.3f}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title)
    return fig


def band_figure(
    x: Sequence[float],
    bands: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    data: tuple[Sequence[float], Sequence[float]] | None = None,
    truth: Sequence[float] | None = None,
    shade: tuple[float, float] | None = None,
    band_label: str = "mean ± 2 sd",
) -> Figure:
    """A predictive mean and its band (``mean ± half-width``) against ``x``, a panel per model,
    on shared y-limits that span every band and the data (with a margin).

    Args:
        x: the inputs, in order.
        bands: model -> (means, half-widths) at ``x`` (e.g. two predictive standard deviations).
        title: the figure's title.
        data: the training points ``(x, y)``, drawn in every panel.
        truth: the noiseless function at ``x``, drawn dashed.
        shade: an x-interval to shade (e.g. the gap without data).
        band_label: the legend's name of the band.

    Returns:
        The matplotlib figure (Agg backend); the caller saves and closes it.

    Raises:
        ValueError: no models, lengths that differ from ``x``'s, or values that are not finite.

    Example::

        >>> from hyperdnn.engine.report import band_figure
        >>> fig = band_figure([0.0, 1.0, 2.0], {"net": ([0.0, 1.0, 0.0], [0.1, 0.5, 0.1])}, "toy")
        >>> [round(float(v), 2) for v in fig.axes[0].get_ylim()]  # the band, -0.1 to 1.5, with a margin
        [-0.18, 1.58]
    """
    if not bands:
        raise ValueError("band_figure: expected at least one model, got none")
    n = len(x)
    bad = [name for name, (m, w) in bands.items() if len(m) != n or len(w) != n]
    if bad:
        raise ValueError(f"band_figure: expected {n} means and {n} half-widths (one per x) for every model, not so for {bad}")  # fmt: skip
    values = [float(v) for m, w in bands.values() for v in (*m, *w)] + [float(v) for v in x]
    if data is not None:
        values += [float(v) for v in (*data[0], *data[1])]
    if not all(math.isfinite(v) for v in values):
        raise ValueError("band_figure: every value must be finite")
    lows = [float(m_) - float(w_) for m, w in bands.values() for m_, w_ in zip(m, w)]
    highs = [float(m_) + float(w_) for m, w in bands.values() for m_, w_ in zip(m, w)]
    if data is not None:
        lows += [float(v) for v in data[1]]
        highs += [float(v) for v in data[1]]
    lo, hi = min(lows), max(highs)
    margin = 0.05 * ((hi - lo) or 1.0)
    plt = _pyplot()
    fig, axes = _panel_grid(plt, len(bands), 3.8, 3.0)
    for ax, (name, (mean, half)) in zip(axes, bands.items()):
        m = torch.tensor([float(v) for v in mean], dtype=torch.float64)
        w = torch.tensor([float(v) for v in half], dtype=torch.float64)
        if shade is not None:
            ax.axvspan(*shade, color="gray", alpha=0.12, label="no data")
        ax.fill_between(list(x), (m - w).tolist(), (m + w).tolist(), alpha=0.3, label=band_label)
        ax.plot(list(x), m.tolist(), linewidth=1.5, label="predictive mean")
        if truth is not None:
            ax.plot(list(x), list(truth), "--", color="black", linewidth=1, label="true function")
        if data is not None:
            ax.plot(list(data[0]), list(data[1]), ".", color="tab:red", markersize=2, alpha=0.5, label="training data")
        ax.set_ylim(lo - margin, hi + margin)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("x")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("y")
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    return fig


def histogram_figure(
    values: Mapping[str, Mapping[str, Sequence[float]]],
    title: str,
    xlabel: str,
    bins: int = 30,
    limits: tuple[float, float] | None = None,
) -> Figure:
    """Distributions of a score: a panel per model, one step outline per set of inputs, as
    densities over shared bins (sets of different sizes compare).

    Args:
        values: model -> set name (``"in distribution"``, ``"held-out classes"`` ...) -> scores.
        title: the figure's title.
        xlabel: what the score is.
        bins: the number of equal-width bins.
        limits: the range of the bins (default: the smallest to the largest score).

    Returns:
        The matplotlib figure (Agg backend); the caller saves and closes it.

    Raises:
        ValueError: no models, an empty set, ``bins < 1`` or a score that is not finite.

    Example::

        >>> from hyperdnn.engine.report import histogram_figure
        >>> fig = histogram_figure({"net": {"in": [0.1, 0.2], "out": [0.9, 1.0]}}, "toy", "entropy", bins=4)
        >>> fig.axes[0].get_legend_handles_labels()[1]
        ['in', 'out']
    """
    if not values:
        raise ValueError("histogram_figure: expected at least one model, got none")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"histogram_figure: bins must be an int >= 1, got {bins!r}")
    empty = [f"{m}/{s}" for m, sets in values.items() for s, v in sets.items() if len(v) == 0]
    if empty:
        raise ValueError(f"histogram_figure: every set needs scores, these have none: {', '.join(empty)}")
    flat = [float(v) for sets in values.values() for scores in sets.values() for v in scores]
    if not all(math.isfinite(v) for v in flat):
        raise ValueError("histogram_figure: every score must be finite")
    lo, hi = limits if limits is not None else (min(flat), max(flat))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = torch.linspace(lo, hi, bins + 1).tolist()
    plt = _pyplot()
    fig, axes = _panel_grid(plt, len(values))
    for ax, (name, sets) in zip(axes, values.items()):
        for label, scores in sets.items():
            ax.hist([float(v) for v in scores], bins=edges, density=True, histtype="step", linewidth=1.5, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("density")
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    return fig


def curves_and_points_figure(
    panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
    title: str,
    xlabel: str,
    ylabels: Sequence[str],
    points: Collection[str] = (),
    dashed: Collection[str] = (),
    logx: bool = False,
) -> Figure:
    """Curves against points, a panel per entry: a model swept densely over a continuous input
    (a Pareto front over preference rays, a loss over a hyper-parameter) and the few models
    trained separately at fixed values, drawn as unconnected markers.

    The data set the axes: both span the plotted values with a margin (never a fixed range);
    a logarithmic x axis only where asked, every x on it positive.

    Args:
        panels: panel title -> series label -> (x values, y values) of equal length.
        title: the figure's title.
        xlabel: the x-axis label of every panel.
        ylabels: one y-axis label per panel, in order.
        points: series labels drawn as markers only (separately trained models).
        dashed: series labels drawn as dashed lines (e.g. a known front).
        logx: a logarithmic x axis.

    Returns:
        The matplotlib figure (Agg backend); the caller saves and closes it.

    Raises:
        ValueError: no panels, a panel without series, a label count that is not the panel
            count, x and y of different lengths, a value that is not finite, or ``x <= 0`` with
            ``logx`` (every offending series named).

    Example::

        >>> from hyperdnn.engine.report import curves_and_points_figure
        >>> front = {"PHN": ([0.1, 0.3, 0.6], [0.7, 0.4, 0.2]), "separate": ([0.2, 0.5], [0.6, 0.3])}
        >>> fig = curves_and_points_figure({"test losses": front}, "toy", "loss 1", ["loss 2"], points=["separate"])
        >>> [line.get_linestyle() for line in fig.axes[0].get_lines()]   # a curve, then markers only
        ['-', 'None']
    """
    if not panels:
        raise ValueError("curves_and_points_figure: expected at least one panel, got none")
    if len(ylabels) != len(panels):
        raise ValueError(
            f"curves_and_points_figure: expected {len(panels)} y labels (one per panel), got {len(ylabels)}"
        )
    problems = []
    for name, series in panels.items():
        if not series:
            problems.append(f"panel {name!r} has no series")
        for label, (x, y) in series.items():
            if len(x) != len(y):
                problems.append(f"{name}/{label}: {len(x)} x values but {len(y)} y values")
            elif not all(math.isfinite(float(v)) for v in (*x, *y)):
                problems.append(f"{name}/{label}: a value that is not finite")
            elif logx and len(x) and min(map(float, x)) <= 0:
                problems.append(f"{name}/{label}: an x <= 0 on a logarithmic axis")
    if problems:
        raise ValueError(f"curves_and_points_figure: {'; '.join(problems)}")
    plt = _pyplot()
    fig, axes = _panel_grid(plt, len(panels), width=4.6, height=3.8)
    for ax, (name, series), ylabel in zip(axes, panels.items(), ylabels):
        for label, (x, y) in series.items():
            xs, ys = [float(v) for v in x], [float(v) for v in y]
            if label in points:
                ax.plot(xs, ys, "o", markersize=6, markeredgecolor="black", markeredgewidth=0.6, label=label, zorder=3)
            else:
                style = "--" if label in dashed else "-"
                ax.plot(xs, ys, linestyle=style, marker="." if len(xs) <= 30 else "", linewidth=1.4, label=label)
        if logx:
            ax.set_xscale("log")
        ax.margins(0.05, 0.08)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both" if logx else "major")
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title)
    return fig


def image_grid_figure(rows: Mapping[str, torch.Tensor], title: str, limits: tuple[float, float] = (0.0, 1.0)) -> Figure:
    """Images in a grid: one row per entry (a method's reconstructions), one column per image.

    Every image is drawn on the same value range (``limits``), grey for one channel and RGB for
    three, without axes; each row is labelled on its left.

    Args:
        rows: row label -> ``(N, C, H, W)`` images with ``C`` 1 or 3; every row the same shape
            (column ``i`` shows image ``i`` of every row).
        title: the figure's title.
        limits: the values drawn black and white (values outside are clipped).

    Returns:
        The matplotlib figure (Agg backend); the caller saves and closes it.

    Raises:
        ValueError: no rows, rows of different shapes or not ``(N, C, H, W)`` with ``C`` 1 or
            3 (every offending row named), or ``limits`` that do not rise.

    Example::

        >>> import torch
        >>> from hyperdnn.engine.report import image_grid_figure
        >>> fig = image_grid_figure({"images": torch.rand(4, 1, 8, 8), "copies": torch.rand(4, 1, 8, 8)}, "toy")
        >>> len(fig.axes)
        8
    """
    if not rows:
        raise ValueError("image_grid_figure: expected at least one row of images, got none")
    shapes = {label: tuple(v.shape) for label, v in rows.items()}
    shape = next(iter(shapes.values()))
    bad = [f"{label!r} {s}" for label, s in shapes.items() if s != shape or len(s) != 4 or s[1] not in (1, 3) or s[0] < 1]  # fmt: skip
    if bad or not limits[1] > limits[0]:
        raise ValueError(
            f"image_grid_figure: expected rows of one shape (N, C, H, W) with N >= 1, C 1 or 3 and rising limits; "
            f"got rows {', '.join(bad) or 'as expected'} and limits {limits}"
        )
    plt = _pyplot()
    n, R = shape[0], len(rows)
    fig, axes = plt.subplots(R, n, figsize=(1.1 * n + 1.6, 1.1 * R + 0.5), squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for i in range(n):
            ax = axes[r][i]
            image = images[i].detach().float().clamp(*limits).permute(1, 2, 0)
            if shape[1] == 1:
                ax.imshow(image[..., 0].numpy(), cmap="gray", vmin=limits[0], vmax=limits[1])
            else:
                ax.imshow(((image - limits[0]) / (limits[1] - limits[0])).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
