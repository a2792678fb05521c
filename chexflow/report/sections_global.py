"""Whole-representation sections: the runs, global structure, downstream AUROC,
limitations and the conclusion."""

from __future__ import annotations

import json
from itertools import combinations
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from chexflow.comparison import RunRecord
from chexflow.report import verdicts as v
from chexflow.report.context import (
    PRIMARY_KEYS,
    Context,
    Group,
    agreement,
    contrasts,
    label_policy,
    primary_contrast,
)
from chexflow.report.resample import AGREEMENT_K, MAX_AGREEMENT_POINTS
from chexflow.report.sections_classes import base_rates, nearest_class
from chexflow.report.stats import SIGNIFICANT, SUGGESTIVE, aggregate

OVERALL = (
    "silhouette",
    "davies_bouldin",
    "knn_accuracy",
    "calinski_harabasz",
    "kmeans_nmi",
    "kmeans_ari",
    "linear_probe",
    "linear_probe_all",
)


def _lift_pairs(m: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's class pairs by chance-corrected mixing (mean of the two directed lifts)."""
    mixing = m.get("knn", {}).get("mixing", {})
    classes, matrix = mixing.get("classes", []), mixing.get("matrix", [])
    counts = [m.get("class_counts", {}).get(c, 0) for c in classes]
    total = sum(counts)
    pairs = []
    for (i, a), (j, b) in combinations(enumerate(classes), 2):
        if total < 2 or matrix[i][j] is None or matrix[j][i] is None:
            continue
        chance_b, chance_a = counts[j] / (total - 1), counts[i] / (total - 1)
        if chance_a <= 0 or chance_b <= 0:
            continue
        lift = (matrix[i][j] / chance_b + matrix[j][i] / chance_a) / 2
        pairs.append({"a": a, "b": b, "lift": lift, "share": (matrix[i][j] + matrix[j][i]) / 2})
    return sorted(pairs, key=lambda p: -p["lift"])


def run_rows(records: list[RunRecord]) -> list[dict[str, Any]]:
    """One row per run: who it is and its headline numbers."""
    rows = []
    for r in records:
        m = r.metrics
        overlaps = _lift_pairs(m)
        rows.append(
            {
                "run_id": r.run_id,
                "label": r.label,
                "fraction": r.fraction,
                "seed": r.seed,
                "model": r.model,
                "start": r.start or None,  # records.INIT_TAG; None: not recorded
                "kind": r.kind,
                "reference": r.is_reference,
                "auroc_mean": {
                    "value": r.auroc.get("mean"),
                    "ci_low": r.auroc.get("mean_ci_low"),
                    "ci_high": r.auroc.get("mean_ci_high"),
                },
                "silhouette": m.get("silhouette"),
                "davies_bouldin": m.get("davies_bouldin"),
                "knn_accuracy": m.get("knn", {}).get("accuracy"),
                "top_overlap": overlaps[0] if overlaps else None,
            }
        )
    return rows


def design(ctx: Context) -> dict[str, Any]:
    """Fractions, seeds, models and evaluation set the comparison rests on."""
    first = ctx.groups[0].records[0]
    m = first.metrics
    records = [r for g in ctx.groups for r in g.records]
    seeds = [len(g.records) for g in ctx.labelled] or [len(g.records) for g in ctx.groups]
    counts = {c: m["class_counts"][c] for c in ctx.classes}
    return {
        "n_runs": len(records),
        "fractions": [g.fraction for g in ctx.groups],
        "labelled_fractions": [g.fraction for g in ctx.labelled],
        "reference_fractions": [g.fraction for g in ctx.groups if g.reference],
        "seeds": [
            {"fraction": g.fraction, "seeds": g.seeds, "n": len(g.seeds)} for g in ctx.groups
        ],
        "min_seeds": min(seeds),
        "max_seeds": max(seeds),
        "single_seed": max(seeds) == 1,
        "models": sorted({r.model for r in records}),
        "eval_digest": first.eval_digest,
        "n_eval": m.get("n"),
        "dim": m.get("dim"),
        "n_exclusive": m.get("n_exclusive"),
        "n_multilabel": m.get("n_multilabel"),
        "n_no_class": m.get("n_no_class"),
        "classes": ctx.classes,
        "class_counts": counts,
        "dropped_classes": m.get("dropped_classes", {}),
        "auroc_classes": ctx.auroc_classes,
        "knn_k": m.get("knn", {}).get("k"),
        "embeddings_available": ctx.embeddings_available,
        "resamples": ctx.shared.n_resamples if ctx.shared else None,
        "n_patients": ctx.shared.n_patients if ctx.shared else None,
        "class_patients": ctx.class_patients,
        "min_patients": ctx.min_patients,
        "too_few_patients": [c for c in ctx.classes if ctx.too_few(f"class/{c}") is not None],
        "label_policies": sorted(
            {json.dumps(label_policy(r) or {}, sort_keys=True) for r in records}
        ),
        "uncertain_excluded": {
            c: first.auroc["classes"][c].get("n_uncertain_excluded") for c in ctx.auroc_classes
        },
        "intervals": {
            "unit": "patient"
            if ctx.shared and ctx.shared.n_patients < (m.get("n") or 0)
            else "image",
            "one_seed": "percentile bootstrap over patients (bias-shifted for geometry)",
            "several_seeds": "two-level bootstrap: seeds with replacement, then patients",
            "difference": "paired bootstrap over the same patients (seeds drawn per side)",
            "fallback": "t-interval across seeds, or the run's own interval, for numbers "
            "the runs logged without per-image values",
        },
        "fdr": ctx.fdr,
        "primary_keys": list(PRIMARY_KEYS),
    }


def _ranks(values: list[float]) -> list[int]:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=int)
    ranks[order] = np.arange(1, len(values) + 1)
    return ranks.tolist()


