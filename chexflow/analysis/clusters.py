"""Cluster quality of the evaluation embeddings, measured in the embedding space.

All metrics use L2-normalised features (cosine geometry). Cluster metrics use the
exclusive subset (images with exactly one evaluation class); multi-label images are
measured separately against the class centroids. Every O(n²) step is blocked or runs
on a seeded subsample whose size is reported next to the number; docs/METRICS.md
defines each value.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    adjusted_rand_score,
    davies_bouldin_score,
    normalized_mutual_info_score,
    roc_auc_score,
    silhouette_score,
)
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from chexflow.analysis.bootstrap import percentile_interval
from chexflow.analysis.projection import (
    BLOCK_FLOATS,
    cosine_neighbours,
    limit_threads,
    row_blocks,
)
from chexflow.data.labels import EVAL_CLASSES
from chexflow.errors import DataError

KNN_TEMPERATURE = 0.07  # weights exp(cos / T), as the weighted kNN of Wu et al. 2018 / DINO
MAX_KNN_QUERIES = 10_000  # kNN queries (neighbours are searched among all points)
MAX_KMEANS_FIT = 20_000  # k-means is fitted on at most this many points, scored on all
MAX_PROBE_POINTS = 10_000  # linear-probe cross-validation sample
MAX_MAP_SILHOUETTE = 10_000  # silhouette on a 2-D map (O(n²))
PROBE_FOLDS = 5
PROBE_C = 0.1
MAX_RESAMPLES_PER_CHUNK = 256


@dataclass(frozen=True)
class ExclusiveSubset:
    """The single-label images used for cluster metrics.

    Attributes:
        index: rows of the full arrays that belong to the subset.
        labels: class code per row of the subset (index into ``classes``).
        classes: classes with at least 2 members, in ``EVAL_CLASSES`` order.
        dropped: classes left out for having fewer than 2 members, with their counts.
    """

    index: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.classes))


def exclusive_subset(exclusive: Sequence[str | None], min_members: int = 2) -> ExclusiveSubset:
    """Select images with exactly one class; drop classes with fewer than ``min_members``."""
    unknown = sorted({c for c in exclusive if c is not None and c not in EVAL_CLASSES})
    if unknown:
        raise DataError(f"unknown exclusive class {unknown}; expected some of {list(EVAL_CLASSES)}")
    names = np.array([c or "" for c in exclusive], dtype=object)
    counts = {c: int((names == c).sum()) for c in EVAL_CLASSES}
    classes = tuple(c for c in EVAL_CLASSES if counts[c] >= min_members)
    dropped = {c: n for c, n in counts.items() if 0 < n < min_members}
    code = {c: i for i, c in enumerate(classes)}
    index = np.array([i for i, c in enumerate(exclusive) if c in code], dtype=np.int64)
    labels = np.array([code[exclusive[i]] for i in index], dtype=np.int64)
    return ExclusiveSubset(index, labels, classes, dropped)


# ---------------------------------------------------------------- geometry


def class_sums(x: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class sums of the rows of ``x`` ``[C, d]`` (float64)."""
    sums = np.zeros((n_classes, x.shape[1]))
    for c in range(n_classes):
        sums[c] = x[labels == c].sum(axis=0, dtype=np.float64)
    return sums


