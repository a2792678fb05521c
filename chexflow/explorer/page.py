"""The explorer page: Bokeh figures over one shared data source, written as one HTML file.

Every map of every run draws its points from one ``ColumnDataSource`` (one row per
evaluation image), so a box or lasso selection in any map selects the same rows in all
of them: Bokeh's linked brushing, no code of ours. The only JavaScript written here is
the two controls' callbacks: the colour switch copies a precomputed colour column into
``color``; the class filter swaps the indices of one shared ``IndexFilter``. The page
embeds BokehJS (``INLINE`` resources), so it opens offline from a file.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from bokeh.embed import file_html
from bokeh.layouts import column, row
from bokeh.models import (
    CDSView,
    ColumnDataSource,
    CustomJS,
    Div,
    HoverTool,
    IndexFilter,
    Select,
    Spacer,
    TabPanel,
    Tabs,
)
from bokeh.plotting import figure
from bokeh.resources import INLINE

from chexflow.data.labels import EVAL_CLASSES
from chexflow.explorer.colours import ColourMode, colour_modes, legend_html
from chexflow.explorer.model import ExplorerImage, ExplorerRun, check_inputs, map_title

PAGE_WIDTH = 1320  # px: three maps side by side on a laptop screen
MAX_MAP_WIDTH = 440
SHOWN_NEIGHBOURS = 5
SHORT = {
    "Atelectasis": "Atel",
    "Cardiomegaly": "Card",
    "Consolidation": "Cons",
    "Edema": "Edema",
    "Pleural Effusion": "Eff",
    "Normal": "Normal",
}

COLOUR_JS = """
source.data.color = source.data[cb_obj.value];
source.change.emit();
legend.text = legends[cb_obj.value];
"""
FILTER_JS = """
filter.indices = members[cb_obj.value] ?? null;
"""


def marker_size(n: int) -> float:
    """Screen size of a point: 6 px for ≤ 1,000 images down to 2.5 px at 10,000+."""
    return float(np.clip(6.0 - 3.5 * np.log10(max(n, 1000) / 1000), 2.5, 6.0))


def packed_rgba(colours: Sequence[str]) -> np.ndarray:
    """``#rrggbb`` colours as uint32 ``0xRRGGBBFF``: BokehJS takes them as they are, where
    it would parse 10,000 CSS strings per map (a quarter of a second at 10,000 images)."""
    table = {c: int(c[1:7], 16) << 8 | 0xFF for c in set(colours)}
    return np.array([table[c] for c in colours], dtype=np.uint32)


def _short(classes: Sequence[str]) -> str:
    return "+".join(SHORT.get(c, c) for c in classes) or "none"


def _labels_html(image: ExplorerImage) -> str:
    parts = []
    for state in ("positive", "uncertain", "negative", "blank", "unknown"):
        names = [c for c, s in image.labels.items() if s == state]
        if names:
            shown = "not positive" if state == "unknown" else state
            parts.append(f"<b>{shown}</b>: {html.escape(', '.join(names))}")
    return "<br>".join(parts)


def _neighbours_html(images: Sequence[ExplorerImage], nn: np.ndarray) -> list[str]:
    out = []
    for i, row_ in enumerate(np.asarray(nn)[:, :SHOWN_NEIGHBOURS].tolist()):
        items = []
        for j in row_:
            text = html.escape(_short(images[j].positives))
            if images[j].patient == images[i].patient:
                text += " (same patient)"
            items.append(text)
        out.append(" · ".join(items))
    return out


def _source(
    images: Sequence[ExplorerImage],
    runs: Sequence[ExplorerRun],
    names: Sequence[str],
    thumbnails: Sequence[str] | None,
    modes: Sequence[ColourMode],
) -> ColumnDataSource:
    data: dict[str, object] = {
        "row": np.arange(len(images), dtype=np.int32),
        "patient": [im.patient for im in images],
        "study": [im.study.rsplit("/", 1)[-1] for im in images],
        "labels": [_labels_html(im) for im in images],
    }
    if thumbnails is not None:
        data["thumb"] = list(thumbnails)
    for i, run in enumerate(runs):
        data[f"nn{i}"] = _neighbours_html(images, run.neighbours)
        for j, name in enumerate(names):
            coords = np.asarray(run.maps[name], dtype=np.float32)
            data[f"x{i}_{j}"], data[f"y{i}_{j}"] = coords[:, 0].copy(), coords[:, 1].copy()
    for mode in modes:
        data[mode.key] = packed_rgba(mode.colours)
    data["color"] = data[modes[0].key]
    return ColumnDataSource(data, name="images")


def _tooltip(run_index: int, with_thumbnails: bool) -> str:
    thumb = (
        '<img class="cx-thumb" src="@thumb" width="96" height="96" '
        'style="float:left;margin:0 8px 4px 0;background:#000" alt="radiograph">'
        if with_thumbnails
        else ""
    )
    return (
        '<div class="cx-tip" style="width:260px;font-size:12px;line-height:1.35">'
        f"{thumb}<div><b>@patient</b><br>@study · image #@row</div>"
        '<div class="cx-labels" style="clear:both;padding-top:2px">@labels{safe}</div>'
        '<div class="cx-nn" style="padding-top:2px"><b>nearest in this run</b>: '
        f"@nn{run_index}{{safe}}</div>"
        "</div>"
    )


def _map_figure(
    source: ColumnDataSource,
    view_filter: IndexFilter,
    run: ExplorerRun,
    run_index: int,
    map_index: int,
    name: str,
    width: int,
    size: float,
    with_thumbnails: bool,
) -> figure:
    fig = figure(
        width=width,
        height=width,
        title=run.label,
        tools="box_select,lasso_select,pan,wheel_zoom,reset",
        active_drag="box_select",
        match_aspect=True,
        x_axis_type=None,  # map coordinates have no unit: no axes, no grid (fewer views)
        y_axis_type=None,
        name=f"figure|{name}|{run.label}",
    )
    fig.toolbar.logo = None
    renderer = fig.scatter(
        f"x{run_index}_{map_index}",
        f"y{run_index}_{map_index}",
        source=source,
        view=CDSView(filter=view_filter),
        size=size,
        fill_color="color",
        line_color=None,
        fill_alpha=0.85,
        selection_fill_alpha=1.0,
        nonselection_fill_alpha=0.07,
        name=f"map|{name}|{run.label}",
    )
    fig.add_tools(
        HoverTool(renderers=[renderer], tooltips=_tooltip(run_index, with_thumbnails), limit=1)
    )
    return fig


def _key_numbers(run: ExplorerRun, width: int) -> Div:
    rows = "".join(
        f"<tr><td style='color:#555;padding-right:8px'>{html.escape(k)}</td>"
        f"<td>{html.escape(v)}</td></tr>"
        for k, v in run.key_numbers
    )
    return Div(
        text=f"<table class='cx-key' style='font-size:12px'>{rows}</table>",
        width=width,
        name=f"key|{run.label}",
    )


def _tab(
    source: ColumnDataSource,
    view_filter: IndexFilter,
    runs: Sequence[ExplorerRun],
    map_index: int,
    name: str,
    size: float,
    with_thumbnails: bool,
) -> TabPanel:
    fractions = sorted({r.fraction for r in runs})
    seeds = sorted({r.seed for r in runs})
    width = min(MAX_MAP_WIDTH, PAGE_WIDTH // len(fractions) - 10)
    rows = []
    for seed in seeds:
        cells = []
        for fraction in fractions:
            hit = [i for i, r in enumerate(runs) if r.fraction == fraction and r.seed == seed]
            if not hit:
                cells.append(Spacer(width=width))
                continue
            i = hit[0]
            fig = _map_figure(
                source, view_filter, runs[i], i, map_index, name, width, size, with_thumbnails
            )
            cells.append(column(fig, _key_numbers(runs[i], width)))
        rows.append(row(*cells))
    return TabPanel(child=column(*rows), title=map_title(name))


def _controls(
    source: ColumnDataSource,
    view_filter: IndexFilter,
    images: Sequence[ExplorerImage],
    modes: Sequence[ColourMode],
    classes: Sequence[str],
) -> tuple[Select, Select, Div]:
    legends = {m.key: legend_html(m) for m in modes}
    legend = Div(text=legends[modes[0].key], width=PAGE_WIDTH - 560, name="legend")
    colour = Select(
        title="Colour by",
        value=modes[0].key,
        options=[(m.key, m.title) for m in modes],
        width=300,
        name="colour",
    )
    colour.js_on_change(
        "value",
        CustomJS(args={"source": source, "legend": legend, "legends": legends}, code=COLOUR_JS),
    )
    members = {
        c: [i for i, im in enumerate(images) if im.labels.get(c) == "positive"] for c in classes
    }
    members["multi-label images"] = [i for i, im in enumerate(images) if len(im.positives) > 1]
    members["images with an uncertain label"] = [i for i, im in enumerate(images) if im.uncertain]
    shown = [k for k, v in members.items() if v]
    filter_select = Select(
        title="Show",
        value="all images",
        options=["all images", *shown],
        width=220,
        name="filter",
    )
    filter_select.js_on_change(
        "value",
        CustomJS(
            args={"filter": view_filter, "members": {k: members[k] for k in shown}}, code=FILTER_JS
        ),
    )
    return colour, filter_select, legend


def _header(title: str, images: Sequence[ExplorerImage], runs: Sequence[ExplorerRun]) -> Div:
    n_patients = len({im.patient for im in images})
    text = (
        f"<h2 style='margin:0 0 4px 0'>{html.escape(title)}</h2>"
        f"<div style='font-size:13px;color:#333;max-width:{PAGE_WIDTH}px'>"
        f"{len(images):,} evaluation images of {n_patients:,} patients, embedded by "
        f"{len(runs)} runs; each point is one image, in every map. Maps are aligned "
        "(rotated and reflected) into one frame. Drag a box (or pick the lasso) in one map "
        "to light the same images in all maps and tabs; hover a point for its radiograph, "
        "labels and nearest images in that run's embedding; double-click to clear.</div>"
    )
    return Div(text=text, width=PAGE_WIDTH, name="header")


def build_layout(
    images: Sequence[ExplorerImage],
    runs: Sequence[ExplorerRun],
    thumbnails: Sequence[str] | None,
    classes: Sequence[str],
    title: str,
) -> column:
    """The page's Bokeh layout (header, controls, one tab per map name)."""
    names = check_inputs(images, runs)
    if thumbnails is not None and len(thumbnails) != len(images):
        raise ValueError(f"{len(thumbnails)} thumbnails for {len(images)} images")
    modes = colour_modes(images, runs, classes)
    source = _source(images, runs, names, thumbnails, modes)
    view_filter = IndexFilter(indices=None, name="class-filter")
    size = marker_size(len(images))
    tabs = Tabs(
        tabs=[
            _tab(source, view_filter, runs, j, name, size, thumbnails is not None)
            for j, name in enumerate(names)
        ],
        name="maps",
    )
    colour, filter_select, legend = _controls(source, view_filter, images, modes, classes)
    return column(_header(title, images, runs), row(colour, filter_select, legend), tabs)