def _centroid_values(group: Group, pairs: list[tuple[str, str]]) -> list[float | None]:
    return [group.estimate(f"centroid/{a}/{b}")["value"] for a, b in pairs]


def _matrix(ctx: Context, values: list[float | None]) -> list[list[float | None]]:
    size = len(ctx.classes)
    matrix: list[list[float | None]] = [[0.0] * size for _ in range(size)]
    for (a, b), value in zip(combinations(ctx.classes, 2), values, strict=True):
        i, j = ctx.classes.index(a), ctx.classes.index(b)
        matrix[i][j] = matrix[j][i] = value
    return matrix


def centroid_structure(ctx: Context) -> dict[str, Any]:
    """Inter-cluster distances per fraction, their changes, rank shifts, nearest classes."""
    pairs = list(combinations(ctx.classes, 2))
    values = [_centroid_values(g, pairs) for g in ctx.groups]
    complete = all(x is not None for row in values for x in row)
    ranks = [_ranks(row) for row in values] if complete else None
    shifts, correlations, nearest = [], [], []
    for i, j in contrasts(ctx.groups):
        f0, f1 = ctx.groups[i].fraction, ctx.groups[j].fraction
        if ranks is not None:
            moved = [
                {"a": a, "b": b, "rank_from": ranks[i][p], "rank_to": ranks[j][p]}
                for p, (a, b) in enumerate(pairs)
                if abs(ranks[j][p] - ranks[i][p]) >= v.RANK_SHIFT
            ]
            moved.sort(key=lambda s: -abs(s["rank_to"] - s["rank_from"]))
            shifts.append({"from": f0, "to": f1, "pairs": moved[: v.MAX_RANK_SHIFTS]})
            rho = spearmanr(values[i], values[j]).statistic if len(pairs) > 2 else None
            rho = None if rho is None or not np.isfinite(rho) else float(rho)
            correlations.append({"from": f0, "to": f1, "spearman": rho})
        changed = []
        for name in ctx.classes:
            before = nearest_class(ctx.groups[i], name, ctx.classes)
            after = nearest_class(ctx.groups[j], name, ctx.classes)
            if before != after:
                changed.append({"class": name, "nearest_from": before, "nearest_to": after})
        nearest.append({"from": f0, "to": f1, "classes": changed})
    return {
        "classes": ctx.classes,
        "matrices": [
            {"fraction": g.fraction, "matrix": _matrix(ctx, row)}
            for g, row in zip(ctx.groups, values, strict=True)
        ],
        "mean_distance": [
            {"fraction": g.fraction, "value": float(np.mean(row)) if complete else None}
            for g, row in zip(ctx.groups, values, strict=True)
        ],
        "pairs": [
            {
                "a": a,
                "b": b,
                "distance": ctx.series(f"centroid/{a}/{b}"),
                "ranks": [r[p] for r in ranks] if ranks else None,
            }
            for p, (a, b) in enumerate(pairs)
        ],
        "rank_shifts": shifts,
        "rank_correlation": correlations,
        "nearest_changes": nearest,
    }


