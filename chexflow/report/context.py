"""Runs grouped by model, starting point and fraction; contrasts; series of estimates.

A *series* of a quantity key is ``{"by_fraction": [estimate + fraction],
"changes": [difference + from/to], "trend"?}``: the unit every section of the
comparison is built from. Every run is scored on one set of patient resamples
(``resample.shared_resamples``), so a fraction's interval is a two-level bootstrap
(seeds, then patients) and a change between fractions a paired bootstrap over the same
patients. Quantities without samples (those the runs logged as plain numbers) fall back
to t-intervals across seeds or one run's own interval.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chexflow.analysis.bootstrap import percentile_interval
from chexflow.comparison import RunRecord, order_records
from chexflow.errors import ChexflowError
from chexflow.report.collect import Quantities, bounds, run_quantities
from chexflow.report.resample import (
    BIAS_SHIFTED,
    Resampled,
    SharedResamples,
    agreement_rows,
    neighbour_agreement,
    neighbour_lists,
    resample_run,
    shared_resamples,
)
from chexflow.report.stats import (
    SIGNIFICANT,
    TOO_FEW,
    aggregate,
    difference,
    interval,
    paired_difference,
    sampled_estimate,
    seed_draws,
)

DEFAULT_RESAMPLES = 200
DEFAULT_MIN_PATIENTS = 10
DEFAULT_FDR = 0.05
RESAMPLE_SEED = 0  # the comparison's patient resamples (the same for every run)
# Pre-declared primary contrasts: called at the 95% level, outside the FDR control.
PRIMARY_KEYS = ("auroc/mean", "overall/silhouette", "overall/knn_accuracy")


def fraction_label(fraction: float) -> str:
    """``0.01`` → ``1%``."""
    return f"{fraction * 100:g}%"


def model_key(record: RunRecord) -> tuple[str, str]:
    """What must match for two runs to be seeds of one group: model and starting point."""
    return record.model, str(getattr(record, "start", "") or "")


@dataclass
class Group:
    """The runs of one model, starting point and label fraction (one per seed)."""

    fraction: float
    records: list[RunRecord]
    quantities: list[Quantities]
    reference: bool
    neighbours: list[np.ndarray | None] = field(default_factory=list)
    resampled: list[Resampled | None] = field(default_factory=list)
    draws: np.ndarray | None = None
    _cache: dict[str, tuple[dict[str, Any], np.ndarray | None]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return fraction_label(self.fraction)

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.records]

    def _sampled(self, key: str) -> bool:
        return bool(self.resampled) and all(
            r is not None and key in r.samples for r in self.resampled
        )

    def _compute(self, key: str) -> tuple[dict[str, Any], np.ndarray | None]:
        if key not in self._cache:
            if self._sampled(key) and self.draws is not None:
                runs = [r for r in self.resampled if r is not None]
                self._cache[key] = sampled_estimate(
                    [r.points[key] for r in runs],
                    np.stack([r.samples[key] for r in runs]),
                    self.draws,
                    self.seeds,
                    [q[key] for q in self.quantities],
                    shift=key.startswith(BIAS_SHIFTED),
                )
            else:
                estimate = aggregate([q.get(key) for q in self.quantities], self.seeds, bounds(key))
                self._cache[key] = (estimate, None)
        return self._cache[key]

    def estimate(self, key: str) -> dict[str, Any]:
        """Mean over seeds with a two-level bootstrap interval, or the fallback."""
        return self._compute(key)[0]

    def samples(self, key: str) -> np.ndarray | None:
        """The estimate's bootstrap samples on the shared resamples (None: not resampled)."""
        return self._compute(key)[1]

    def point(self, key: str) -> float | None:
        """A fixed value of the first run (e.g. a chance level), or None."""
        r = self.resampled[0] if self.resampled else None
        return None if r is None else r.points.get(key)


