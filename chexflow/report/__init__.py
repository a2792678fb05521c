"""The differential analysis of N runs: ``report.md``, ``report.html``, ``comparison.json``.

Three steps, each reading only the previous one's output:

1. ``build_comparison(records)`` computes every number into one JSON-ready dict
   (schema ``chexflow.comparison/2``, docs/REPORT.md);
2. ``text.document(comparison)`` writes the report as blocks from that dict alone, so
   every number in the text is a value of ``comparison.json``;
3. ``render`` turns the blocks into Markdown and into one self-contained HTML page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chexflow.analysis.run_analysis import jsonable
from chexflow.comparison import RunRecord, check_comparable, order_records
from chexflow.report import verdicts
from chexflow.report.context import build_context, check_label_policies
from chexflow.report.fdr import apply_fdr
from chexflow.report.figures import make_figures
from chexflow.report.models import side_by_side, split_by_model
from chexflow.report.render import to_html, to_markdown
from chexflow.report.sections_classes import class_calls, classwise, overlap
from chexflow.report.sections_global import (
    conclusion,
    design,
    downstream,
    limitations,
    run_rows,
    structure,
)
from chexflow.report.stats import CI_LEVEL, MIN_SEEDS_FOR_T, Z_CI
from chexflow.report.text import document

SCHEMA = "chexflow.comparison/2"
TITLE = "Label-fraction comparison"

__all__ = ["SCHEMA", "build_comparison", "render_html", "render_markdown", "write_report"]


def _settings() -> dict[str, Any]:
    return {
        "ci_level": CI_LEVEL,
        "z": Z_CI,
        "min_seeds_for_t": MIN_SEEDS_FOR_T,
        **verdicts.settings(),
    }


def build_comparison(records: list[RunRecord]) -> dict[str, Any]:
    """Every number of the report, as strict JSON-ready data (no NaN, no numpy types).

    Runs of several models (or starting points) are never pooled: each model gets its own
    analysis; the report describes the first and puts every model's headline contrasts
    side by side under ``by_model`` (``models.side_by_side``).
    """
    check_comparable(records)
    check_label_policies(records)
    per_model = split_by_model(records)
    if len(per_model) == 1:
        return _build_one(records)
    built = {label: _build_one(runs) for label, runs in per_model.items()}
    first = built[next(iter(built))]
    first["by_model"] = jsonable(side_by_side(built))
    return first


def _build_one(records: list[RunRecord]) -> dict[str, Any]:
    ordered = order_records(records)
    ctx = build_context(ordered)
    sections: dict[str, Any] = {
        "schema": SCHEMA,
        "settings": _settings(),
        "design": design(ctx),
        "runs": run_rows(ordered),
        "classwise": classwise(ctx),
        "structure": structure(ctx),
        "overlap": overlap(ctx),
        "downstream": downstream(ctx),
        "limitations": limitations(ctx),
    }
    # Calls are final only once the false discovery rate is controlled across all of them.
    sections["design"]["multiplicity"] = apply_fdr(ctx)
    for entry in sections["classwise"].values():
        entry["calls"] = class_calls(ctx, entry)
    sections["conclusion"] = conclusion(ctx, sections)
    return jsonable(sections)


def render_markdown(comparison: dict[str, Any]) -> str:
    return to_markdown(document(comparison))


def render_html(comparison: dict[str, Any], out_dir: Path, explorer: str | None = None) -> str:
    return to_html(document(comparison), out_dir, TITLE, explorer=explorer)


def write_report(
    records: list[RunRecord], out_dir: Path, explorer: str | None = None
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html``, ``comparison.json`` and ``plots/`` into ``out_dir``.

    ``explorer``: the file name of the interactive page written beside the report
    (``chexflow.records.EXPLORER_FILE``), linked from the HTML page's navigation bar."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    comparison = build_comparison(records)
    described = next(iter(split_by_model(records).values()))  # the model the body describes
    comparison["figures"] = make_figures(described, comparison, out_dir / "plots")
    paths = {
        "markdown": out_dir / "report.md",
        "html": out_dir / "report.html",
        "json": out_dir / "comparison.json",
    }
    paths["json"].write_text(json.dumps(comparison, indent=1, allow_nan=False))
    paths["markdown"].write_text(render_markdown(comparison))
    paths["html"].write_text(render_html(comparison, out_dir, explorer))
    return paths
