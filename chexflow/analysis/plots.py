"""Figures of the embedding analysis (matplotlib, headless).

Figures are built on ``matplotlib.figure.Figure`` directly (Agg canvas, no pyplot
state), so they render without a display and from worker threads. Every figure
colours a class the same way (``CLASS_COLORS``, Okabe–Ito, colour-blind safe);
images with two or more classes (mid grey) and with none of them (light grey) are drawn
underneath the single-label ones, in greys far enough apart to tell at a glance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from chexflow.data.labels import EVAL_CLASSES

# Okabe & Ito (2008); yellow is left out (unreadable on white).
CLASS_COLORS: dict[str, str] = {
    "Atelectasis": "#E69F00",  # orange
    "Cardiomegaly": "#56B4E9",  # sky blue
    "Consolidation": "#009E73",  # bluish green
    "Edema": "#D55E00",  # vermillion
    "Pleural Effusion": "#0072B2",  # blue
    "Normal": "#CC79A7",  # reddish purple
}
# CIEDE2000 22.7 apart (the former #BBBBBB / #E4E4E4 were 9.8: one grey at marker size);
# tests/test_figures.py keeps every legend pair 20 apart, and each 10 from the white page.
MULTILABEL_COLOR = "#7F7F7F"
NO_CLASS_COLOR = "#CCCCCC"
DPI = 130
RUN_COLORS = ("#4D4D4D", "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9")


def _marker_size(n: int) -> float:
    return float(np.clip(15_000.0 / max(n, 1), 1.0, 16.0))


def _figure(rows: int, columns: int, size: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, columns, squeeze=False)


def _save(fig: Figure, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _draw_map(
    ax: Axes,
    coords: np.ndarray,
    exclusive: Sequence[str | None],
    positives: Sequence[Sequence[str]],
) -> None:
    coords = np.asarray(coords)
    size = _marker_size(len(coords))
    names = np.array([c or "" for c in exclusive], dtype=object)
    multi = np.array([len(p) >= 2 for p in positives])
    none = np.array([len(p) == 0 for p in positives])
    layers = [
        (none, NO_CLASS_COLOR, "none of the classes"),
        (multi, MULTILABEL_COLOR, "multi-label"),
    ]
    layers += [(names == c, CLASS_COLORS[c], c) for c in EVAL_CLASSES]
    for mask, color, label in layers:
        if mask.any():
            ax.scatter(
                *coords[mask].T,
                s=size,
                c=color,
                label=f"{label} ({int(mask.sum())})",
                linewidths=0,
                rasterized=True,
            )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")


def _enlarge_legend_markers(legend: Any) -> None:
    for handle in legend.legend_handles:
        if handle is not None:
            handle.set_sizes([30])
            handle.set_alpha(1.0)


def plot_map(
    coords: np.ndarray,
    exclusive: Sequence[str | None],
    positives: Sequence[Sequence[str]],
    title: str,
    path: Path | str,
) -> Path:
    """A 2-D map coloured by class; legend with per-class counts."""
    fig, axes = _figure(1, 1, (7.5, 6))
    ax = axes[0, 0]
    _draw_map(ax, coords, exclusive, positives)
    ax.set_title(title, fontsize=11)
    legend = ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9, frameon=False)
    _enlarge_legend_markers(legend)
    return _save(fig, path)


def plot_maps_side_by_side(
    maps: Mapping[str, np.ndarray],
    exclusive: Sequence[str | None],
    positives: Sequence[Sequence[str]],
    path: Path | str,
) -> Path:
    """Maps of the same images (aligned beforehand), one panel per label, one legend."""
    count = len(maps)
    columns = min(count, 3)
    rows = -(-count // columns)
    fig, axes = _figure(rows, columns, (4.6 * columns, 4.3 * rows))
    for ax, (label, coords) in zip(axes.flat, maps.items(), strict=False):
        _draw_map(ax, coords, exclusive, positives)
        ax.set_title(label, fontsize=11)
    for ax in list(axes.flat)[count:]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    legend = fig.legend(
        handles, labels, loc="outside lower center", ncol=4, frameon=False, fontsize=9
    )
    _enlarge_legend_markers(legend)
    return _save(fig, path)


def _as_matrix(matrix: Any) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)


def _restrict(classes: Sequence[str], matrix: Any, keep: Sequence[str]) -> np.ndarray:
    rows = [list(classes).index(c) for c in keep]
    return _as_matrix(matrix)[np.ix_(rows, rows)]


def _heatmap(ax: Axes, matrix: np.ndarray, classes: Sequence[str], title: str, diff: bool) -> Any:
    if diff:
        bound = float(np.nanmax(np.abs(matrix))) if np.isfinite(matrix).any() else 1.0
        image = ax.imshow(matrix, cmap="RdBu_r", vmin=-bound or -1, vmax=bound or 1)
    else:
        image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0)
    short = [c.replace("Pleural Effusion", "Pl. Effusion") for c in classes]
    ax.set_xticks(range(len(classes)), short, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), short, fontsize=8)
    ax.set_xlabel("neighbour class", fontsize=9)
    ax.set_title(title, fontsize=10)
    for (i, j), value in np.ndenumerate(matrix):
        if np.isfinite(value):
            dark = abs(value) > 0.6 * (np.nanmax(np.abs(matrix)) if diff else 1.0)
            text = f"{value:+.2f}" if diff else f"{value:.2f}"
            color = "white" if dark else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color=color)
    return image


def plot_mixing(mixing_by_label: Mapping[str, tuple[Sequence[str], Any]], path: Path | str) -> Path:
    """kNN class-mixing heatmaps, one per run, plus ``last - first`` on their common classes.

    At most two panels a row: the report shows figures at most ~1140 CSS px wide, where a
    row of four panels shrank the cell numbers to ~6 px (tests/test_figures.py: ≥ 9 px).
    """
    items = list(mixing_by_label.items())
    panels = len(items) + (1 if len(items) > 1 else 0)
    columns = min(panels, 2)
    rows = -(-panels // columns)
    fig, grid = _figure(rows, columns, (4.4 * columns, 4.2 * rows))
    axes = list(grid.flat)
    for ax, (label, (classes, matrix)) in zip(axes, items, strict=False):
        image = _heatmap(ax, _as_matrix(matrix), list(classes), label, diff=False)
    for ax in axes[::columns]:
        ax.set_ylabel("class", fontsize=9)
    # One scale (0-1) for every run: its colour bar beside the first row only, so that it
    # does not run into the difference panel's own bar below.
    first_row = axes[: min(len(items), columns)]
    fig.colorbar(image, ax=first_row, shrink=0.8, label="share of neighbours")
    if len(items) > 1:
        (first_label, (first_cls, first)), (last_label, (last_cls, last)) = items[0], items[-1]
        common = [c for c in first_cls if c in last_cls]
        delta = _restrict(last_cls, last, common) - _restrict(first_cls, first, common)
        image = _heatmap(axes[len(items)], delta, common, f"{last_label} − {first_label}", True)
        fig.colorbar(image, ax=axes[len(items)], shrink=0.8, label="difference")
    for ax in axes[panels:]:
        ax.axis("off")
    return _save(fig, path)


def plot_silhouette_bars(
    per_label: Mapping[str, Mapping[str, Mapping[str, float | None]]], path: Path | str
) -> Path:
    """Per-class silhouette, one bar per run, 95% CI whiskers."""
    classes = [c for c in EVAL_CLASSES if any(c in v for v in per_label.values())]
    labels = list(per_label)
    width = 0.8 / max(1, len(labels))
    fig, axes = _figure(1, 1, (max(6.0, 1.2 * len(classes) * max(1, len(labels)) ** 0.5), 4))
    ax = axes[0, 0]
    positions = np.arange(len(classes))
    colors = [CLASS_COLORS[c] for c in classes]
    for r, label in enumerate(labels):
        entries = [per_label[label].get(c, {}) for c in classes]
        values = np.array([_num(e.get("value")) for e in entries])
        low = np.array([_num(e.get("ci_low")) for e in entries])
        high = np.array([_num(e.get("ci_high")) for e in entries])
        errors = np.nan_to_num(np.vstack([values - low, high - values]), nan=0.0).clip(min=0)
        ax.bar(
            positions + (r - (len(labels) - 1) / 2) * width,
            np.nan_to_num(values),
            width,
            yerr=errors,
            capsize=2,
            color=colors if len(labels) == 1 else RUN_COLORS[r % len(RUN_COLORS)],
            label=label,
            error_kw={"elinewidth": 0.8},
        )
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xticks(positions, classes, fontsize=9, rotation=20, ha="right")
    for tick, name in zip(ax.get_xticklabels(), classes, strict=True):
        tick.set_color(CLASS_COLORS[name])
    ax.set_ylabel("silhouette (cosine)")
    ax.set_title("Per-class silhouette (95% bootstrap CI)", fontsize=11)
    ax.legend(frameon=False, fontsize=9)
    return _save(fig, path)


def _num(value: float | None) -> float:
    return np.nan if value is None else float(value)
