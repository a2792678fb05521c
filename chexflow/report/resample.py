"""Every report interval from the runs' embeddings: one patient bootstrap shared by all runs.

The comparison draws ``B`` resamples of the evaluation *patients* once
(``bootstrap.cluster_weights``: a drawn patient brings all its images) and scores every
run on the same resamples. So a run's interval is a cluster bootstrap over patients,
and the difference between two runs, resample by resample, is a **paired** bootstrap
over the same patients (both runs embed the same images). Nothing is refitted: a
resample is a vector of image weights, and every quantity is a weighted sum.

Quantities (keys as in ``collect.py``):

- ``overall/silhouette``, ``silhouette/<c>``: cosine silhouette of the single-label
  images (``clusters.silhouette_values``), weighted means;
- ``overall/davies_bouldin``: recomputed on each weighted resample;
- ``overall/knn_accuracy``, ``knn_accuracy/<c>``: weighted kNN correctness of the queries;
- ``purity/<c>``, ``mix/<a>/<b>``: share of a's k neighbours in b; ``lift/<a>/<b>`` that
  share over its chance level ``n_b / (N − 1)``; ``overlap/<a>/<b>`` the mean of the
  two directed shares, ``pairlift/<a>/<b>`` the mean of the two directed lifts (1 = what
  random neighbours give, whatever the class sizes);
- ``cohesion/<c>``, ``separation/<c>``, ``centroid/<a>/<b>``: scale-free geometry in the
  centred space (``clusters.relative_geometry``), relative to the overall spread;
- ``auroc/mean``, ``auroc/<c>``: re-scored from the per-image scores and certain labels
  that the embeddings index carries (``prob/<c>``, ``label/<c>``), where present;
- ``mlcontrast/<a>|<b>/betweenness`` and ``…/inside_one``: multi-label images of a pair
  minus the single-label images of the *other* classes measured against the same two
  centroids (the baseline a share must beat).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from chexflow.analysis import clusters
from chexflow.analysis.bootstrap import all_weights, patient_codes
from chexflow.analysis.projection import cosine_neighbours, l2_normalise

MAX_RESAMPLE_QUERIES = 10_000  # kNN queries scored per run (same rows for every run)
MAX_AGREEMENT_POINTS = 3_000  # images whose neighbourhoods are compared across runs
AGREEMENT_K = 10
QUERY_SEED = 0  # the kNN queries and agreement rows are the same for every run
BIAS_SHIFTED = ("cohesion/", "separation/", "centroid/", "overall/davies_bouldin")


@dataclass
class Resampled:
    """One run's point values and its samples ``[B]`` on the shared patient resamples."""

    points: dict[str, float] = field(default_factory=dict)
    samples: dict[str, np.ndarray] = field(default_factory=dict)
    n_resamples: int = 0
    n_queries: int = 0


@dataclass
class SharedResamples:
    """The patient resamples every run of a comparison is scored on.

    Attributes:
        weights: image count weights ``[B, n]`` (a patient drawn twice weighs 2).
        codes: patient code per evaluation image ``[n]``.
        seed: the seed of the draws.
    """

    weights: np.ndarray
    codes: np.ndarray
    seed: int

    @property
    def n_resamples(self) -> int:
        return len(self.weights)

    @property
    def n_patients(self) -> int:
        return int(self.codes.max()) + 1 if len(self.codes) else 0


def shared_resamples(patients: Sequence[object], resamples: int, seed: int) -> SharedResamples:
    """Draw ``resamples`` patient bootstrap resamples of the evaluation images once."""
    codes = patient_codes(patients, len(patients))
    return SharedResamples(all_weights(codes, resamples, seed), codes, seed)


