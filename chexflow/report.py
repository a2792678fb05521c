"""The comparison report: Markdown, self-contained HTML and the JSON of every number used."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

from chexflow.comparison import RunRecord, aligned_primary_maps, order_records


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def _with_ci(block: dict[str, Any] | None, digits: int = 3) -> str:
    if not block or block.get("value", block.get("auroc")) is None:
        return "—"
    value = block.get("value", block.get("auroc"))
    low, high = block.get("ci_low"), block.get("ci_high")
    if low is None or high is None:
        return _fmt(value, digits)
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def summarise_run(record: RunRecord) -> dict[str, Any]:
    """The per-run numbers the first report shows."""
    m = record.metrics
    knn = m.get("knn", {})
    return {
        "run_id": record.run_id,
        "label": record.label,
        "fraction": record.fraction,
        "seed": record.seed,
        "model": record.model,
        "val_auroc_mean": {
            "value": record.auroc.get("mean"),
            "ci_low": record.auroc.get("mean_ci_low"),
            "ci_high": record.auroc.get("mean_ci_high"),
        },
        "silhouette": m.get("silhouette"),
        "davies_bouldin": m.get("davies_bouldin"),
        "knn_accuracy": knn.get("accuracy"),
        "top_overlaps": knn.get("top_overlaps", [])[:3],
    }


def build_comparison(records: list[RunRecord], out_dir: Path) -> dict[str, Any]:
    """Figures under ``out_dir/plots`` and the JSON document behind the report."""
    from chexflow.analysis.plots import plot_maps_side_by_side

    ordered = order_records(records)
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    maps = aligned_primary_maps(ordered)
    reference = ordered[-1]
    exclusive = [e or None for e in reference.table["exclusive"].fillna("")]
    positives = [tuple(p.split("|")) if p else () for p in reference.table["positives"].fillna("")]
    plot_maps_side_by_side(maps, exclusive, positives, plots / "tsne_side_by_side.png")
    return {
        "schema": "chexflow.comparison/1",
        "runs": [summarise_run(r) for r in ordered],
        "figures": {"tsne_side_by_side": "plots/tsne_side_by_side.png"},
    }


def render_markdown(comparison: dict[str, Any]) -> str:
    lines = [
        "# Label-fraction comparison",
        "",
        "| run | fraction | seed | mean AUROC [95% CI] | silhouette [95% CI] | "
        "Davies–Bouldin | kNN accuracy | most-mixed pair |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in comparison["runs"]:
        overlaps = run["top_overlaps"]
        pair = (
            f"{overlaps[0]['a']} ↔ {overlaps[0]['b']} ({overlaps[0]['share']:.0%})"
            if overlaps
            else "—"
        )
        lines.append(
            f"| `{run['run_id'][:8]}` | {run['fraction']:g} | {run['seed']} | "
            f"{_with_ci(run['val_auroc_mean'])} | {_with_ci(run['silhouette'])} | "
            f"{_with_ci(run['davies_bouldin'])} | {_with_ci(run['knn_accuracy'])} | {pair} |"
        )
    lines += ["", "## t-SNE maps, aligned to the largest fraction", ""]
    for name, path in comparison["figures"].items():
        lines.append(f"![{name}]({path})")
    return "\n".join(lines) + "\n"


def render_html(markdown_text: str, comparison: dict[str, Any], out_dir: Path) -> str:
    """A self-contained page: the table as HTML, figures inlined as base64 PNG."""
    body: list[str] = []
    for line in markdown_text.splitlines():
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("|---"):
            continue
        elif line.startswith("|"):
            cells = [html.escape(c.strip().strip("`")) for c in line.strip("|").split("|")]
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        elif line.startswith("!["):
            rel = line[line.index("(") + 1 : -1]
            data = base64.b64encode((out_dir / rel).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(rel)}" src="data:image/png;base64,{data}">')
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    text = "\n".join(body).replace("</h1>\n<tr>", "</h1>\n<table><tr>", 1)
    text = text.replace("</tr>\n<h2>", "</tr></table>\n<h2>", 1)
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td{border:1px solid #ccc;padding:4px 8px}"
        "img{max-width:100%}"
    )
    return (
        f"<!doctype html><meta charset='utf-8'><title>chexflow comparison</title>"
        f"<style>{style}</style>\n{text}\n"
    )


def write_report(records: list[RunRecord], out_dir: Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.html``, ``comparison.json`` and plots into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    comparison = build_comparison(records, out_dir)
    markdown_text = render_markdown(comparison)
    paths = {
        "markdown": out_dir / "report.md",
        "html": out_dir / "report.html",
        "json": out_dir / "comparison.json",
    }
    paths["markdown"].write_text(markdown_text)
    paths["html"].write_text(render_html(markdown_text, comparison, out_dir))
    paths["json"].write_text(json.dumps(comparison, indent=2, allow_nan=False, default=str))
    return paths