def _agreements(ctx: Context) -> dict[str, Any]:
    between = []
    for i, j in contrasts(ctx.groups):
        a, b = ctx.groups[i], ctx.groups[j]
        matched = list(zip(a.neighbours, b.neighbours, a.seeds, strict=False))
        intervals = [agreement(x, y, ctx.shared) for x, y, _seed in matched]
        between.append(
            {
                "from": a.fraction,
                "to": b.fraction,
                **aggregate(intervals, [s for *_, s in matched], (0.0, 1.0)),
            }
        )
    within = []
    for g in ctx.groups:
        if len(g.records) >= 2:
            lists = list(zip(g.neighbours[:-1], g.neighbours[1:], g.seeds, strict=False))
            intervals = [agreement(x, y, ctx.shared) for x, y, _s in lists]
            estimate = aggregate(intervals, [s for *_, s in lists], (0.0, 1.0))
            within.append({"fraction": g.fraction, **estimate})
    return {
        "k": AGREEMENT_K,
        "max_images": MAX_AGREEMENT_POINTS,
        "between": between,
        "within": within,
    }


def structure(ctx: Context) -> dict[str, Any]:
    """Effects of the fraction on the whole representation."""
    return {
        "overall": {name: ctx.series(f"overall/{name}") for name in OVERALL},
        "centroids": centroid_structure(ctx),
        "global": {
            "trustworthiness": ctx.series("map/trustworthiness"),
            "continuity": ctx.series("map/continuity"),
            "knn_preservation": ctx.series("map/knn_preservation"),
            "agreement": _agreements(ctx),
        },
    }


def downstream(ctx: Context) -> dict[str, Any]:
    """Mean and per-class AUROC of the fine-tuned heads (the reference's head is untrained)."""
    groups = ctx.labelled
    first = (groups or ctx.groups)[0].records[0].auroc
    return {
        "fractions": [g.fraction for g in groups],
        "excluded_fractions": [g.fraction for g in ctx.groups if g.reference],
        "n_eval": first.get("n"),
        "n_pos": {c: first["classes"][c].get("n_pos") for c in ctx.auroc_classes},
        "n_neg": {c: first["classes"][c].get("n_neg") for c in ctx.auroc_classes},
        "n_uncertain_excluded": {
            c: first["classes"][c].get("n_uncertain_excluded") for c in ctx.auroc_classes
        },
        "labels": "certain labels only: 1 positive; 0 or blank negative; −1 left out",
        "mean": ctx.series("auroc/mean", groups) if groups else None,
        "classes": {c: ctx.series(f"auroc/{c}", groups) for c in ctx.auroc_classes}
        if groups
        else {},
    }


def limitations(ctx: Context) -> dict[str, Any]:
    """The numbers behind each limitation (t-SNE, spread, imbalance, views, multi-label)."""
    m = ctx.groups[0].records[0].metrics
    counts = {c: m["class_counts"][c] for c in ctx.classes}
    largest, smallest = max(counts, key=counts.__getitem__), min(counts, key=counts.__getitem__)
    n = m.get("n") or 1
    maps = [q.get("map/n_maps", {}).get("value") for g in ctx.groups for q in g.quantities]
    return {
        "views": {
            "tsne": ctx.series("map/tsne_silhouette"),
            "pca": ctx.series("map/pca_silhouette"),
            "umap": ctx.series("map/umap_silhouette") if m.get("umap") else None,
        },
        "map_spread": {
            "min_maps": int(min(x for x in maps if x is not None)) if any(maps) else None,
            "disparity": ctx.series("map/disparity"),
            "knn_overlap": ctx.series("map/knn_overlap"),
            "tsne_silhouette_sd": ctx.series("map/tsne_silhouette_sd"),
            "tsne_seeds": m.get("params", {}).get("tsne_seeds"),
            "perplexities": m.get("params", {}).get("perplexities"),
        },
        "imbalance": {
            "largest": largest,
            "smallest": smallest,
            "ratio": counts[largest] / max(counts[smallest], 1),
            "base_rates": base_rates(ctx),
        },
        "multilabel": {
            "share_exclusive": (m.get("n_exclusive") or 0) / n,
            "share_multilabel": (m.get("n_multilabel") or 0) / n,
            "share_no_class": (m.get("n_no_class") or 0) / n,
        },
    }