def silhouette_values(x: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Exact per-sample cosine silhouette for L2-normalised rows, in O(n·C·d).

    For unit vectors the mean cosine distance from ``x`` to a cluster is
    ``1 - x·mean(cluster)``, so the silhouette needs only the class sums, not the
    n × n distance matrix. Equal to ``sklearn.metrics.silhouette_samples(x, labels,
    metric="cosine")`` up to rounding.
    """
    sums = class_sums(x, labels, n_classes)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    a = np.empty(len(x))
    b = np.empty(len(x))
    for rows in row_blocks(len(x), x.shape[1]):
        xb = x[rows].astype(np.float64)
        dots = xb @ sums.T
        own = labels[rows]
        self_dot = np.einsum("ij,ij->i", xb, xb)
        block = np.arange(len(xb))
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_dist = (counts - dots) / counts
            a[rows] = (counts[own] - 1 - dots[block, own] + self_dot) / (counts[own] - 1)
        mean_dist[block, own] = np.inf
        b[rows] = mean_dist.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (b - a) / np.maximum(a, b)
    s[counts[labels] <= 1] = 0.0
    return np.nan_to_num(s)


def centroid_geometry(x: np.ndarray, subset: ExclusiveSubset) -> dict:
    """Centroid cosine distances (inter-cluster), cohesion (intra) and nearest neighbours.

    Centroids are means of the L2-normalised features. The mean cosine distance of
    a class's members to their own centroid equals ``1 - ||centroid||``.
    """
    classes = subset.classes
    means = class_sums(x, subset.labels, len(classes)) / subset.counts[:, None]
    norms = np.linalg.norm(means, axis=1)
    unit = means / np.maximum(norms, 1e-12)[:, None]
    matrix = np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    np.fill_diagonal(matrix, 0.0)
    masked = matrix + np.diag(np.full(len(classes), np.inf))
    nearest = {
        c: {"class": classes[int(j)], "distance": float(masked[i, j])}
        for i, (c, j) in enumerate(zip(classes, masked.argmin(axis=1), strict=True))
    }
    return {
        "centroids": means,
        "centroid_distances": {"classes": list(classes), "matrix": matrix.tolist()},
        "intra_distance": {c: float(1.0 - norms[i]) for i, c in enumerate(classes)},
        "nearest_centroid": nearest if len(classes) > 1 else {},
    }


def centred_space(features: np.ndarray) -> np.ndarray:
    """Features centred on their mean over all evaluation images, then L2-normalised.

    Scaling the whole embedding by any factor, or shifting it by any vector, leaves
    this space unchanged, so measures taken in it are free of the embedding's scale
    and offset (pooled CNN features are non-negative: raw cosines sit near 1).
    """
    x = np.asarray(features, dtype=np.float64)
    centred = x - x.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return centred / np.maximum(norms, 1e-12)


def relative_geometry(z: np.ndarray, labels: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """Cohesion and centroid distances relative to the overall spread, in ``centred_space``.

    ``spread`` = RMS distance of the (single-label) images to their overall mean;
    ``cohesion[c]`` = RMS distance of class c's images to their centroid / spread
    (< 1: tighter than the whole set; 1: as spread as the whole set);
    ``distances[a, b]`` = distance between the centroids of a and b / spread. All are
    ratios of distances in one space, so they do not move when the embedding is scaled
    or shifted. Returns ``{"spread", "cohesion" [C], "distances" [C, C]}``.
    """
    z = np.asarray(z, dtype=np.float64)
    centre = z.mean(axis=0)
    spread = float(np.sqrt(np.mean(np.sum((z - centre) ** 2, axis=1))))
    means = np.stack([z[labels == c].mean(axis=0) for c in range(n_classes)])
    cohesion = np.array(
        [
            np.sqrt(np.mean(np.sum((z[labels == c] - means[c]) ** 2, axis=1)))
            for c in range(n_classes)
        ]
    )
    gaps = np.linalg.norm(means[:, None, :] - means[None, :, :], axis=-1)
    scale = spread if spread > 0 else np.nan
    return {"spread": spread, "cohesion": cohesion / scale, "distances": gaps / scale}


# ---------------------------------------------------------------- bootstrap


def bootstrap_weights(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Yield bootstrap resamples of ``n`` items as count weights, in ``[rows, n]`` chunks.

    Row r of a chunk holds how often each item was drawn in resample r (a multinomial
    draw of n with replacement), so a resampled mean is ``W @ v / W.sum(1)``.
    """
    rng = np.random.default_rng(seed)
    rows = max(1, min(MAX_RESAMPLES_PER_CHUNK, (BLOCK_FLOATS // 2) // max(1, n)))
    done = 0
    while done < n_resamples:
        m = min(rows, n_resamples - done)
        draws = rng.integers(0, n, size=(m, n)) + (np.arange(m) * n)[:, None]
        yield np.bincount(draws.ravel(), minlength=m * n).reshape(m, n).astype(np.float32)
        done += m


def weighted_mean(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Resampled means ``[rows]``; NaN where a resample holds none of the items."""
    total = weights.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (weights @ values.astype(np.float32)) / total


def weighted_davies_bouldin(x: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Davies–Bouldin index (Euclidean) of each weighted resample ``[rows]``.

    With all weights 1 this is ``sklearn.metrics.davies_bouldin_score``. A resample
    that misses a class entirely gives NaN.
    """
    n_classes = int(labels.max()) + 1
    rows = len(weights)
    scatter = np.empty((rows, n_classes))
    centres = np.empty((rows, n_classes, x.shape[1]))
    for c in range(n_classes):
        members = labels == c
        xc, wc = x[members], weights[:, members]
        total = wc.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            centre = (wc @ xc) / total
        sq = np.einsum("ij,ij->i", xc, xc)
        dist2 = sq[None, :] - 2.0 * (centre @ xc.T) + np.einsum("ij,ij->i", centre, centre)[:, None]
        with np.errstate(invalid="ignore"):
            scatter[:, c] = (wc * np.sqrt(np.maximum(dist2, 0.0))).sum(axis=1) / total[:, 0]
        centres[:, c] = centre
    gaps = np.linalg.norm(centres[:, :, None, :] - centres[:, None, :, :], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (scatter[:, :, None] + scatter[:, None, :]) / gaps
    ratio[:, np.arange(n_classes), np.arange(n_classes)] = -np.inf
    return ratio.max(axis=2).mean(axis=1)


def interval(value: float | None, samples: np.ndarray | None, method: str = "percentile") -> dict:
    """``{value, ci_low, ci_high}``: a 95% bootstrap interval that contains ``value``.

    ``percentile`` takes the 2.5th and 97.5th percentiles (for resampled means);
    ``shifted`` moves them by the resampling bias ``value − mean(samples)``, for a
    statistic whose resamples are biased (Davies–Bouldin: duplicated points pull the
    centroids towards themselves, so resampled scatter is too small). Either interval
    is widened to contain ``value`` where it would not (``bootstrap.percentile_interval``).
    """
    if value is None or samples is None:
        return {"value": value, "ci_low": None, "ci_high": None}
    low, high = percentile_interval(value, np.asarray(samples), shift=method == "shifted")
    return {"value": value, "ci_low": low, "ci_high": high}


# ---------------------------------------------------------------- neighbours


def subsample_rows(n: int, seed: int, max_rows: int = MAX_KNN_QUERIES) -> np.ndarray:
    """All ``n`` row numbers, or a seeded random subsample of ``max_rows`` of them (sorted)."""
    if n <= max_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))


def knn_vote(
    neighbour_labels: np.ndarray, sims: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted kNN prediction: class scores ``sum exp(cos / T)``; returns (pred, scores)."""
    weights = np.exp((sims.astype(np.float64) - 1.0) / KNN_TEMPERATURE)
    scores = np.zeros((len(sims), n_classes))
    rows = np.repeat(np.arange(len(sims)), sims.shape[1])
    np.add.at(scores, (rows, neighbour_labels.ravel()), weights.ravel())
    return scores.argmax(axis=1), scores


def mixing_matrix(true: np.ndarray, neighbour_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """``M[a, b]``: share of class-a points' neighbours that are in class b (rows sum to 1)."""
    counts = np.zeros((n_classes, n_classes))
    np.add.at(counts, (np.repeat(true, neighbour_labels.shape[1]), neighbour_labels.ravel()), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return counts / counts.sum(axis=1, keepdims=True)


def top_overlaps(mixing: np.ndarray, classes: Sequence[str]) -> list[dict]:
    """Class pairs ranked by symmetric mixing ``(M[a, b] + M[b, a]) / 2``, highest first."""
    pairs = []
    for i, j in itertools.combinations(range(len(classes)), 2):
        a_to_b, b_to_a = float(mixing[i, j]), float(mixing[j, i])
        pairs.append(
            {
                "a": classes[i],
                "b": classes[j],
                "share": (a_to_b + b_to_a) / 2,
                "a_to_b": a_to_b,
                "b_to_a": b_to_a,
            }
        )
    return sorted(pairs, key=lambda p: -np.nan_to_num(p["share"], nan=-1.0))


def knn_metrics(
    x: np.ndarray, subset: ExclusiveSubset, k: int, seed: int
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Weighted kNN accuracy (overall, per class), class mixing and the top overlaps.

    Neighbours are searched among all exclusive points; queries are all of them or a
    seeded subsample of ``MAX_KNN_QUERIES``. Returns the section, the query rows and
    the per-query correctness (0/1), which the bootstrap resamples.
    """
    classes = subset.classes
    queries = subsample_rows(len(x), seed)
    neighbours, sims = cosine_neighbours(x, k, queries)
    neighbour_labels = subset.labels[neighbours]
    predicted, _ = knn_vote(neighbour_labels, sims, len(classes))
    true = subset.labels[queries]
    correct = (predicted == true).astype(np.float64)
    mixing = mixing_matrix(true, neighbour_labels, len(classes))
    by_class = {}
    for c, name in enumerate(classes):
        hits = correct[true == c]
        by_class[name] = {"value": float(hits.mean()) if len(hits) else None, "n": len(hits)}
    section = {
        "k": int(neighbours.shape[1]),
        "n_queries": len(queries),
        "temperature": KNN_TEMPERATURE,
        "accuracy": float(correct.mean()),
        "accuracy_by_class": by_class,
        "mixing": {
            "classes": list(classes),
            "matrix": mixing,
            "base_rate": subset.counts / subset.counts.sum(),
        },
        "top_overlaps": top_overlaps(mixing, classes),
    }
    return section, queries, correct


# ---------------------------------------------------------------- clustering agreement


def purity(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Share of points whose cluster's majority class is their class."""
    table = np.zeros((clusters.max() + 1, labels.max() + 1))
    np.add.at(table, (clusters, labels), 1)
    return float(table.max(axis=1).sum() / len(labels))


def kmeans_agreement(
    x: np.ndarray, labels: np.ndarray, n_seeds: int, seed: int = 0
) -> dict[str, dict[str, float] | int]:
    """k-means (k = number of classes) purity, NMI and ARI, mean ± std over seeds.

    Each run (``n_init=1``, seed ``seed + i``) is fitted on at most
    ``MAX_KMEANS_FIT`` points and assigns all points.
    """
    n_clusters = int(labels.max()) + 1
    fit_rows = subsample_rows(len(x), seed, MAX_KMEANS_FIT)
    scores: dict[str, list[float]] = {"purity": [], "nmi": [], "ari": []}
    for i in range(n_seeds):
        with limit_threads():
            model = KMeans(n_clusters=n_clusters, n_init=1, random_state=seed + i)
            assigned = model.fit(x[fit_rows]).predict(x)
        scores["purity"].append(purity(labels, assigned))
        scores["nmi"].append(float(normalized_mutual_info_score(labels, assigned)))
        scores["ari"].append(float(adjusted_rand_score(labels, assigned)))
    out: dict[str, dict[str, float] | int] = {
        name: {"mean": float(np.mean(v)), "std": float(np.std(v))} for name, v in scores.items()
    }
    out["n_seeds"] = n_seeds
    out["n_fit"] = len(fit_rows)
    return out


# ---------------------------------------------------------------- linear probe


def _undefined(reason: str) -> dict:
    return {"auroc": None, "defined": False, "reason": reason}


def _probe_model() -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, max_iter=500))


def _cv_proba(
    x: np.ndarray, target: np.ndarray, seed: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """Out-of-fold probabilities; with ``groups`` (patients) no patient spans two folds."""
    if groups is None:
        folds = StratifiedKFold(n_splits=PROBE_FOLDS, shuffle=True, random_state=seed)
        splits = folds
    else:
        folds = StratifiedGroupKFold(n_splits=PROBE_FOLDS, shuffle=True, random_state=seed)
        splits = list(folds.split(x, target, groups))
    with limit_threads(), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)  # a class with fewer groups than folds
        return cross_val_predict(_probe_model(), x, target, cv=splits, method="predict_proba")


def _support(target_rows: np.ndarray, groups: np.ndarray | None) -> int:
    """Images, or distinct patients when ``groups`` is given, among ``target_rows``."""
    if groups is None:
        return int(target_rows.sum())
    return len(np.unique(groups[target_rows]))


def _summary(per_class: dict[str, dict], n: int) -> dict:
    defined = [v["auroc"] for v in per_class.values() if v["defined"]]
    return {"classes": per_class, "mean": float(np.mean(defined)) if defined else None, "n": n}


def probe_exclusive(
    x: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    seed: int,
    groups: np.ndarray | None = None,
) -> dict:
    """One-vs-rest AUROC of a multinomial logistic probe, 5-fold cross-validated.

    With ``groups`` (patient codes) the folds are grouped by patient
    (``StratifiedGroupKFold``): one patient's images never sit in the training and the
    test fold at once, and a class needs ≥ 5 patients.
    """
    rows = subsample_rows(len(x), seed, MAX_PROBE_POINTS)
    x, labels = x[rows], labels[rows]
    groups = None if groups is None else np.asarray(groups)[rows]
    unit = "images" if groups is None else "patients"
    support = [_support(labels == c, groups) for c in range(len(classes))]
    eligible = [c for c in range(len(classes)) if support[c] >= PROBE_FOLDS]
    need = f"need ≥ {PROBE_FOLDS} for {PROBE_FOLDS}-fold CV"
    per_class = {
        classes[c]: _undefined(f"{support[c]} {unit} ({need})")
        for c in range(len(classes))
        if c not in eligible
    }
    if len(eligible) < 2:
        for c in eligible:
            per_class[classes[c]] = _undefined("fewer than 2 classes can be cross-validated")
        return _summary(dict(sorted(per_class.items(), key=lambda kv: classes.index(kv[0]))), 0)
    keep = np.isin(labels, eligible)
    proba = _cv_proba(x[keep], labels[keep], seed, None if groups is None else groups[keep])
    for column, c in enumerate(eligible):
        auroc = roc_auc_score(labels[keep] == c, proba[:, column])
        per_class[classes[c]] = {"auroc": float(auroc), "defined": True, "reason": None}
    ordered = {c: per_class[c] for c in classes}
    return {
        **_summary(ordered, int(keep.sum())),
        "grouped_by": "patient" if groups is not None else None,
    }


def probe_multilabel(
    x: np.ndarray,
    positives: Sequence[Sequence[str]],
    classes: Sequence[str],
    seed: int,
    groups: np.ndarray | None = None,
) -> dict:
    """Per-class binary logistic probes on all images (multi-label positives), 5-fold CV,
    grouped by patient when ``groups`` is given."""
    rows = subsample_rows(len(x), seed, MAX_PROBE_POINTS)
    x = x[rows]
    groups = None if groups is None else np.asarray(groups)[rows]
    unit = "" if groups is None else " patients"
    per_class = {}
    for name in classes:
        target = np.array([name in positives[i] for i in rows])
        n_pos, n_neg = _support(target, groups), _support(~target, groups)
        if min(n_pos, n_neg) < PROBE_FOLDS:
            per_class[name] = _undefined(
                f"{n_pos} positive / {n_neg} negative{unit} (need ≥ {PROBE_FOLDS} of each)"
            )
            continue
        proba = _cv_proba(x, target.astype(np.int64), seed, groups)[:, 1]
        per_class[name] = {"auroc": float(roc_auc_score(target, proba)), "defined": True}
        per_class[name]["reason"] = None
    return {
        **_summary(per_class, len(rows)),
        "grouped_by": "patient" if groups is not None else None,
    }


# ---------------------------------------------------------------- 2-D maps


def map_separation(maps: Mapping[str, np.ndarray], subset: ExclusiveSubset, seed: int) -> dict:
    """Silhouette and Davies–Bouldin of the exclusive points on each 2-D map (Euclidean).

    The silhouette uses a seeded subsample of at most ``MAX_MAP_SILHOUETTE`` points.
    """
    sample = min(len(subset.index), MAX_MAP_SILHOUETTE)
    per_map = {}
    for key, coords in maps.items():
        points = coords[subset.index]
        sil = silhouette_score(
            points, subset.labels, sample_size=sample, random_state=seed, metric="euclidean"
        )
        per_map[key] = {
            "silhouette": float(sil),
            "davies_bouldin": float(davies_bouldin_score(points, subset.labels)),
        }

    def spread(name: str) -> dict[str, float | None]:
        values = [m[name] for m in per_map.values()]
        if not values:
            return {"mean": None, "std": None}
        return {"mean": float(np.mean(values)), "std": float(np.std(values))}

    return {
        "silhouette": spread("silhouette"),
        "davies_bouldin": spread("davies_bouldin"),
        "n_maps": len(per_map),
        "n_silhouette": sample,
        "per_map": per_map,
    }


# ---------------------------------------------------------------- multi-label images


def segment_position(
    points: np.ndarray, start: np.ndarray, end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Position ``t`` in [0, 1] of each point's projection on a segment, and its distance."""
    direction = end - start
    length2 = float(direction @ direction)
    t = np.zeros(len(points)) if length2 == 0 else ((points - start) @ direction) / length2
    t = np.clip(t, 0.0, 1.0)
    foot = start + t[:, None] * direction
    return t, np.linalg.norm(points - foot, axis=1)


def betweenness(
    points: np.ndarray, centre_a: np.ndarray, centre_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Betweenness in [0, 1] of points relative to the segment joining two centroids.

    ``(1 - |2t - 1|) * (1 - d_seg / min(d_a, d_b))``: 1 at the midpoint of the segment,
    0 at either centroid or far away from the segment (``d_seg`` -> ``min(d_a, d_b)``).
    Euclidean in the L2-normalised space. Returns ``(score, t)``.
    """
    t, d_seg = segment_position(points, centre_a, centre_b)
    d_a = np.linalg.norm(points - centre_a, axis=1)
    d_b = np.linalg.norm(points - centre_b, axis=1)
    nearest_end = np.minimum(d_a, d_b)
    with np.errstate(divide="ignore", invalid="ignore"):
        closeness = np.where(nearest_end > 0, 1.0 - d_seg / nearest_end, 1.0)
    return (1.0 - np.abs(2.0 * t - 1.0)) * np.clip(closeness, 0.0, 1.0), t


def multilabel_geometry(
    x: np.ndarray,
    positives: Sequence[Sequence[str]],
    subset: ExclusiveSubset,
    centroids: np.ndarray,
) -> dict:
    """Where images with ≥ 2 positives sit relative to the class centroids.

    Per pair of their classes (an image with 3 classes counts in 3 pairs):
    ``betweenness_mean`` (see ``betweenness``), ``share_between`` (projection strictly
    inside the segment and closer to it than to any centroid), ``share_nearest_own``
    (nearest centroid is one of the image's classes), ``share_nearest_other``, and
    ``share_inside_one`` (within the median member distance of one of the pair's
    centroids).
    """
    index = {c: i for i, c in enumerate(subset.classes)}
    multi = [i for i, p in enumerate(positives) if len(set(p)) >= 2]
    radius = _median_radius(x, subset, centroids)
    groups: dict[tuple[str, str], list[int]] = {}
    skipped = 0
    for i in multi:
        own = sorted(set(positives[i]), key=EVAL_CLASSES.index)
        for a, b in itertools.combinations(own, 2):
            if a in index and b in index:
                groups.setdefault((a, b), []).append(i)
            else:
                skipped += 1
    pairs = []
    for (a, b), rows in groups.items():
        pts = x[rows].astype(np.float64)
        score, t = betweenness(pts, centroids[index[a]], centroids[index[b]])
        dist = _distances(pts, centroids)
        nearest = dist.argmin(axis=1)
        own_codes = [{index[c] for c in positives[r] if c in index} for r in rows]
        nearest_own = np.array([n in codes for n, codes in zip(nearest, own_codes, strict=True)])
        _, d_seg = segment_position(pts, centroids[index[a]], centroids[index[b]])
        between = (t > 0) & (t < 1) & (d_seg < dist.min(axis=1))
        inside = (dist[:, index[a]] <= radius[index[a]]) | (dist[:, index[b]] <= radius[index[b]])
        pairs.append(
            {
                "classes": [a, b],
                "count": len(rows),
                "betweenness_mean": float(score.mean()),
                "t_mean": float(t.mean()),
                "share_between": float(between.mean()),
                "share_nearest_own": float(nearest_own.mean()),
                "share_nearest_other": float(1.0 - nearest_own.mean()),
                "share_inside_one": float(inside.mean()),
            }
        )
    pairs.sort(key=lambda p: (-p["count"], p["classes"]))
    return {"n": len(multi), "pairs": pairs, "n_pairs_skipped": skipped}


def _distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Euclidean distances ``[n, C]`` without an n × C × d intermediate."""
    sq = np.einsum("ij,ij->i", points, points)[:, None] - 2.0 * points @ centres.T
    return np.sqrt(np.maximum(sq + np.einsum("ij,ij->i", centres, centres)[None, :], 0.0))


def _median_radius(x: np.ndarray, subset: ExclusiveSubset, centroids: np.ndarray) -> np.ndarray:
    members = x[subset.index]
    radius = np.empty(len(subset.classes))
    for c in range(len(subset.classes)):
        pts = members[subset.labels == c].astype(np.float64)
        radius[c] = np.median(np.linalg.norm(pts - centroids[c], axis=1))
    return radius
