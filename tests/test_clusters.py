"""Cluster metrics on synthetic blobs: agreement with scikit-learn and the right ordering."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    normalized_mutual_info_score,
    silhouette_samples,
)

from chexflow.analysis import clusters
from chexflow.analysis.projection import l2_normalise
from chexflow.analysis.run_analysis import (
    SCHEMA,
    AnalysisResult,
    analyse_embeddings,
    flat_metrics,
    jsonable,
)
from chexflow.config import AnalysisConfig
from chexflow.data.labels import EVAL_CLASSES, metric_key
from chexflow.errors import DataError

CFG = AnalysisConfig(bootstrap=40, kmeans_seeds=2, max_faithfulness_points=200)
CONSOLIDATION, EDEMA = EVAL_CLASSES.index("Consolidation"), EVAL_CLASSES.index("Edema")


def blobs(
    spread: float, *, merge: tuple[int, int] | None = None, per_class: int = 60, seed: int = 0
) -> tuple[np.ndarray, list[tuple[str, ...]], list[str | None]]:
    """Six Gaussian clusters in 32-d (centre scale ``spread``, unit noise) + 30 multi-label."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(EVAL_CLASSES), 32)) * spread
    if merge is not None:
        centres[merge[1]] = centres[merge[0]]
    rows, positives, exclusive = [], [], []
    for c, name in enumerate(EVAL_CLASSES):
        rows.append(centres[c] + rng.normal(size=(per_class, 32)))
        positives += [(name,)] * per_class
        exclusive += [name] * per_class
    for _ in range(30):
        a, b = sorted(rng.choice(len(EVAL_CLASSES), size=2, replace=False))
        rows.append((centres[a] + centres[b]) / 2 + 0.3 * rng.normal(size=(1, 32)))
        positives.append((EVAL_CLASSES[a], EVAL_CLASSES[b]))
        exclusive.append(None)
    return np.vstack(rows).astype(np.float32), positives, exclusive


@pytest.fixture(scope="module")
def separated() -> AnalysisResult:
    return analyse_embeddings(*blobs(3.0), CFG, seed=0)


@pytest.fixture(scope="module")
def overlapping() -> AnalysisResult:
    return analyse_embeddings(*blobs(0.35), CFG, seed=0)


def _exclusive_x(features: np.ndarray, exclusive: list[str | None]):
    subset = clusters.exclusive_subset(exclusive)
    return l2_normalise(features)[subset.index], subset


