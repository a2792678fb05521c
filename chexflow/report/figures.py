"""The report's figures, drawn from ``comparison.json`` (and the runs' maps)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from chexflow.analysis.plots import (
    CLASS_COLORS,
    DPI,
    plot_maps_side_by_side,
    plot_mixing,
    plot_silhouette_bars,
)
from chexflow.comparison import RunRecord, aligned_primary_maps, order_records
from chexflow.report.context import fraction_label

MAX_MAP_PANELS = 6  # more runs than this: the first seed of each fraction only


def _label(fraction: float, reference: list[float]) -> str:
    return (
        f"{fraction_label(fraction)} (initial)"
        if fraction in reference
        else fraction_label(fraction)
    )


def _map_records(records: list[RunRecord]) -> list[RunRecord]:
    ordered = order_records(records)
    if len(ordered) <= MAX_MAP_PANELS:
        return ordered
    firsts: dict[float, RunRecord] = {}
    for record in ordered:
        firsts.setdefault(record.fraction, record)
    return list(firsts.values())


def plot_auroc_by_fraction(downstream: dict[str, Any], path: Path) -> Path:
    """Per-class and mean AUROC against the label fraction, 95% CI whiskers."""
    fractions = np.array(downstream["fractions"], dtype=float)
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    log = len(fractions) > 1 and fractions.min() > 0 and fractions.max() / fractions.min() >= 4
    series = [(c, s, CLASS_COLORS.get(c, "#777777"), 1.2) for c, s in downstream["classes"].items()]
    series.append(("mean", downstream["mean"], "#000000", 2.4))
    for k, (name, entry, color, width) in enumerate(series):
        rows = entry["by_fraction"]
        values = np.array([np.nan if r["value"] is None else r["value"] for r in rows])
        low = np.array([np.nan if r["ci_low"] is None else r["ci_low"] for r in rows])
        high = np.array([np.nan if r["ci_high"] is None else r["ci_high"] for r in rows])
        shift = 1 + 0.025 * (k - len(series) / 2) if log else 0.0
        x = fractions * shift if log else fractions + 0.004 * (k - len(series) / 2)
        errors = np.nan_to_num(np.vstack([values - low, high - values]), nan=0.0).clip(min=0)
        ax.errorbar(
            x,
            values,
            yerr=errors,
            color=color,
            linewidth=width,
            marker="o",
            markersize=4,
            capsize=3,
            label=name,
        )
    if log:
        ax.set_xscale("log")
    ax.set_xticks(fractions, [fraction_label(f) for f in fractions])
    ax.minorticks_off()
    ax.axhline(0.5, color="#999999", linewidth=0.8, linestyle=":")
    ax.set_xlabel("labelled fraction of the training pool")
    ax.set_ylabel("AUROC (evaluation set)")
    ax.set_title("AUROC by label fraction (95% CI)", fontsize=11)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def make_figures(
    records: list[RunRecord], comparison: dict[str, Any], plots: Path
) -> dict[str, str]:
    """Write the figures under ``plots``; returns their paths relative to its parent."""
    plots.mkdir(parents=True, exist_ok=True)
    reference = comparison["design"]["reference_fractions"]
    shown = _map_records(records)
    maps = aligned_primary_maps(shown)
    first = shown[-1]
    figures = {
        "tsne_side_by_side": plot_maps_side_by_side(
            maps, first.exclusive(), first.positives(), plots / "tsne_side_by_side.png"
        )
    }
    overlap = comparison["overlap"]
    figures["mixing"] = plot_mixing(
        {
            _label(m["fraction"], reference): (overlap["mixing_classes"], m["matrix"])
            for m in overlap["mixing"]
        },
        plots / "mixing.png",
    )
    silhouettes: dict[str, dict[str, Any]] = {}
    for name, entry in comparison["classwise"].items():
        for row in entry["silhouette"]["by_fraction"]:
            silhouettes.setdefault(_label(row["fraction"], reference), {})[name] = row
    figures["silhouette_by_class"] = plot_silhouette_bars(
        silhouettes, plots / "silhouette_by_class.png"
    )
    if comparison["downstream"]["mean"] is not None:
        figures["auroc_by_fraction"] = plot_auroc_by_fraction(
            comparison["downstream"], plots / "auroc_by_fraction.png"
        )
    return {name: f"{plots.name}/{Path(path).name}" for name, path in figures.items()}
