"""The explorer's colourings: one colour per image for each way of reading the maps.

Classes keep the colours of the static figures (``analysis.plots.CLASS_COLORS``,
Okabe–Ito). The neighbourhood change between two runs is the report's neighbourhood
agreement (docs/REPORT.md): the share of an image's k nearest images (cosine, in the
embedding space) that are among its k nearest in both runs.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from bokeh.palettes import Viridis256

from chexflow.analysis.plots import CLASS_COLORS, MULTILABEL_COLOR, NO_CLASS_COLOR
from chexflow.explorer.model import ExplorerImage, ExplorerRun

STATUS_COLORS = {
    "one class": "#0072B2",
    "several classes": "#D55E00",
    "none of the classes": NO_CLASS_COLOR,
}
UNCERTAIN_COLORS = {
    "no uncertain label": "#C8C8C8",
    "1 uncertain label": "#E69F00",
    "2 or more uncertain labels": "#D55E00",
}


@dataclass(frozen=True)
class ColourMode:
    """A colouring: a hex colour per image and what each colour means.

    Attributes:
        key: the data column holding the colours (``c_class``, ``c_change0``, ...).
        title: the option's text in the "Colour by" menu.
        colours: per image, a ``#rrggbb`` colour.
        legend: ``(colour, meaning)`` pairs; for a gradient, its end and middle stops.
        gradient: whether ``legend`` describes a continuous scale.
    """

    key: str
    title: str
    colours: Sequence[str]
    legend: Sequence[tuple[str, str]]
    gradient: bool = False


def class_mode(images: Sequence[ExplorerImage]) -> ColourMode:
    """Single-label images in their class colour; multi-label and no-class ones in grey."""
    colours = []
    for image in images:
        positives = image.positives
        if len(positives) == 1:
            colours.append(CLASS_COLORS.get(positives[0], "#444444"))
        else:
            colours.append(MULTILABEL_COLOR if positives else NO_CLASS_COLOR)
    classes = sorted({p for im in images for p in im.positives}, key=list(CLASS_COLORS).index)
    legend = [(CLASS_COLORS[c], c) for c in classes if c in CLASS_COLORS]
    legend += [(MULTILABEL_COLOR, "several classes"), (NO_CLASS_COLOR, "none of the classes")]
    return ColourMode("c_class", "class (single-label images)", colours, legend)


def status_mode(images: Sequence[ExplorerImage]) -> ColourMode:
    """One, several or none of the evaluation classes positive."""
    names = list(STATUS_COLORS)
    status = [
        names[0] if len(im.positives) == 1 else names[1 if im.positives else 2] for im in images
    ]
    return ColourMode(
        "c_status",
        "multi-label status",
        [STATUS_COLORS[s] for s in status],
        list((c, n) for n, c in STATUS_COLORS.items()),
    )


def uncertainty_mode(images: Sequence[ExplorerImage]) -> ColourMode:
    """How many evaluation classes the image has an uncertain (-1) label for."""
    names = list(UNCERTAIN_COLORS)
    colours = [UNCERTAIN_COLORS[names[min(len(im.uncertain), 2)]] for im in images]
    return ColourMode(
        "c_uncertain", "uncertain labels", colours, [(c, n) for n, c in UNCERTAIN_COLORS.items()]
    )


def neighbourhood_agreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per image, the share of its ``k`` nearest images found in both lists ``[n]``.

    Args:
        a, b: ``[n, k]`` neighbour row numbers of the same images in two runs (only the
            first ``min(k_a, k_b)`` columns are compared).
    """
    k = min(a.shape[1], b.shape[1])
    if k == 0:
        return np.ones(len(a))
    both = np.sort(np.concatenate([a[:, :k], b[:, :k]], axis=1), axis=1)
    return (both[:, 1:] == both[:, :-1]).sum(axis=1) / k


def change_pairs(runs: Sequence[ExplorerRun]) -> list[tuple[int, int]]:
    """Run pairs worth a change colouring: next fractions of one seed, and first to last."""
    pairs: list[tuple[int, int]] = []
    for seed in sorted({r.seed for r in runs}):
        ordered = sorted(
            (i for i, r in enumerate(runs) if r.seed == seed), key=lambda i: runs[i].fraction
        )
        pairs += list(pairwise(ordered))
        if len(ordered) > 2:
            pairs.append((ordered[0], ordered[-1]))
    return pairs


def change_mode(runs: Sequence[ExplorerRun], a: int, b: int, key: str) -> ColourMode:
    """Each image's neighbourhood agreement between runs ``a`` and ``b`` (Viridis)."""
    agreement = neighbourhood_agreement(
        np.asarray(runs[a].neighbours), np.asarray(runs[b].neighbours)
    )
    steps = np.clip(np.round(agreement * 255).astype(int), 0, 255)
    k = min(np.shape(runs[a].neighbours)[1], np.shape(runs[b].neighbours)[1])
    legend = [
        (Viridis256[0], f"none of its {k} nearest images kept"),
        (Viridis256[128], "half"),
        (Viridis256[255], f"all {k} kept"),
    ]
    title = f"neighbours kept, {runs[a].label} → {runs[b].label}"
    return ColourMode(key, title, [Viridis256[s] for s in steps], legend, gradient=True)


def colour_modes(
    images: Sequence[ExplorerImage], runs: Sequence[ExplorerRun], classes: Sequence[str]
) -> list[ColourMode]:
    """Every colouring the page offers, the class colouring first."""
    del classes  # the class colours are fixed (CLASS_COLORS)
    modes = [class_mode(images), status_mode(images)]
    if any(state != "unknown" for im in images for state in im.labels.values()):
        modes.append(uncertainty_mode(images))
    modes += [
        change_mode(runs, a, b, f"c_change{i}") for i, (a, b) in enumerate(change_pairs(runs))
    ]
    return modes


def legend_html(mode: ColourMode) -> str:
    """The legend of a colouring as inline HTML (swatches, or a gradient bar)."""
    if mode.gradient:
        stops = ", ".join(c for c, _ in mode.legend)
        ends = "".join(f"<span>{html.escape(t)}</span>" for _, t in mode.legend)
        return (
            f"<div class='cx-legend' style='font-size:12px;padding-top:18px'>"
            f"<div style='width:360px;height:10px;background:linear-gradient(to right, {stops})'>"
            f"</div><div style='width:360px;display:flex;justify-content:space-between'>{ends}"
            "</div></div>"
        )
    swatches = "".join(
        f"<span style='margin-right:12px;white-space:nowrap'><span style='display:inline-block;"
        f"width:10px;height:10px;border-radius:5px;background:{c};margin-right:4px'></span>"
        f"{html.escape(t)}</span>"
        for c, t in mode.legend
    )
    return f"<div class='cx-legend' style='font-size:12px;padding-top:22px'>{swatches}</div>"