def test_silhouette_matches_sklearn_cosine() -> None:
    features, _, exclusive = blobs(1.0)
    x, subset = _exclusive_x(features, exclusive)
    ours = clusters.silhouette_values(x, subset.labels, len(subset.classes))
    reference = silhouette_samples(x, subset.labels, metric="cosine")
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_headline_metrics_match_sklearn(separated: AnalysisResult) -> None:
    features, _, exclusive = blobs(3.0)
    x, subset = _exclusive_x(features, exclusive)
    m = separated.metrics
    expected_sil = silhouette_samples(x, subset.labels, metric="cosine").mean()
    assert m["silhouette"]["value"] == pytest.approx(expected_sil, abs=1e-5)
    assert m["davies_bouldin"]["value"] == pytest.approx(davies_bouldin_score(x, subset.labels))
    assert m["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(x, subset.labels))
    for entry in (m["silhouette"], m["davies_bouldin"], m["knn"]["accuracy"]):
        assert entry["ci_low"] <= entry["value"] <= entry["ci_high"]


def test_weighted_davies_bouldin_matches_sklearn_on_repeated_rows() -> None:
    features, _, exclusive = blobs(0.5)
    x, subset = _exclusive_x(features, exclusive)
    counts = np.random.default_rng(1).integers(0, 3, size=len(x))
    counts[np.searchsorted(subset.labels, np.arange(len(subset.classes)))] = 1  # no class empty
    weighted = clusters.weighted_davies_bouldin(x, subset.labels, counts[None, :].astype(float))
    repeated = np.repeat(np.arange(len(x)), counts)
    expected = davies_bouldin_score(x[repeated], subset.labels[repeated])
    assert weighted[0] == pytest.approx(expected, rel=1e-4)


def test_kmeans_agreement_matches_sklearn() -> None:
    features, _, exclusive = blobs(0.6)
    x, subset = _exclusive_x(features, exclusive)
    result = clusters.kmeans_agreement(x, subset.labels, n_seeds=1, seed=3)
    assigned = KMeans(n_clusters=6, n_init=1, random_state=3).fit(x).predict(x)
    assert result["nmi"]["mean"] == pytest.approx(
        normalized_mutual_info_score(subset.labels, assigned)
    )
    assert result["ari"]["mean"] == pytest.approx(adjusted_rand_score(subset.labels, assigned))
    assert 0 < result["purity"]["mean"] <= 1


def test_separated_blobs_beat_overlapping_ones(
    separated: AnalysisResult, overlapping: AnalysisResult
) -> None:
    good, bad = separated.metrics, overlapping.metrics
    assert good["silhouette"]["value"] > bad["silhouette"]["value"]
    assert good["davies_bouldin"]["value"] < bad["davies_bouldin"]["value"]
    assert good["calinski_harabasz"] > bad["calinski_harabasz"]
    assert good["knn"]["accuracy"]["value"] > bad["knn"]["accuracy"]["value"]
    assert good["knn"]["top_overlaps"][0]["share"] < bad["knn"]["top_overlaps"][0]["share"]
    assert good["kmeans"]["nmi"]["mean"] > bad["kmeans"]["nmi"]["mean"]
    assert good["linear_probe"]["mean"] > bad["linear_probe"]["mean"]
    assert (
        good["visual_separation"]["silhouette"]["mean"]
        > bad["visual_separation"]["silhouette"]["mean"]
    )
    for name in ("Consolidation", "Normal"):
        assert (
            good["silhouette_by_class"][name]["value"] > bad["silhouette_by_class"][name]["value"]
        )
    assert good["faithfulness"]["trustworthiness"] > 0.9
    assert 0.5 < bad["faithfulness"]["trustworthiness"] <= 1.0


def test_mixing_rows_sum_to_one(overlapping: AnalysisResult) -> None:
    matrix = np.array(overlapping.metrics["knn"]["mixing"]["matrix"])
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    assert len(overlapping.metrics["knn"]["top_overlaps"]) == 15


def test_overlap_detector_names_the_merged_pair() -> None:
    features, _, exclusive = blobs(3.0, merge=(CONSOLIDATION, EDEMA))
    x, subset = _exclusive_x(features, exclusive)
    section, _, _ = clusters.knn_metrics(x, subset, k=15, seed=0)
    top = section["top_overlaps"][0]
    assert {top["a"], top["b"]} == {"Consolidation", "Edema"}
    assert top["share"] > 0.3 > section["top_overlaps"][1]["share"]
    geometry = clusters.centroid_geometry(x, subset)
    assert geometry["nearest_centroid"]["Edema"]["class"] == "Consolidation"


def test_knn_neighbours_exclude_self_and_weighted_vote() -> None:
    features, _, exclusive = blobs(3.0)
    x, subset = _exclusive_x(features, exclusive)
    section, queries, correct = clusters.knn_metrics(x, subset, k=5, seed=0)
    assert section["n_queries"] == len(x) == len(queries)
    assert correct.mean() == pytest.approx(section["accuracy"]) == pytest.approx(1.0)
    predicted, _ = clusters.knn_vote(np.array([[0, 1, 1]]), np.array([[0.99, 0.5, 0.5]]), 2)
    assert predicted[0] == 0  # one very close neighbour outweighs two far ones


def test_multilabel_midpoints_score_higher_than_centroid_points() -> None:
    features, positives, exclusive = blobs(3.0, per_class=40)
    single = [i for i, e in enumerate(exclusive) if e is not None]
    x_single = l2_normalise(features)[single]
    pos_single = [positives[i] for i in single]
    subset = clusters.exclusive_subset([exclusive[i] for i in single])
    centroids = clusters.centroid_geometry(x_single, subset)["centroids"]
    a, b = 0, 1
    pair = (EVAL_CLASSES[a], EVAL_CLASSES[b])
    mid = np.repeat(((centroids[a] + centroids[b]) / 2)[None], 5, axis=0)
    at_a = np.repeat(centroids[a][None], 5, axis=0)

    score_mid, t_mid = clusters.betweenness(mid, centroids[a], centroids[b])
    score_a, _ = clusters.betweenness(at_a, centroids[a], centroids[b])
    np.testing.assert_allclose(score_mid, 1.0)
    np.testing.assert_allclose(t_mid, 0.5)
    np.testing.assert_allclose(score_a, 0.0, atol=1e-9)

    def summary(points: np.ndarray) -> dict:
        result = clusters.multilabel_geometry(
            np.vstack([x_single, points]), [*pos_single, *[pair] * 5], subset, centroids
        )
        assert result["n"] == 5 and len(result["pairs"]) == 1
        return result["pairs"][0]

    middle, inside = summary(mid), summary(at_a)
    assert middle["classes"] == list(pair) and middle["count"] == 5
    assert middle["betweenness_mean"] > 0.9 > 0.1 > inside["betweenness_mean"]
    assert (middle["share_between"], inside["share_between"]) == (1.0, 0.0)
    assert (inside["share_inside_one"], inside["share_nearest_own"]) == (1.0, 1.0)
    assert middle["share_nearest_own"] + middle["share_nearest_other"] == pytest.approx(1.0)


def test_exclusive_subset_drops_small_classes() -> None:
    exclusive = ["Edema", "Edema", "Normal", None, "Atelectasis", "Atelectasis"]
    subset = clusters.exclusive_subset(exclusive)
    assert subset.classes == ("Atelectasis", "Edema")
    assert subset.dropped == {"Normal": 1}
    assert subset.counts.tolist() == [2, 2]
    with pytest.raises(DataError, match="unknown exclusive class"):
        clusters.exclusive_subset(["Pneumonia"])


def test_linear_probe_reports_undefined_classes() -> None:
    features, positives, exclusive = blobs(3.0)
    x, subset = _exclusive_x(features, exclusive)
    keep = np.flatnonzero((subset.labels != 0) | (np.arange(len(x)) % 60 < 3))
    result = clusters.probe_exclusive(x[keep], subset.labels[keep], subset.classes, seed=0)
    assert result["classes"]["Atelectasis"] == {
        "auroc": None,
        "defined": False,
        "reason": "3 images (need ≥ 5 for 5-fold CV)",
    }
    assert result["classes"]["Edema"]["defined"] and result["classes"]["Edema"]["auroc"] > 0.95
    multi = clusters.probe_multilabel(l2_normalise(features), positives, subset.classes, seed=0)
    assert all(entry["defined"] for entry in multi["classes"].values())


def test_bootstrap_weights_are_resamples() -> None:
    chunks = list(clusters.bootstrap_weights(50, 7, seed=0))
    weights = np.vstack(chunks)
    assert weights.shape == (7, 50)
    np.testing.assert_array_equal(weights.sum(axis=1), 50)
    again = np.vstack(list(clusters.bootstrap_weights(50, 7, seed=0)))
    np.testing.assert_array_equal(weights, again)


def test_metrics_json_round_trips(separated: AnalysisResult) -> None:
    m = separated.metrics
    assert m["schema"] == SCHEMA
    assert json.loads(separated.to_json()) == m
    json.dumps(m, allow_nan=False)
    for key in (
        "n", "n_exclusive", "n_multilabel", "classes", "class_counts", "silhouette",
        "silhouette_by_class", "davies_bouldin", "calinski_harabasz", "centroid_distances",
        "intra_distance", "nearest_centroid", "knn", "kmeans", "linear_probe",
        "visual_separation", "map_stability", "faithfulness", "multilabel", "pca", "params",
    ):  # fmt: skip
        assert key in m, key
    assert (m["n"], m["n_exclusive"], m["n_multilabel"]) == (390, 360, 30)
    assert m["params"]["knn_k"] == CFG.knn_k and m["params"]["seed"] == 0
    assert jsonable({"a": float("nan"), "b": np.float32(1.5), "c": [np.inf]}) == {
        "a": None,
        "b": 1.5,
        "c": [None],
    }


def test_flat_metrics_are_mlflow_ready(separated: AnalysisResult) -> None:
    flat = flat_metrics(separated.metrics)
    for key in ("silhouette", "davies_bouldin", "calinski_harabasz", "knn_accuracy"):
        assert key in flat
    assert f"silhouette/{metric_key('Pleural Effusion')}" in flat
    assert "kmeans_nmi" in flat and "trustworthiness" in flat
    assert all(isinstance(v, float) and np.isfinite(v) for v in flat.values())


def test_inconsistent_inputs_are_data_errors() -> None:
    features, positives, exclusive = blobs(3.0, per_class=5)
    with pytest.raises(DataError, match="same images"):
        analyse_embeddings(features[:-1], positives, exclusive, CFG)
    broken = features.copy()
    broken[3, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        analyse_embeddings(broken, positives, exclusive, CFG)
    with pytest.raises(DataError, match="≥ 2 classes"):
        analyse_embeddings(features, positives, [None] * len(features), CFG)


# ---------------------------------------------------------------- patients, scale, intervals


def _patient_blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3 classes of 12 patients × 6 images; a patient's images are near-copies of one
    point that carries no class signal, so only whole patients tell classes apart."""
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(36), 6)
    labels = patients // 12
    anchor = rng.normal(size=(36, 16))
    x = anchor[patients] + 0.01 * rng.normal(size=(len(patients), 16))
    return l2_normalise(x), labels, patients


def test_probe_folds_grouped_by_patient_remove_the_leak() -> None:
    x, labels, patients = _patient_blobs()
    classes = ("A", "B", "C")
    leaky = clusters.probe_exclusive(x, labels, classes, seed=0)
    grouped = clusters.probe_exclusive(x, labels, classes, seed=0, groups=patients)
    # Image folds see each patient's near-copies in training: a high score on noise.
    assert leaky["mean"] > 0.8
    assert grouped["mean"] < 0.65 and grouped["grouped_by"] == "patient"


def test_every_interval_of_the_metrics_contains_its_value_and_resamples_patients() -> None:
    features, positives, exclusive = blobs(0.6)
    patients = [f"p{i // 3}" for i in range(len(features))]
    result = analyse_embeddings(features, positives, exclusive, CFG, seed=0, patients=patients)
    m = result.metrics
    assert m["bootstrap"]["unit"] == "patient"
    blocks = [m["silhouette"], m["davies_bouldin"], m["knn"]["accuracy"]]
    blocks += list(m["silhouette_by_class"].values())
    for block in blocks:
        assert block["ci_low"] <= block["value"] <= block["ci_high"], block
    assert all(v["n_patients"] <= v["n"] for v in m["silhouette_by_class"].values())


def test_davies_bouldin_interval_contains_its_value_where_resamples_are_biased() -> None:
    """Resampled Davies–Bouldin is biased low: all resamples below the value."""
    samples = np.linspace(8.0, 8.5, 50)
    block = clusters.interval(8.792, samples, method="shifted")
    assert block["ci_low"] <= 8.792 <= block["ci_high"]
    percentile = clusters.interval(8.792, samples)
    assert percentile["ci_low"] <= 8.792 <= percentile["ci_high"]


def test_relative_geometry_ignores_scale_and_shift_of_the_embedding() -> None:
    features, _positives, exclusive = blobs(1.0)
    subset = clusters.exclusive_subset(exclusive)
    base = clusters.relative_geometry(
        clusters.centred_space(features)[subset.index], subset.labels, len(subset.classes)
    )
    moved = 10.0 * features + np.linspace(5, 50, features.shape[1])
    again = clusters.relative_geometry(
        clusters.centred_space(moved)[subset.index], subset.labels, len(subset.classes)
    )
    np.testing.assert_allclose(again["cohesion"], base["cohesion"], rtol=1e-6)
    np.testing.assert_allclose(again["distances"], base["distances"], rtol=1e-6)
    # The raw cosine cohesion moves with the shift: what the relative measure fixes.
    raw = clusters.centroid_geometry(l2_normalise(features)[subset.index], subset)
    raw_moved = clusters.centroid_geometry(l2_normalise(moved)[subset.index], subset)
    assert abs(raw["intra_distance"]["Edema"] - raw_moved["intra_distance"]["Edema"]) > 0.1
