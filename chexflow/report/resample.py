"""Bootstrap intervals the per-run metrics do not carry, from the run's embeddings.

``cluster_metrics.json`` gives cohesion, separation, centroid distances and kNN mixing as
point values. The report needs their 95% intervals to call a change between fractions,
so it resamples them here, with the same definitions (docs/METRICS.md): class members
are resampled within their class (a stratified bootstrap, class sizes fixed), as count
weights, so nothing is refitted and the kNN neighbours stay those of the full set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from chexflow.analysis.clusters import exclusive_subset, subsample_rows
from chexflow.analysis.projection import cosine_neighbours, l2_normalise

MAX_RESAMPLE_QUERIES = 5_000  # kNN queries whose neighbour shares are resampled
MAX_AGREEMENT_POINTS = 3_000  # images whose neighbourhoods are compared across runs
AGREEMENT_K = 10
BIAS_SHIFTED = ("cohesion/", "separation/", "centroid/")  # keys with bias-shifted intervals


@dataclass
class Resampled:
    """Bootstrap samples ``[B]`` per quantity key, and how they were drawn.

    Keys: ``cohesion/<c>``, ``separation/<c>``, ``purity/<c>``, ``mix/<a>/<b>``
    (share of a's neighbours in b), ``overlap/<a>/<b>`` and ``centroid/<a>/<b>`` (a
    before b in class order). ``scale`` maps a key to the factor √(queries resampled /
    queries measured) that widens a subsample's spread to the full set's (1 = exact).
    """

    samples: dict[str, np.ndarray] = field(default_factory=dict)
    scale: dict[str, float] = field(default_factory=dict)
    n_resamples: int = 0
    n_queries: int = 0


def _class_weights(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """Count weights ``[resamples, n]`` of a bootstrap over ``n`` items."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float32)


def _centroid_samples(
    x: np.ndarray, labels: np.ndarray, n_classes: int, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Resampled class means ``[B, C, d]`` (each class resampled within itself)."""
    means = np.empty((resamples, n_classes, x.shape[1]), dtype=np.float32)
    for c in range(n_classes):
        members = x[labels == c]
        means[:, c] = _class_weights(rng, len(members), resamples) @ members / len(members)
    return means


def _geometry(classes: Sequence[str], means: np.ndarray, out: Resampled) -> None:
    norms = np.linalg.norm(means, axis=2)
    unit = means / np.maximum(norms, 1e-12)[:, :, None]
    distances = np.clip(1.0 - np.einsum("bcd,bed->bce", unit, unit), 0.0, 2.0)
    others = np.where(np.eye(len(classes), dtype=bool)[None], np.inf, distances)
    for i, a in enumerate(classes):
        out.samples[f"cohesion/{a}"] = 1.0 - norms[:, i]
        out.samples[f"separation/{a}"] = others[:, i].min(axis=1)
        for j in range(i + 1, len(classes)):
            out.samples[f"centroid/{a}/{classes[j]}"] = distances[:, i, j]


def _neighbour_shares(
    x: np.ndarray, labels: np.ndarray, n_classes: int, k: int, queries: np.ndarray
) -> np.ndarray:
    """Per query, the share of its k neighbours in each class ``[len(queries), C]``."""
    neighbours, _ = cosine_neighbours(x, k, queries)
    counts = np.zeros((len(queries), n_classes))
    rows = np.repeat(np.arange(len(queries)), neighbours.shape[1])
    np.add.at(counts, (rows, labels[neighbours].ravel()), 1.0)
    return counts / neighbours.shape[1]


def _mixing(
    classes: Sequence[str],
    shares: np.ndarray,
    true: np.ndarray,
    resamples: int,
    rng: np.random.Generator,
    out: Resampled,
) -> None:
    n_classes = len(classes)
    matrix = np.full((resamples, n_classes, n_classes), np.nan)
    for a in range(n_classes):
        rows = shares[true == a]
        if len(rows):
            matrix[:, a] = _class_weights(rng, len(rows), resamples) @ rows / len(rows)
    for i, a in enumerate(classes):
        out.samples[f"purity/{a}"] = matrix[:, i, i]
        for j, b in enumerate(classes):
            if i != j:
                out.samples[f"mix/{a}/{b}"] = matrix[:, i, j]
            if j > i:
                out.samples[f"overlap/{a}/{b}"] = (matrix[:, i, j] + matrix[:, j, i]) / 2


def resample_run(
    features: np.ndarray,
    exclusive: Sequence[str | None],
    classes: Sequence[str],
    k: int,
    resamples: int,
    seed: int,
) -> Resampled:
    """Bootstrap samples of one run's geometry and kNN mixing (see ``Resampled``).

    The kNN queries are those of the analysis (all exclusive images, or its seeded
    10,000); above ``MAX_RESAMPLE_QUERIES`` a seeded subsample of them is resampled and
    its spread scaled to the full count.
    """
    out = Resampled(n_resamples=resamples)
    subset = exclusive_subset([c if c in classes else None for c in exclusive])
    if resamples < 2 or list(subset.classes) != list(classes):
        return Resampled()
    x = l2_normalise(np.asarray(features)[subset.index])
    rng = np.random.default_rng(seed)
    _geometry(classes, _centroid_samples(x, subset.labels, len(classes), resamples, rng), out)
    queries = subsample_rows(len(x), seed)
    measured = len(queries)
    if measured > MAX_RESAMPLE_QUERIES:
        queries = np.sort(rng.choice(queries, size=MAX_RESAMPLE_QUERIES, replace=False))
    shares = _neighbour_shares(x, subset.labels, len(classes), k, queries)
    _mixing(classes, shares, subset.labels[queries], resamples, rng, out)
    out.n_queries = len(queries)
    knn_scale = math.sqrt(len(queries) / measured)
    out.scale = {key: 1.0 if key.startswith(BIAS_SHIFTED) else knn_scale for key in out.samples}
    return out


def agreement_rows(n: int) -> np.ndarray:
    """The images whose neighbourhoods are compared (the same rows for every run)."""
    return subsample_rows(n, 0, MAX_AGREEMENT_POINTS)


def neighbour_lists(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each image's ``AGREEMENT_K`` cosine neighbours among ``rows`` ``[len(rows), k]``."""
    x = l2_normalise(np.asarray(features)[rows])
    return cosine_neighbours(x, AGREEMENT_K)[0]


def neighbour_agreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per image, the share of its neighbours found in both lists ``[n]``."""
    both = np.sort(np.concatenate([a, b], axis=1), axis=1)
    return (both[:, 1:] == both[:, :-1]).sum(axis=1) / a.shape[1]


def mean_samples(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Bootstrap samples ``[B]`` of the mean of ``values``."""
    if resamples < 2 or len(values) == 0:
        return np.empty(0)
    weights = _class_weights(np.random.default_rng(seed), len(values), resamples)
    return weights @ values.astype(np.float32) / len(values)
