"""Runs grouped by fraction, the contrasts between fractions, and series of estimates.

A *series* of a quantity key is ``{"by_fraction": [estimate + fraction],
"changes": [difference + from/to], "trend"?}``: the unit every section of the
comparison is built from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chexflow.comparison import RunRecord, order_records
from chexflow.errors import ChexflowError
from chexflow.report.collect import Quantities, bounds, run_quantities
from chexflow.report.resample import (
    Resampled,
    agreement_rows,
    mean_samples,
    neighbour_agreement,
    neighbour_lists,
    resample_run,
)
from chexflow.report.stats import SIGNIFICANT, aggregate, bootstrap_interval, difference, interval

DEFAULT_RESAMPLES = 200


def fraction_label(fraction: float) -> str:
    """``0.01`` → ``1%``."""
    return f"{fraction * 100:g}%"


@dataclass
class Group:
    """The runs of one label fraction (one per seed)."""

    fraction: float
    records: list[RunRecord]
    quantities: list[Quantities]
    reference: bool
    neighbours: list[np.ndarray | None] = field(default_factory=list)

    @property
    def label(self) -> str:
        return fraction_label(self.fraction)

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.records]

    def estimate(self, key: str) -> dict[str, Any]:
        """Mean over seeds (t-interval) or the single run's interval."""
        return aggregate([q.get(key) for q in self.quantities], self.seeds, bounds(key))


@dataclass
class Context:
    """Everything the sections are computed from."""

    groups: list[Group]
    classes: list[str]
    auroc_classes: list[str]
    embeddings_available: bool

    @property
    def labelled(self) -> list[Group]:
        """Groups trained on labels (the 0% initial-backbone reference left out)."""
        return [g for g in self.groups if not g.reference]

    def series(self, key: str, groups: list[Group] | None = None) -> dict[str, Any]:
        """Estimates of ``key`` per fraction and their differences over ``contrasts``."""
        groups = self.groups if groups is None else groups
        estimates = [g.estimate(key) for g in groups]
        by_fraction = [
            {"fraction": g.fraction, **e} for g, e in zip(groups, estimates, strict=True)
        ]
        changes = []
        for i, j in contrasts(groups):
            changes.append(
                {
                    "from": groups[i].fraction,
                    "to": groups[j].fraction,
                    "primary": (i, j) == primary_contrast(groups),
                    **difference(estimates[i], estimates[j]),
                }
            )
        out: dict[str, Any] = {"by_fraction": by_fraction, "changes": changes}
        if len(groups) >= 3:
            out["trend"] = trend(changes, groups)
        return out


def primary_contrast(groups: list[Group]) -> tuple[int, int]:
    """The headline comparison: smallest labelled fraction → largest fraction."""
    labelled = [i for i, g in enumerate(groups) if not g.reference]
    first = labelled[0] if len(labelled) >= 2 else 0
    return first, len(groups) - 1


def contrasts(groups: list[Group]) -> list[tuple[int, int]]:
    """Consecutive fractions, the headline contrast, and first → last."""
    pairs = [(i, i + 1) for i in range(len(groups) - 1)]
    for extra in (primary_contrast(groups), (0, len(groups) - 1)):
        if extra[0] < extra[1] and extra not in pairs:
            pairs.append(extra)
    return pairs


def trend(changes: list[dict[str, Any]], groups: list[Group]) -> dict[str, Any]:
    """Direction over consecutive fractions and how many steps are significant."""
    steps = changes[: len(groups) - 1]
    deltas = [c["delta"] for c in steps if c["delta"] is not None]
    if len(deltas) < len(steps):
        direction = "unknown"
    elif all(d > 0 for d in deltas):
        direction = "rising"
    elif all(d < 0 for d in deltas):
        direction = "falling"
    elif all(d == 0 for d in deltas):
        direction = "flat"
    else:
        direction = "non-monotonic"
    largest = max(range(len(steps)), key=lambda i: abs(steps[i]["delta"] or 0.0))
    return {
        "direction": direction,
        "n_steps": len(steps),
        "n_significant_steps": sum(c["call"] == SIGNIFICANT for c in steps),
        "largest_step": {"from": steps[largest]["from"], "to": steps[largest]["to"]},
    }


def _resample(record: RunRecord) -> tuple[Resampled | None, np.ndarray | None]:
    """The run's bootstrap samples and its embedding neighbour lists (None without embeddings)."""
    try:
        features = record.features()
    except (OSError, ValueError, KeyError):
        return None, None
    m = record.metrics
    boot = m.get("bootstrap", {})
    resamples = int(boot.get("resamples", DEFAULT_RESAMPLES))
    resampled = resample_run(
        features,
        record.exclusive(),
        m["classes"],
        int(m["knn"]["k"]),
        resamples,
        int(boot.get("seed", record.seed)),
    )
    return resampled, neighbour_lists(features, agreement_rows(len(features)))


def _common_classes(records: list[RunRecord]) -> list[str]:
    first = records[0].metrics["classes"]
    common = [c for c in first if all(c in r.metrics["classes"] for r in records)]
    if len(common) < 2:
        raise ChexflowError("the runs share fewer than 2 classes with cluster metrics")
    return common


def _auroc_classes(records: list[RunRecord]) -> list[str]:
    names = list(records[0].auroc.get("classes", {}))
    return [c for c in names if all(c in r.auroc.get("classes", {}) for r in records)]


def build_context(records: list[RunRecord]) -> Context:
    """Group the runs by fraction (lowest first) and collect each run's numbers."""
    ordered = order_records(records)
    fractions = sorted({r.fraction for r in ordered})
    groups, available = [], True
    for fraction in fractions:
        members = [r for r in ordered if r.fraction == fraction]
        quantities, neighbours = [], []
        for record in members:
            resampled, lists = _resample(record)
            available &= resampled is not None
            quantities.append(run_quantities(record, resampled))
            neighbours.append(lists)
        reference = all(r.is_reference for r in members)
        groups.append(Group(fraction, members, quantities, reference, neighbours))
    return Context(groups, _common_classes(ordered), _auroc_classes(ordered), available)


def agreement(a: np.ndarray | None, b: np.ndarray | None, seed: int) -> dict[str, Any]:
    """Share of each image's embedding neighbours that two runs share, with a bootstrap CI."""
    if a is None or b is None or a.shape != b.shape:
        return interval(None)
    per_image = neighbour_agreement(a, b)
    value = float(per_image.mean())
    low, high, se = bootstrap_interval(value, mean_samples(per_image, DEFAULT_RESAMPLES, seed))
    return interval(value, low, high, "bootstrap", se)