def _primary(series: dict[str, Any] | None) -> dict[str, Any] | None:
    if not series:
        return None
    return next((c for c in series["changes"] if c["primary"]), None)


def _class_calls(classwise: dict[str, Any]) -> dict[str, list[str]]:
    """Classes by the call on their per-class silhouette's headline change."""
    keys = {
        "better": "better",
        "worse": "worse",
        "suggests better": "suggests_better",
        "suggests worse": "suggests_worse",
        "no detectable change": "unchanged",
        "untested": "untested",
        "too few patients": "too_few",
    }
    calls: dict[str, list[str]] = {key: [] for key in keys.values()}
    for name, entry in classwise.items():
        change = _primary(entry["silhouette"])
        if change:
            calls[keys.get(v.change_call(change, "silhouette"), "untested")].append(name)
    return calls


def _not_significant(sections: dict[str, Any]) -> list[dict[str, Any]]:
    """Primary-contrast differences whose 95% CI includes zero, by what they measure."""
    candidates: list[tuple[str, dict[str, Any] | None]] = []
    down = sections["downstream"]
    if down["mean"]:
        candidates.append(("mean AUROC", _primary(down["mean"])))
        candidates += [(f"AUROC {c}", _primary(s)) for c, s in down["classes"].items()]
    overall = sections["structure"]["overall"]
    for name, label in (
        ("silhouette", "silhouette"),
        ("knn_accuracy", "kNN accuracy"),
        ("davies_bouldin", "Davies–Bouldin"),
    ):
        candidates.append((label, _primary(overall[name])))
    for name, entry in sections["classwise"].items():
        candidates.append((f"silhouette {name}", _primary(entry["silhouette"])))
    out = []
    for what, change in candidates:
        if change and change["call"] not in (SIGNIFICANT,):
            out.append({"what": what, **change})
    return out


def conclusion(ctx: Context, sections: dict[str, Any]) -> dict[str, Any]:
    """The headline contrast: downstream change, representation change, what is noise."""
    down = sections["downstream"]
    overall = sections["structure"]["overall"]
    i, j = primary_contrast(ctx.groups)
    classes = {c: _primary(s) for c, s in down["classes"].items()}
    return {
        "contrast": {"from": ctx.groups[i].fraction, "to": ctx.groups[j].fraction},
        "downstream": {
            "mean": _primary(down["mean"]),
            "significant": [c for c, d in classes.items() if d and d["call"] == SIGNIFICANT],
            "suggestive": [c for c, d in classes.items() if d and d["call"] == SUGGESTIVE],
        }
        if down["mean"] and len(down["fractions"]) >= 2
        else None,
        "representation": {
            "silhouette": _primary(overall["silhouette"]),
            "knn_accuracy": _primary(overall["knn_accuracy"]),
            "davies_bouldin": _primary(overall["davies_bouldin"]),
            "classes": _class_calls(sections["classwise"]),
        },
        "persistent_overlaps": sections["overlap"]["persistent"],
        "reference_bar": _reference_bar(ctx, sections),
        "not_significant": _not_significant(sections),
        "resolution": {
            "auroc_mean": _half_width(_primary(down["mean"])),
            "silhouette": _half_width(_primary(overall["silhouette"])),
        },
    }


REFERENCE_MEASURES = (
    ("silhouette", "silhouette"),
    ("knn_accuracy", "kNN accuracy"),
    ("linear_probe", "linear probe AUROC"),
)


def _reference_bar(ctx: Context, sections: dict[str, Any]) -> list[dict[str, Any]]:
    """Per labelled fraction and representation measure: does it beat the initial backbone?

    The 0% run is the bar: a fraction that is not significantly better than the untrained
    features on a measure (``beats: false``) has not improved it, whatever its trend.
    """
    reference = [g.fraction for g in ctx.groups if g.reference]
    if not reference:
        return []
    overall = sections["structure"]["overall"]
    out = []
    for name, label in REFERENCE_MEASURES:
        for change in overall[name]["changes"]:
            if change["from"] != reference[0] or change["to"] in reference:
                continue
            better = change["call"] == SIGNIFICANT and (change["delta"] or 0) > 0
            out.append({"measure": label, "key": name, "beats": better, **change})
    return out


def _half_width(change: dict[str, Any] | None) -> float | None:
    """Half the width of a difference's 95% CI: the smallest change it can resolve."""
    if not change or change["ci_low"] is None:
        return None
    return (change["ci_high"] - change["ci_low"]) / 2
