"""One run's numbers as flat ``key -> interval``: what the comparison aggregates.

Values as the run's own artifacts logged them (``metrics/evaluation.json`` and
``metrics/cluster_metrics.json``, docs/METRICS.md), with the intervals they carry, or a
Wilson interval for shares of counted images. Where the embeddings are at hand,
``context`` replaces every quantity ``resample.py`` re-scores by its value and
patient-bootstrap interval on the comparison's shared resamples.

Keys: ``auroc/mean``, ``auroc/<c>``; ``overall/<name>``; per class ``silhouette/<c>``,
``cohesion/<c>``, ``separation/<c>``, ``purity/<c>``, ``knn_accuracy/<c>``; per pair
``mix/<a>/<b>``, ``overlap/<a>/<b>``, ``centroid/<a>/<b>``; ``map/<name>``; per
multi-label pair ``ml/<a>|<b>/<name>``.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

from chexflow.comparison import RunRecord
from chexflow.report.stats import interval, wilson

Quantities = dict[str, dict[str, Any]]

UNIT = (0.0, 1.0)
SIGNED_UNIT = (-1.0, 1.0)
COSINE_DISTANCE = (0.0, 2.0)
POSITIVE = (0.0, None)
# Natural range per key prefix (most specific first): t-intervals are clipped to it.
BOUNDS: tuple[tuple[str, tuple[float | None, float | None]], ...] = (
    ("overall/silhouette", SIGNED_UNIT),
    ("overall/kmeans_ari", SIGNED_UNIT),
    ("overall/davies_bouldin", POSITIVE),
    ("overall/calinski_harabasz", POSITIVE),
    ("overall/", UNIT),
    ("silhouette/", SIGNED_UNIT),
    ("map/tsne_silhouette_sd", POSITIVE),
    ("map/n_maps", POSITIVE),
    ("map/", SIGNED_UNIT),
    ("cohesion/", POSITIVE),
    ("separation/", POSITIVE),
    ("centroid/", POSITIVE),
    ("lift/", POSITIVE),
    ("pairlift/", POSITIVE),
    ("puritylift/", POSITIVE),
    ("auroc/", UNIT),
    ("purity/", UNIT),
    ("mix/", UNIT),
    ("overlap/", UNIT),
    ("knn_accuracy/", UNIT),
    ("ml/", UNIT),
)


def bounds(key: str) -> tuple[float | None, float | None]:
    """The range a quantity can take (``(None, None)`` when unbounded)."""
    if key.endswith("/count"):
        return POSITIVE
    return next((b for prefix, b in BOUNDS if key.startswith(prefix)), (None, None))


def _ci(block: dict[str, Any] | None, unit: str = "image") -> dict[str, Any]:
    """A logged ``{value, ci_low, ci_high}``; ``unit``: what the run resampled (runs
    logged before patient resampling resampled images)."""
    if not block:
        return interval(None)
    return interval(
        block.get("value"), block.get("ci_low"), block.get("ci_high"), "bootstrap", unit=unit
    )


def _point(value: Any) -> dict[str, Any]:
    return interval(value)


def _unit(m: dict[str, Any]) -> str:
    return m.get("bootstrap", {}).get("unit", "image")


def auroc_quantities(record: RunRecord) -> Quantities:
    """Mean and per-class AUROC of the fine-tuned head with their bootstrap CIs."""
    a = record.auroc
    unit = a.get("bootstrap", {}).get("unit", "image")
    out = {
        "auroc/mean": interval(
            a.get("mean"), a.get("mean_ci_low"), a.get("mean_ci_high"), "bootstrap", unit=unit
        )
    }
    for name, block in a.get("classes", {}).items():
        if block.get("defined", True):
            out[f"auroc/{name}"] = interval(
                block["auroc"], block["ci_low"], block["ci_high"], "bootstrap", unit=unit
            )
    return out


def overall_quantities(m: dict[str, Any]) -> Quantities:
    """Whole-set cluster quality: bootstrap CIs where the metrics carry them."""
    kmeans = m.get("kmeans", {})
    probe = m.get("linear_probe", {})
    return {
        "overall/silhouette": _ci(m.get("silhouette"), _unit(m)),
        "overall/davies_bouldin": _ci(m.get("davies_bouldin"), _unit(m)),
        "overall/knn_accuracy": _ci(m.get("knn", {}).get("accuracy"), _unit(m)),
        "overall/calinski_harabasz": _point(m.get("calinski_harabasz")),
        "overall/kmeans_nmi": _point(kmeans.get("nmi", {}).get("mean")),
        "overall/kmeans_ari": _point(kmeans.get("ari", {}).get("mean")),
        "overall/linear_probe": _point(probe.get("mean")),
        "overall/linear_probe_all": _point(probe.get("all_images", {}).get("mean")),
    }


def class_quantities(m: dict[str, Any]) -> Quantities:
    """Per class: silhouette, scale-free cohesion and separation, kNN purity and accuracy;
    per pair: directed mixing, symmetric overlap and scale-free centroid distance.

    Point values as logged; ``context`` replaces them, with patient-bootstrap intervals,
    by the values it re-scores from the embeddings.
    """
    classes = m["classes"]
    mixing = m["knn"]["mixing"]["matrix"]
    rel = m.get("relative_geometry") or {}
    cohesion = rel.get("cohesion", {})
    separation = rel.get("separation", {})
    distances = rel.get("centroid_distances", {}).get("matrix")
    out: Quantities = {}
    for i, c in enumerate(classes):
        out[f"silhouette/{c}"] = _ci(m["silhouette_by_class"].get(c), _unit(m))
        out[f"cohesion/{c}"] = _point(cohesion.get(c))
        out[f"separation/{c}"] = _point(separation.get(c, {}).get("distance"))
        out[f"purity/{c}"] = _point(mixing[i][i])
        accuracy = m["knn"]["accuracy_by_class"].get(c, {})
        out[f"knn_accuracy/{c}"] = wilson(accuracy.get("value"), accuracy.get("n"))
        for j, b in enumerate(classes):
            if i != j and mixing[i][j] is not None:
                out[f"mix/{c}/{b}"] = _point(mixing[i][j])
    for (i, a), (j, b) in combinations(enumerate(classes), 2):
        if mixing[i][j] is not None and mixing[j][i] is not None:
            out[f"overlap/{a}/{b}"] = _point((mixing[i][j] + mixing[j][i]) / 2)
        out[f"centroid/{a}/{b}"] = _point(distances[i][j] if distances else None)
    return out


def map_quantities(m: dict[str, Any]) -> Quantities:
    """Map faithfulness, spread across t-SNE maps, and the alternative views."""
    faith = m.get("faithfulness", {})
    visual = m.get("visual_separation", {})
    stability = m.get("map_stability", {})
    out = {
        "map/trustworthiness": _point(faith.get("trustworthiness")),
        "map/continuity": _point(faith.get("continuity")),
        "map/knn_preservation": _point(faith.get("knn_preservation")),
        "map/tsne_silhouette": _point(visual.get("silhouette", {}).get("mean")),
        "map/tsne_silhouette_sd": _point(visual.get("silhouette", {}).get("std")),
        "map/n_maps": _point(visual.get("n_maps")),
        "map/disparity": _point(stability.get("disparity", {}).get("mean")),
        "map/knn_overlap": _point(stability.get("knn_overlap", {}).get("mean")),
    }
    for view in ("pca", "umap"):
        if m.get(view):
            out[f"map/{view}_silhouette"] = _point(m[view].get("silhouette_2d"))
    return out


def multilabel_quantities(m: dict[str, Any]) -> Quantities:
    """Where multi-label images sit, per pair of their classes (Wilson CIs on shares)."""
    out: Quantities = {}
    for pair in m.get("multilabel", {}).get("pairs", []):
        key = "ml/" + "|".join(pair["classes"])
        n = pair["count"]
        out[f"{key}/count"] = _point(n)
        out[f"{key}/betweenness"] = _point(pair["betweenness_mean"])
        for name in ("share_between", "share_nearest_own", "share_inside_one"):
            out[f"{key}/{name}"] = wilson(pair[name], n)
    return out


def run_quantities(record: RunRecord) -> Quantities:
    """Every per-run number the comparison uses, keyed as in the module docstring."""
    m = record.metrics
    return {
        **auroc_quantities(record),
        **overall_quantities(m),
        **class_quantities(m),
        **map_quantities(m),
        **multilabel_quantities(m),
    }
