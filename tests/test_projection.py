"""Projections: preprocessing, deterministic t-SNE, Procrustes alignment, map quality."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from scipy.spatial import procrustes as scipy_procrustes
from sklearn.neighbors import NearestNeighbors

from chexflow.analysis import projection
from chexflow.errors import ConfigError, DataError


def clustered(n: int = 200, d: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, d)) * 4
    return (centres[np.arange(n) % 4] + rng.normal(size=(n, d))).astype(np.float32)


def rotation(angle: float) -> np.ndarray:
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def test_preprocess_normalises_and_reduces() -> None:
    x = clustered(30, 64).astype(np.float16)
    assert projection.preprocess(x, pca_dims=50).shape == (30, 29)  # n - 1 caps
    assert projection.preprocess(clustered(200, 8), pca_dims=50).shape == (200, 8)  # d caps
    out = projection.preprocess(clustered(200, 64), pca_dims=10, seed=1)
    assert out.shape == (200, 10) and out.dtype == np.float32
    norms = np.linalg.norm(projection.l2_normalise(clustered(10, 64)), axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-6)


def test_tsne_is_deterministic_for_a_seed() -> None:
    pre = projection.preprocess(clustered(200), 50)
    first = projection.tsne(pre, perplexity=20, seed=3)
    again = projection.tsne(pre, perplexity=20, seed=3)
    other = projection.tsne(pre, perplexity=20, seed=4)
    assert first.shape == (200, 2) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_tsne_maps_keys_and_tiny_n_clips_perplexity() -> None:
    pre = projection.preprocess(clustered(20), 50)
    with pytest.warns(UserWarning, match="perplexity 30 is too large for 20 points"):
        maps = projection.tsne_maps(pre, seeds=[0, 1], perplexities=[30.0])
    assert set(maps) == {(0, 30.0), (1, 30.0)}
    assert all(np.isfinite(m).all() and m.shape == (20, 2) for m in maps.values())
    assert projection.map_key(0, 30.0) == "tsne_s0_p30"
    assert projection.map_key(2, 12.5) == "tsne_s2_p12.5"
    with pytest.raises(DataError, match="at least 4 points"):
        projection.tsne(pre[:3])


def test_tsne_accepts_an_initial_map() -> None:
    pre = projection.preprocess(clustered(120), 50)
    start = projection.pca_2d(pre) * 100
    coords = projection.tsne(pre, perplexity=15, initialization=start)
    assert coords.shape == (120, 2) and np.isfinite(coords).all()


def test_procrustes_recovers_rotation_reflection_and_shift() -> None:
    reference = np.random.default_rng(0).normal(size=(100, 2))
    reflect = np.array([[1.0, 0.0], [0.0, -1.0]])
    moving = reference @ rotation(1.1) @ reflect + np.array([5.0, -3.0])
    aligned, disparity = projection.procrustes_align(reference, moving)
    np.testing.assert_allclose(aligned, reference, atol=1e-5)
    assert disparity == pytest.approx(0.0, abs=1e-10)
    scaled, _ = projection.procrustes_align(reference, 3.0 * moving, scaling=True)
    np.testing.assert_allclose(scaled, reference, atol=1e-5)


def test_procrustes_disparity_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(50, 2)), rng.normal(size=(50, 2))
    _, _, expected = scipy_procrustes(a, b)
    assert projection.procrustes_align(a, b)[1] == pytest.approx(expected)
    with pytest.raises(DataError, match="same points"):
        projection.procrustes_align(a, b[:10])


def test_map_stability_of_identical_and_unrelated_maps() -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(size=(150, 2))
    same = projection.map_stability({"a": base, "b": base @ rotation(0.7)})
    assert same["n_maps"] == 2 and same["disparity"]["mean"] == pytest.approx(0, abs=1e-10)
    assert same["knn_overlap"]["min"] == pytest.approx(1.0)
    unrelated = projection.map_stability({"a": base, "b": rng.normal(size=(150, 2))})
    assert unrelated["disparity"]["mean"] > 0.5
    assert unrelated["knn_overlap"]["mean"] < 0.3
    single = projection.map_stability({"a": base})
    assert single["pairs"] == [] and single["disparity"]["mean"] is None


def test_faithfulness_rewards_a_faithful_map_and_subsamples() -> None:
    rng = np.random.default_rng(3)
    plane = rng.normal(size=(300, 2))
    high = np.hstack([plane, np.full((300, 1), 10.0)])  # on a plane, away from the origin
    good = projection.faithfulness(high, plane @ rotation(0.3), k=10)
    bad = projection.faithfulness(high, rng.normal(size=(300, 2)), k=10)
    assert good["trustworthiness"] > 0.95 and good["continuity"] > 0.95
    assert bad["trustworthiness"] < good["trustworthiness"]
    assert bad["knn_preservation"] < good["knn_preservation"]
    assert good["n_used"] == 300
    small = projection.faithfulness(high, plane, k=10, max_points=100, seed=0)
    assert small["n_used"] == 100 and small["k"] == 10
    with pytest.raises(DataError, match="map has"):
        projection.faithfulness(high, plane[:10])


def test_cosine_neighbours_match_sklearn_and_exclude_self() -> None:
    x = projection.l2_normalise(clustered(120, 16, seed=5))
    indices, sims = projection.cosine_neighbours(x, k=7)
    reference = NearestNeighbors(n_neighbors=7, metric="cosine", algorithm="brute").fit(x)
    expected = reference.kneighbors(return_distance=False)
    assert not (indices == np.arange(len(x))[:, None]).any()
    np.testing.assert_array_equal(np.sort(indices, axis=1), np.sort(expected, axis=1))
    assert (np.diff(sims, axis=1) <= 0).all()
    some, _ = projection.cosine_neighbours(x, k=7, queries=np.array([5, 9]))
    np.testing.assert_array_equal(some, indices[[5, 9]])


def test_knn_preservation_of_a_faithful_and_a_random_map() -> None:
    low = clustered(80, 2)
    high = np.hstack([low, np.full((80, 1), 1000.0)])  # cosine ranks ≈ Euclidean ranks of low
    assert projection.knn_preservation(high, low, k=5) > 0.95
    shuffled = np.random.default_rng(0).permutation(low)
    assert projection.knn_preservation(high, shuffled, k=5) < 0.3


@pytest.mark.skipif(importlib.util.find_spec("umap") is not None, reason="umap installed")
def test_umap_without_the_extra_says_how_to_install() -> None:
    with pytest.raises(ConfigError, match=r"pip install chexflow\[umap\]"):
        projection.umap_2d(clustered(30))