@dataclass
class Context:
    """Everything the sections are computed from."""

    groups: list[Group]
    classes: list[str]
    auroc_classes: list[str]
    embeddings_available: bool
    class_patients: dict[str, int] = field(default_factory=dict)
    min_patients: int = DEFAULT_MIN_PATIENTS
    fdr: float = DEFAULT_FDR
    shared: SharedResamples | None = None
    tests: list[dict[str, Any]] = field(default_factory=list)
    above_chance: dict[tuple[float, str], dict[str, Any]] = field(default_factory=dict)
    _series: dict[tuple[str, tuple[int, ...]], dict[str, Any]] = field(default_factory=dict)

    @property
    def labelled(self) -> list[Group]:
        """Groups trained on labels (the 0% initial-backbone reference left out)."""
        return [g for g in self.groups if not g.reference]

    def too_few(self, key: str) -> int | None:
        """Patients of the smallest class ``key`` names, when below ``min_patients``.

        Counts single-label patients, the support of the cluster measures; AUROC keys
        (scored on all images of a class) are not limited by it.
        """
        if key.startswith("auroc/"):
            return None
        parts = key.replace("|", "/").split("/")[1:]
        small = [self.class_patients[c] for c in parts if c in self.class_patients]
        small = [n for n in small if n < self.min_patients]
        return min(small) if small else None

    def series(self, key: str, groups: list[Group] | None = None) -> dict[str, Any]:
        """Estimates of ``key`` per fraction and their differences over ``contrasts``."""
        groups = self.groups if groups is None else groups
        memo = (key, tuple(id(g) for g in groups))
        if memo in self._series:
            return self._series[memo]
        estimates = [g.estimate(key) for g in groups]
        by_fraction = [
            {"fraction": g.fraction, **e} for g, e in zip(groups, estimates, strict=True)
        ]
        changes = []
        few = self.too_few(key)
        for i, j in contrasts(groups):
            a, b = groups[i], groups[j]
            sa, sb = a.samples(key), b.samples(key)
            if sa is not None and sb is not None:
                diff = paired_difference(
                    estimates[i], estimates[j], sa, sb, shift=key.startswith(BIAS_SHIFTED)
                )
            else:
                diff = difference(estimates[i], estimates[j])
            change = {
                "from": a.fraction,
                "to": b.fraction,
                "primary": (i, j) == primary_contrast(groups),
                **diff,
            }
            if few is not None:
                change["call"] = TOO_FEW
                change["reason"] = f"too few patients (n = {few})"
            elif change.get("p") is not None:
                self.tests.append(
                    {"key": key, "change": change, "pre_declared": _pre_declared(key, change)}
                )
            changes.append(change)
        out: dict[str, Any] = {"by_fraction": by_fraction, "changes": changes}
        if len(groups) >= 3:
            out["trend"] = trend(changes, groups)
        self._series[memo] = out
        return out

    def all_series(self) -> list[tuple[list[Group], dict[str, Any]]]:
        """Every series computed so far, with its groups (to refresh trends)."""
        by_id = {id(g): g for g in self.groups}
        return [
            ([by_id[i] for i in ids], series)
            for (_key, ids), series in self._series.items()
            if all(i in by_id for i in ids)
        ]


def _pre_declared(key: str, change: dict[str, Any]) -> bool:
    return change["primary"] and key in PRIMARY_KEYS


def primary_contrast(groups: list[Group]) -> tuple[int, int]:
    """The headline comparison: smallest labelled fraction → largest fraction."""
    labelled = [i for i, g in enumerate(groups) if not g.reference]
    first = labelled[0] if len(labelled) >= 2 else 0
    return first, len(groups) - 1


def contrasts(groups: list[Group]) -> list[tuple[int, int]]:
    """Consecutive fractions, the headline contrast, first → last, and the initial
    backbone → every labelled fraction (the bar a fraction must clear)."""
    pairs = [(i, i + 1) for i in range(len(groups) - 1)]
    extras = [primary_contrast(groups), (0, len(groups) - 1)]
    extras += [
        (r, j)
        for r, g in enumerate(groups)
        if g.reference
        for j, h in enumerate(groups)
        if not h.reference
    ]
    for extra in extras:
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


def label_policy(record: RunRecord) -> dict[str, str] | None:
    """The training label policy a run was fine-tuned with (its embeddings' ``meta.json``)."""
    policy = getattr(record, "label_policy", None)
    if policy:
        return dict(policy)
    path = Path(record.directory) / "embeddings" / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return meta.get("label_policy") or None


def check_label_policies(records: list[RunRecord]) -> None:
    """Refuse to compare fine-tuned runs trained with different uncertain-label policies.

    Evaluation is on certain labels whatever the policy, but the policy shapes what the
    model learned: two policies are two treatments, not two seeds of one. Runs that do not
    record their policy (older runs) and the untrained 0% reference are not checked.

    Raises:
        ChexflowError: naming the runs of each policy.
    """
    policies: dict[str, list[str]] = {}
    for record in records:
        policy = None if record.is_reference else label_policy(record)
        if policy is not None:
            key = json.dumps(policy, sort_keys=True)
            policies.setdefault(key, []).append(record.run_id[:8])
    if len(policies) > 1:
        listed = "; ".join(f"{runs} with {key}" for key, runs in policies.items())
        raise ChexflowError(
            f"runs were trained with different label policies ({listed}): compare runs of "
            "one data.label_policy"
        )