def _wmean(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    total = weights.sum(axis=1)
    if values.ndim == 2:
        total = total[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return (weights @ values.astype(np.float64)) / total


def _add(out: Resampled, key: str, point: float, samples: np.ndarray) -> None:
    out.points[key] = float(point)
    out.samples[key] = np.asarray(samples, dtype=np.float64)


def _silhouette(
    x: np.ndarray, labels: np.ndarray, classes: Sequence[str], w: np.ndarray, out: Resampled
) -> None:
    sil = clusters.silhouette_values(x, labels, len(classes))
    _add(out, "overall/silhouette", sil.mean(), _wmean(w, sil))
    for c, name in enumerate(classes):
        members = labels == c
        _add(out, f"silhouette/{name}", sil[members].mean(), _wmean(w[:, members], sil[members]))
    dbi = clusters.weighted_davies_bouldin(x, labels, np.ones((1, len(x)), dtype=np.float32))[0]
    parts = [
        clusters.weighted_davies_bouldin(x, labels, w[i : i + 64]) for i in range(0, len(w), 64)
    ]
    _add(out, "overall/davies_bouldin", dbi, np.concatenate(parts))


def _neighbours(
    x: np.ndarray, labels: np.ndarray, classes: Sequence[str], k: int, w: np.ndarray, out: Resampled
) -> None:
    """kNN accuracy, purity, directed mixing and their chance-corrected lifts."""
    n_classes = len(classes)
    queries = clusters.subsample_rows(len(x), QUERY_SEED, MAX_RESAMPLE_QUERIES)
    neighbours, sims = cosine_neighbours(x, k, queries)
    neighbour_labels = labels[neighbours]
    predicted, _ = clusters.knn_vote(neighbour_labels, sims, n_classes)
    true = labels[queries]
    correct = (predicted == true).astype(np.float64)
    wq = w[:, queries]
    _add(out, "overall/knn_accuracy", correct.mean(), _wmean(wq, correct))
    shares = np.zeros((len(queries), n_classes))
    rows = np.repeat(np.arange(len(queries)), neighbour_labels.shape[1])
    np.add.at(shares, (rows, neighbour_labels.ravel()), 1.0)
    shares /= neighbour_labels.shape[1]
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    # A random neighbour (the query itself excluded) is of class b with this probability.
    chance = np.tile(counts / max(len(x) - 1, 1), (n_classes, 1))
    chance[np.diag_indices(n_classes)] = (counts - 1) / max(len(x) - 1, 1)
    point = np.full((n_classes, n_classes), np.nan)
    sampled = np.full((len(w), n_classes, n_classes), np.nan)
    for a, name in enumerate(classes):
        members = true == a
        if not members.any():
            continue
        _add(
            out,
            f"knn_accuracy/{name}",
            correct[members].mean(),
            _wmean(wq[:, members], correct[members]),
        )
        point[a] = shares[members].mean(axis=0)
        sampled[:, a] = _wmean(wq[:, members], shares[members])
    out.n_queries = len(queries)
    with np.errstate(divide="ignore", invalid="ignore"):
        lift_point, lift_sampled = point / chance, sampled / chance[None]
    for i, a in enumerate(classes):
        if np.isnan(point[i, i]):
            continue
        _add(out, f"purity/{a}", point[i, i], sampled[:, i, i])
        _add(out, f"puritylift/{a}", lift_point[i, i], lift_sampled[:, i, i])
        out.points[f"chance/purity/{a}"] = float(chance[i, i])
        for j, b in enumerate(classes):
            if i == j:
                continue
            _add(out, f"mix/{a}/{b}", point[i, j], sampled[:, i, j])
            _add(out, f"lift/{a}/{b}", lift_point[i, j], lift_sampled[:, i, j])
            out.points[f"chance/mix/{a}/{b}"] = float(chance[i, j])
    for (i, a), (j, b) in itertools.combinations(enumerate(classes), 2):
        if np.isnan(point[i, j]) or np.isnan(point[j, i]):
            continue
        _add(
            out,
            f"overlap/{a}/{b}",
            (point[i, j] + point[j, i]) / 2,
            (sampled[:, i, j] + sampled[:, j, i]) / 2,
        )
        _add(
            out,
            f"pairlift/{a}/{b}",
            (lift_point[i, j] + lift_point[j, i]) / 2,
            (lift_sampled[:, i, j] + lift_sampled[:, j, i]) / 2,
        )
        out.points[f"chance/overlap/{a}/{b}"] = float((chance[i, j] + chance[j, i]) / 2)


def _relative_geometry(
    z: np.ndarray, labels: np.ndarray, classes: Sequence[str], w: np.ndarray, out: Resampled
) -> None:
    """Cohesion, separation and centroid distances over the spread (unit vectors ``z``).

    For unit vectors the mean squared distance to a weighted mean μ is ``1 − ‖μ‖²``,
    so each resample needs only weighted class means.
    """
    n_classes = len(classes)

    def geometry(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        total = weights.sum(axis=1)
        centre = (weights @ z) / total[:, None]
        spread = np.sqrt(np.maximum(1.0 - np.einsum("bd,bd->b", centre, centre), 1e-12))
        means = np.stack(
            [
                (weights[:, labels == c] @ z[labels == c])
                / weights[:, labels == c].sum(axis=1)[:, None]
                for c in range(n_classes)
            ],
            axis=1,
        )
        cohesion = np.sqrt(np.maximum(1.0 - np.einsum("bcd,bcd->bc", means, means), 0.0))
        gaps = np.linalg.norm(means[:, :, None, :] - means[:, None, :, :], axis=-1)
        return cohesion / spread[:, None], gaps / spread[:, None, None]

    with np.errstate(divide="ignore", invalid="ignore"):
        point_coh, point_gap = (a[0] for a in geometry(np.ones((1, len(z)))))
        parts = [geometry(w[i : i + 64].astype(np.float64)) for i in range(0, len(w), 64)]
    coh = np.concatenate([p[0] for p in parts])
    gap = np.concatenate([p[1] for p in parts])
    others = np.where(np.eye(n_classes, dtype=bool)[None], np.inf, gap)
    point_others = np.where(np.eye(n_classes, dtype=bool), np.inf, point_gap)
    for i, a in enumerate(classes):
        _add(out, f"cohesion/{a}", point_coh[i], coh[:, i])
        _add(out, f"separation/{a}", point_others[i].min(), others[:, i].min(axis=1))
        for j in range(i + 1, n_classes):
            _add(out, f"centroid/{a}/{classes[j]}", point_gap[i, j], gap[:, i, j])


def _auroc(table: pd.DataFrame, w: np.ndarray, out: Resampled) -> None:
    """AUROC per class and mean on certain labels, from the index's scores (if logged)."""
    from chexflow.evaluation import certain_labels, score_bins, weighted_auroc

    names = [c[len("prob/") :] for c in table.columns if c.startswith("prob/")]
    names = [c for c in names if f"label/{c}" in table.columns]
    if not names:
        return
    probs = table[[f"prob/{c}" for c in names]].to_numpy(np.float64)
    values = table[[f"label/{c}" for c in names]].apply(pd.to_numeric, errors="coerce")
    targets, mask, _ = certain_labels(values.to_numpy(np.float64))
    pos = ((mask > 0) & (targets > 0.5)).astype(np.float64)
    neg = ((mask > 0) & (targets <= 0.5)).astype(np.float64)
    bins, n_bins = score_bins(probs)
    point = weighted_auroc(bins, n_bins, pos, neg, np.ones((1, len(probs))))[0]
    sampled = np.concatenate(
        [weighted_auroc(bins, n_bins, pos, neg, w[i : i + 32]) for i in range(0, len(w), 32)]
    )
    defined = [j for j in range(len(names)) if np.isfinite(point[j])]
    for j in defined:
        _add(out, f"auroc/{names[j]}", point[j], sampled[:, j])
    if defined:
        with np.errstate(invalid="ignore"):
            _add(out, "auroc/mean", point[defined].mean(), np.nanmean(sampled[:, defined], axis=1))


def _multilabel_contrast(
    x_all: np.ndarray,
    positives: Sequence[Sequence[str]],
    subset: clusters.ExclusiveSubset,
    w: np.ndarray,
    out: Resampled,
) -> None:
    """Multi-label images of a pair against single-label images of the other classes.

    Both groups are measured against the same two centroids (means of the single-label
    images of a and b): mean betweenness and share inside one of the two clusters
    (within the median member distance of a centroid). The contrast multi − baseline is
    what the multi-label images add over any image that is not a or b.
    """
    classes = list(subset.classes)
    index = {c: i for i, c in enumerate(classes)}
    members = x_all[subset.index].astype(np.float64)
    centroids = np.stack([members[subset.labels == c].mean(axis=0) for c in range(len(classes))])
    radius = np.array(
        [
            np.median(np.linalg.norm(members[subset.labels == c] - centroids[c], axis=1))
            for c in range(len(classes))
        ]
    )
    pairs: dict[tuple[str, str], list[int]] = {}
    for i, p in enumerate(positives):
        own = sorted({c for c in p if c in index}, key=classes.index)
        if len(set(p)) >= 2:
            for a, b in itertools.combinations(own, 2):
                pairs.setdefault((a, b), []).append(i)
    for (a, b), rows in pairs.items():
        ia, ib = index[a], index[b]
        baseline = subset.index[(subset.labels != ia) & (subset.labels != ib)]
        if not len(baseline) or not rows:
            continue
        rows_arr = np.asarray(rows)
        values = {}
        for name, idx in (("multi", rows_arr), ("base", baseline)):
            pts = x_all[idx].astype(np.float64)
            score, _t = clusters.betweenness(pts, centroids[ia], centroids[ib])
            d_a = np.linalg.norm(pts - centroids[ia], axis=1)
            d_b = np.linalg.norm(pts - centroids[ib], axis=1)
            inside = ((d_a <= radius[ia]) | (d_b <= radius[ib])).astype(np.float64)
            values[name] = (score, inside, idx)
        key = f"mlcontrast/{a}|{b}"
        for j, stat in ((0, "betweenness"), (1, "inside_one")):
            m_val, b_val = values["multi"][j], values["base"][j]
            m_idx, b_idx = values["multi"][2], values["base"][2]
            point = m_val.mean() - b_val.mean()
            with np.errstate(invalid="ignore", divide="ignore"):
                sampled = _wmean(w[:, m_idx], m_val) - _wmean(w[:, b_idx], b_val)
            _add(out, f"{key}/{stat}", point, sampled)
            out.points[f"{key}/{stat}_multi"] = float(m_val.mean())
            out.points[f"{key}/{stat}_baseline"] = float(b_val.mean())


def resample_run(
    features: np.ndarray,
    table: pd.DataFrame,
    classes: Sequence[str],
    k: int,
    shared: SharedResamples,
) -> Resampled:
    """Point values and shared-resample samples of one run's quantities (see module doc).

    Args:
        features: ``[n, d]`` evaluation embeddings, rows as ``table``.
        table: the embeddings index (``exclusive``, ``positives``, optional ``prob/<c>``
            and ``label/<c>``).
        classes: the comparison's classes (present in every run).
        k: neighbours per kNN query.
        shared: the comparison's patient resamples (``shared_resamples``).
    """
    out = Resampled(n_resamples=shared.n_resamples)
    if shared.n_resamples < 2:
        return out
    exclusive = [e or None for e in table["exclusive"].fillna("")]
    subset = clusters.exclusive_subset([c if c in classes else None for c in exclusive])
    if list(subset.classes) != list(classes):
        return out
    features = np.asarray(features)
    x_all = l2_normalise(features)
    x = x_all[subset.index]
    w = shared.weights[:, subset.index]
    _silhouette(x, subset.labels, classes, w, out)
    _neighbours(x, subset.labels, classes, k, w, out)
    z = clusters.centred_space(features)[subset.index]
    _relative_geometry(z, subset.labels, classes, w, out)
    _auroc(table, shared.weights, out)
    positives = [tuple(p.split("|")) if p else () for p in table["positives"].fillna("")]
    _multilabel_contrast(x_all, positives, subset, shared.weights, out)
    return out


def agreement_rows(n: int) -> np.ndarray:
    """The images whose neighbourhoods are compared (the same rows for every run)."""
    return clusters.subsample_rows(n, QUERY_SEED, MAX_AGREEMENT_POINTS)


def neighbour_lists(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each image's ``AGREEMENT_K`` cosine neighbours among ``rows`` ``[len(rows), k]``."""
    x = l2_normalise(np.asarray(features)[rows])
    return cosine_neighbours(x, AGREEMENT_K)[0]


def neighbour_agreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per image, the share of its neighbours found in both lists ``[n]``."""
    both = np.sort(np.concatenate([a, b], axis=1), axis=1)
    return (both[:, 1:] == both[:, :-1]).sum(axis=1) / a.shape[1]
