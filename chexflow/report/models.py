"""Several models in one comparison: each analysed on its own, contrasts side by side.

Runs of two backbones (or two starting points) at one fraction are two treatments, never
seeds of one: the comparison splits the runs by ``context.model_key``, builds one full
analysis per model, and answers the seed analysis's "model and data specificity"
limitation directly: the headline fraction contrasts of every model next to each other,
and whether their directions agree.
"""

from __future__ import annotations

from typing import Any

from chexflow.comparison import RunRecord
from chexflow.report.context import model_key

HEADLINE = (
    ("mean AUROC", ("downstream", "mean")),
    ("silhouette", ("structure", "overall", "silhouette")),
    ("kNN accuracy", ("structure", "overall", "knn_accuracy")),
    ("linear probe AUROC", ("structure", "overall", "linear_probe")),
)


def split_by_model(records: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """Runs per model and starting point, labelled ``model`` or ``model from start``."""
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        model, start = model_key(record)
        label = model + (f" from {start}" if start else "")
        groups.setdefault(label, []).append(record)
    return groups


def _headline_change(comparison: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    node: Any = comparison
    for part in path:
        node = (node or {}).get(part)
    if not node:
        return None
    return next((c for c in node.get("changes", []) if c.get("primary")), None)


def side_by_side(per_model: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each model's headline contrasts, and per measure whether the directions agree."""
    models = []
    for label, comparison in per_model.items():
        contrast = comparison["conclusion"]["contrast"]
        changes = {name: _headline_change(comparison, path) for name, path in HEADLINE}
        models.append(
            {
                "model": label,
                "n_runs": comparison["design"]["n_runs"],
                "contrast": contrast,
                "changes": changes,
            }
        )
    agreement = {}
    for name, _path in HEADLINE:
        deltas = [m["changes"][name]["delta"] for m in models if m["changes"][name]]
        deltas = [d for d in deltas if d is not None]
        signs = {d > 0 for d in deltas if d != 0}
        calls = [m["changes"][name]["call"] for m in models if m["changes"][name]]
        agreement[name] = {
            "n_models": len(deltas),
            "same_direction": len(deltas) >= 2 and len(signs) <= 1,
            "calls": calls,
        }
    return {"models": models, "agreement": agreement}