def _common_classes(records: list[RunRecord]) -> list[str]:
    first = records[0].metrics["classes"]
    common = [c for c in first if all(c in r.metrics["classes"] for r in records)]
    if len(common) < 2:
        raise ChexflowError("the runs share fewer than 2 classes with cluster metrics")
    return common


def _auroc_classes(records: list[RunRecord]) -> list[str]:
    names = list(records[0].auroc.get("classes", {}))
    return [c for c in names if all(c in r.auroc.get("classes", {}) for r in records)]


def _features(record: RunRecord) -> np.ndarray | None:
    try:
        return record.features()
    except (OSError, ValueError, KeyError):
        return None


def _class_patients(record: RunRecord, classes: list[str]) -> dict[str, int]:
    table = record.table
    exclusive = table["exclusive"].fillna("")
    patients = table["patient"].astype(str) if "patient" in table else table.index.astype(str)
    return {c: int(patients[exclusive == c].nunique()) for c in classes}


def _setting(records: list[RunRecord], name: str, default: Any) -> Any:
    return records[0].metrics.get("params", {}).get(name, default)


def build_context(records: list[RunRecord]) -> Context:
    """Group the runs (lowest fraction first), score each on the shared patient resamples."""
    ordered = order_records(records)
    classes = _common_classes(ordered)
    first = ordered[0]
    boot = first.metrics.get("bootstrap", {})
    resamples = int(boot.get("resamples", DEFAULT_RESAMPLES))
    patients = (
        first.table["patient"].astype(str).tolist()
        if "patient" in first.table
        else [str(i) for i in range(len(first.table))]
    )
    shared = shared_resamples(patients, resamples, RESAMPLE_SEED)
    rows = agreement_rows(len(patients))
    fractions = sorted({r.fraction for r in ordered})
    groups, available = [], True
    models = {model_key(r) for r in ordered}
    if len(models) > 1:
        # Two backbones or starting points are two treatments, never seeds of one.
        named = ", ".join(f"{m}" + (f" from {s}" if s else "") for m, s in sorted(models))
        raise ChexflowError(
            f"the runs come from {len(models)} models ({named}): compare one model and "
            "starting point at a time (runs of different models are not seeds of one)"
        )
    for index, fraction in enumerate(fractions):
        members = [r for r in ordered if r.fraction == fraction]
        quantities, neighbours, resampled = [], [], []
        for record in members:
            features = _features(record)
            available &= features is not None
            run = None
            if features is not None:
                k = int(record.metrics["knn"]["k"])
                run = resample_run(features, record.table, classes, k, shared)
            quantities.append(_with_samples(run_quantities(record), run))
            resampled.append(run)
            neighbours.append(None if features is None else neighbour_lists(features, rows))
        reference = all(r.is_reference for r in members)
        draws = seed_draws(len(members), shared.n_resamples, 1000 + index)
        groups.append(Group(fraction, members, quantities, reference, neighbours, resampled, draws))
    return Context(
        groups,
        classes,
        _auroc_classes(ordered),
        available,
        class_patients=_class_patients(first, classes),
        min_patients=int(_setting(ordered, "min_patients", DEFAULT_MIN_PATIENTS)),
        fdr=float(_setting(ordered, "fdr", DEFAULT_FDR)),
        shared=shared,
    )


def _with_samples(quantities: Quantities, run: Resampled | None) -> Quantities:
    """The run's own interval of every resampled quantity, from the shared resamples."""
    if run is None:
        return quantities
    out = dict(quantities)
    for key, samples in run.samples.items():
        point = run.points[key]
        shift = key.startswith(BIAS_SHIFTED)
        low, high = percentile_interval(point, samples, shift=shift)
        finite = samples[np.isfinite(samples)]
        se = float(finite.std(ddof=1)) if finite.size >= 2 else None
        method = ("bias-shifted " if shift else "") + "bootstrap"
        out[key] = interval(point, low, high, method, se, unit="patient")
    return out


def agreement(
    a: np.ndarray | None, b: np.ndarray | None, shared: SharedResamples | None
) -> dict[str, Any]:
    """Share of each image's embedding neighbours that two runs share, patient-bootstrap CI."""
    if a is None or b is None or a.shape != b.shape or shared is None:
        return interval(None)
    per_image = neighbour_agreement(a, b)
    value = float(per_image.mean())
    w = shared.weights[:, agreement_rows(shared.weights.shape[1])]
    with np.errstate(invalid="ignore", divide="ignore"):
        samples = (w @ per_image) / w.sum(axis=1)
    low, high = percentile_interval(value, samples)
    se = float(np.nanstd(samples, ddof=1)) if len(samples) >= 2 else None
    return interval(value, low, high, "bootstrap", se, unit="patient")
