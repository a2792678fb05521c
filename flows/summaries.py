"""Markdown for the Prefect UI: a fine-tune's evaluation at a glance."""

from __future__ import annotations

from typing import Any

from chexflow.data.labels import metric_key
from chexflow.records import fraction_label


def _interval(low: float | None, high: float | None) -> str:
    """`` [low, high]``, or nothing when the bootstrap left the interval undefined."""
    return f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""


def finetune_markdown(
    fraction: float, seed: int, run_id: str, auroc: dict[str, Any], flat: dict[str, float]
) -> str:
    """Mean and per-class AUROC with their 95% intervals, and the silhouettes."""
    rows = [
        f"| {name} | {row['auroc']:.3f}{_interval(row.get('ci_low'), row.get('ci_high'))} | "
        f"{flat.get('silhouette/' + metric_key(name), float('nan')):.3f} |"
        if row.get("auroc") is not None
        else f"| {name} | undefined | |"
        for name, row in auroc["classes"].items()
    ]
    mean = auroc.get("mean")
    return "\n".join(
        [
            f"### Fine-tune {fraction_label(fraction)}, seed {seed}",
            f"MLflow run `{run_id}` · mean AUROC "
            + (
                f"{mean:.3f}{_interval(auroc.get('mean_ci_low'), auroc.get('mean_ci_high'))}"
                if mean is not None
                else "undefined"
            )
            + f" · silhouette {flat.get('silhouette', float('nan')):.3f}",
            "",
            "| class | AUROC [95% CI] | silhouette |",
            "|---|---|---|",
            *rows,
        ]
    )