def write_page(layout: column, out_path: Path, title: str) -> Path:
    """Write ``layout`` as one self-contained HTML file (BokehJS inlined, no network)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(file_html(layout, INLINE, title), encoding="utf-8")
    return out_path


def write_explorer(
    out_path: Path,
    images: Sequence[ExplorerImage],
    runs: Sequence[ExplorerRun],
    thumbnails: Sequence[str] | None = None,
    *,
    classes: Sequence[str] = EVAL_CLASSES,
    title: str = "Label-fraction explorer",
) -> Path:
    """Write the interactive explorer of aligned maps as one self-contained HTML file.

    One tab per map name the runs share (each t-SNE seed and perplexity, PCA, UMAP); in a
    tab, one map per run (rows: training seeds, columns: fractions), each with the run's
    key numbers. Every point is one image, drawn from one shared data source, so a box or
    lasso selection in one map lights the same images in every map (linked brushing).

    Args:
        out_path: the ``.html`` file to write (its folder is created).
        images: the evaluation images, in the row order of the maps and neighbours.
        runs: the runs, in display order; their maps ``[n, 2]`` already aligned.
        thumbnails: per image, an image URL (``thumbnails.thumbnail_uris``: data URIs, so
            the page stays one file), or None for a page without thumbnails.
        classes: the evaluation classes (filter menu order).
        title: the page's title and heading.

    Returns:
        ``out_path``: 1.7 MB of BokehJS plus about 1 KB per image with three runs
        (thumbnail, labels, neighbours, coordinates); 11.5 MB at 10,000 images
        (bench/bench_explorer.py).

    Raises:
        DataError: maps or neighbours that do not have one row per image, or no map
            name common to all runs.
    """
    layout = build_layout(images, runs, thumbnails, classes, title)
    return write_page(layout, out_path, title)
