"""2-D maps of the embedding space (openTSNE, PCA, UMAP), their alignment and faithfulness.

Maps are for looking at; every number that judges the representation is computed in
the embedding space (``clusters.py``). The functions here measure how far a map can be
trusted: its stability across seeds and perplexities, and how well it keeps neighbours.
"""

from __future__ import annotations

import itertools
import os
import sys
import warnings
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
from openTSNE import TSNE
from openTSNE.affinity import PerplexityBasedNN
from openTSNE.initialization import rescale
from openTSNE.nearest_neighbors import PrecomputedNeighbors
from scipy.linalg import orthogonal_procrustes
from sklearn.decomposition import PCA
from sklearn.manifold import trustworthiness
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from chexflow.errors import ConfigError, DataError

MIN_TSNE_POINTS = 4
PARALLEL_MIN_POINTS = 5_000
BLOCK_FLOATS = 1 << 24  # 64 MiB of float32 per block


def n_threads() -> int:
    """CPU cores this process may use (respects affinity masks and container limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def limit_threads(n: int | None = None) -> AbstractContextManager:
    """One BLAS/OpenMP thread (always when ``n`` is None, else below ``PARALLEL_MIN_POINTS``).

    Matrix-vector work (logistic regression, k-means) and small inputs gain little
    from threads, and OpenBLAS/OpenMP threads slow down several-fold when the cores
    are shared with other work (measured on 2 busy cores: a 10k × 512 logistic
    regression fit 0.09 s on one thread vs 0.8 s on two).
    """
    if n is None or n < PARALLEL_MIN_POINTS:
        return threadpool_limits(limits=1)
    return nullcontext()


def l2_normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length as float32; all-zero rows stay zero."""
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise DataError(f"features must be a 2-D array [n, d], got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.finfo(np.float32).tiny)


def preprocess(features: np.ndarray, pca_dims: int = 50, seed: int = 0) -> np.ndarray:
    """L2-normalise, then PCA to ``min(pca_dims, d, n - 1)`` dimensions (float32)."""
    x = l2_normalise(features)
    n, d = x.shape
    dims = min(pca_dims, d, n - 1)
    if dims < 1:
        raise DataError(f"need at least 2 embeddings to project, got {n}")
    return PCA(n_components=dims, random_state=seed).fit_transform(x).astype(np.float32)


def effective_perplexity(perplexity: float, n: int) -> float:
    """The perplexity actually used: at most ``(n - 1) / 3`` (warns when clipped)."""
    limit = (n - 1) / 3
    if perplexity > limit:
        warnings.warn(
            f"perplexity {perplexity:g} is too large for {n} points; using {limit:.2f} "
            "(at most (n - 1) / 3)",
            stacklevel=3,
        )
        return limit
    return float(perplexity)


def row_blocks(n_rows: int, row_width: int) -> list[slice]:
    """Row slices whose blocks of ``row_width`` floats stay within ``BLOCK_FLOATS``."""
    size = max(1, BLOCK_FLOATS // max(1, row_width))
    return [slice(i, min(i + size, n_rows)) for i in range(0, n_rows, size)]


def cosine_neighbours(
    x: np.ndarray, k: int, queries: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k most cosine-similar other rows of L2-normalised ``x``, for each query row.

    Blocked search (a torch matrix product per block of queries, ``torch.topk``
    selection), so memory stays ~64 MiB per block whatever ``n``.

    Args:
        x: ``[n, d]`` L2-normalised rows.
        k: neighbours per query (at most ``n - 1``); the query itself is excluded.
        queries: row numbers to search for; all rows when None.

    Returns:
        ``(indices, similarities)``, both ``[len(queries), k]``, most similar first.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    queries = np.arange(len(x)) if queries is None else np.asarray(queries)
    k = min(k, len(x) - 1)
    indices = np.empty((len(queries), k), dtype=np.int64)
    sims = np.empty((len(queries), k), dtype=np.float32)
    # torch's matrix product is ~2.5x faster than numpy's for these skinny blocks.
    points = torch.from_numpy(x)
    for rows in row_blocks(len(queries), len(x)):
        q = torch.from_numpy(queries[rows])
        scores = points[q] @ points.T
        scores[torch.arange(len(q)), q] = -torch.inf
        top = torch.topk(scores, k, dim=1, sorted=True)
        indices[rows], sims[rows] = top.indices.numpy(), top.values.numpy()
    return indices, sims


def tsne_threads(n: int) -> int:
    """Threads for openTSNE: 1 below ``PARALLEL_MIN_POINTS``, else all available cores.

    Small maps gain little from threads, and openTSNE's threads slow down several-fold
    when the cores are shared with other work (2k points on 2 busy cores: 4.2 s on one
    thread, 17.6 s on two). The map does not depend on the count.
    """
    return 1 if n < PARALLEL_MIN_POINTS else n_threads()


def _affinities(
    knn: tuple[np.ndarray, np.ndarray], perplexity: float, n_jobs: int
) -> PerplexityBasedNN:
    """Perplexity-calibrated affinities from the first ``3 * perplexity`` neighbours."""
    indices, sims = knn
    k = max(1, min(indices.shape[1], int(3 * perplexity)))
    distances = np.maximum(1.0 - sims[:, :k].astype(np.float64), 0.0)
    index = PrecomputedNeighbors(np.ascontiguousarray(indices[:, :k]), distances)
    return PerplexityBasedNN(perplexity=perplexity, knn_index=index, n_jobs=n_jobs)


def _embed(
    x: np.ndarray,
    affinities: PerplexityBasedNN,
    seed: int,
    early_exaggeration: float,
    initialization: np.ndarray | str | None,
    n_jobs: int,
) -> np.ndarray:
    init: np.ndarray | str = "pca" if initialization is None else initialization
    if isinstance(init, np.ndarray):
        if init.shape != (len(x), 2):
            raise DataError(f"t-SNE initialisation must have shape ({len(x)}, 2), got {init.shape}")
        init = rescale(np.array(init, dtype=np.float64))
    # A bar on a terminal only: openTSNE computes the KL divergence at each callback.
    show = sys.stderr.isatty()
    every = 25
    bar = tqdm(total=250 + 500, desc=f"t-SNE n={len(x)}", unit="it", disable=not show)

    def advance(_iteration: int, _error: float, _embedding: np.ndarray) -> bool:
        bar.update(every)
        return False  # never stop early

    estimator = TSNE(
        n_components=2,
        learning_rate="auto",
        early_exaggeration=early_exaggeration,
        initialization=init,
        metric="cosine",
        n_jobs=n_jobs,
        negative_gradient_method="auto",
        random_state=seed,
        verbose=False,
        early_exaggeration_iter=250,
        n_iter=500,
        callbacks=advance if show else None,
        callbacks_every_iters=every,
    )
    with bar:
        return np.asarray(estimator.fit(x, affinities=affinities), dtype=np.float32)


def _check_tsne_input(features_pre: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(features_pre, dtype=np.float32)
    if x.ndim != 2 or len(x) < MIN_TSNE_POINTS:
        raise DataError(f"t-SNE needs at least {MIN_TSNE_POINTS} points [n, d], got {x.shape}")
    return x


def tsne(
    features_pre: np.ndarray,
    perplexity: float = 30.0,
    seed: int = 0,
    early_exaggeration: float = 12.0,
    initialization: np.ndarray | str | None = None,
    *,
    n_jobs: int | None = None,
) -> np.ndarray:
    """openTSNE map ``[n, 2]`` (float32), deterministic for a seed whatever the thread count.

    Affinities come from the exact cosine kNN graph (``3 * perplexity`` neighbours;
    exact rather than Annoy, whose index changes with the thread count). PCA
    initialisation unless ``initialization`` is given (an array is rescaled to
    openTSNE's recommended std 1e-4), learning rate ``n / exaggeration`` ("auto"),
    Barnes–Hut below 10k points and FFT interpolation above.
    """
    maps = tsne_maps(
        features_pre, [seed], [perplexity], early_exaggeration, initialization, n_jobs=n_jobs
    )
    return maps[(seed, float(perplexity))]


def tsne_maps(
    features_pre: np.ndarray,
    seeds: Iterable[int],
    perplexities: Iterable[float],
    early_exaggeration: float = 12.0,
    initialization: np.ndarray | str | None = None,
    *,
    n_jobs: int | None = None,
) -> dict[tuple[int, float], np.ndarray]:
    """One t-SNE map per ``(seed, perplexity)``; the kNN graph is computed once."""
    x = _check_tsne_input(features_pre)
    n = len(x)
    n_jobs = tsne_threads(n) if n_jobs is None else n_jobs
    used = {float(p): effective_perplexity(p, n) for p in perplexities}
    knn = cosine_neighbours(l2_normalise(x), int(3 * max(used.values())))
    maps = {}
    for p, p_used in used.items():
        affinities = _affinities(knn, p_used, n_jobs)
        for seed in seeds:
            maps[(seed, p)] = _embed(
                x, affinities, seed, early_exaggeration, initialization, n_jobs
            )
    return maps


def map_key(seed: int, perplexity: float) -> str:
    """Name of a t-SNE map, e.g. ``tsne_s0_p30``."""
    return f"tsne_s{seed}_p{perplexity:g}"


def pca_2d(features_pre: np.ndarray) -> np.ndarray:
    """The first two principal components ``[n, 2]`` (deterministic: full SVD)."""
    x = np.asarray(features_pre, dtype=np.float32)
    coords = PCA(n_components=min(2, x.shape[1]), svd_solver="full").fit_transform(x)
    if coords.shape[1] < 2:
        coords = np.column_stack([coords, np.zeros(len(coords))])
    return coords.astype(np.float32)


def umap_2d(features_pre: np.ndarray, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """UMAP map ``[n, 2]`` with cosine metric (needs the ``umap`` extra)."""
    try:
        import umap
    except ImportError as exc:
        raise ConfigError(
            "analysis.umap needs umap-learn: pip install chexflow[umap] "
            "(or set analysis.umap=false)"
        ) from exc
    reducer = umap.UMAP(
        n_neighbors=min(n_neighbors, len(features_pre) - 1), metric="cosine", random_state=seed
    )
    return np.asarray(reducer.fit_transform(features_pre), dtype=np.float32)


def procrustes_align(
    reference: np.ndarray,
    moving: np.ndarray,
    *,
    scaling: bool = False,
    translation: bool = True,
) -> tuple[np.ndarray, float]:
    """Rotate/reflect ``moving`` onto ``reference`` (orthogonal Procrustes).

    Returns the aligned copy of ``moving`` and the disparity: the sum of squared
    differences after both maps are centred, scaled to unit Frobenius norm and
    optimally rotated and scaled (as ``scipy.spatial.procrustes``; 0 = same shape,
    1 = unrelated). With ``translation`` the aligned map takes the reference's centre;
    with ``scaling`` its size too.
    """
    ref = np.asarray(reference, dtype=np.float64)
    mov = np.asarray(moving, dtype=np.float64)
    if ref.shape != mov.shape:
        raise DataError(
            f"maps to align must describe the same points: shapes {ref.shape} and {mov.shape}"
        )
    ref_centre, mov_centre = ref.mean(axis=0), mov.mean(axis=0)
    ref_c, mov_c = ref - ref_centre, mov - mov_centre
    rotation, singular_sum = orthogonal_procrustes(mov_c, ref_c)
    ref_norm, mov_norm = np.linalg.norm(ref_c), np.linalg.norm(mov_c)
    if ref_norm == 0 or mov_norm == 0:
        disparity = 0.0 if ref_norm == mov_norm else 1.0
    else:
        disparity = float(max(0.0, 1.0 - (singular_sum / (ref_norm * mov_norm)) ** 2))
    aligned = mov_c @ rotation
    if scaling and mov_norm > 0:
        aligned *= singular_sum / mov_norm**2
    aligned += ref_centre if translation else mov_centre
    return aligned.astype(np.float32), disparity


def _neighbour_sets(points: np.ndarray, k: int) -> np.ndarray:
    """Indices ``[n, k]`` of each point's k nearest others (Euclidean)."""
    nn = NearestNeighbors(n_neighbors=k).fit(points)
    return nn.kneighbors(return_distance=False)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean share of neighbours two ``[n, k]`` neighbour lists have in common."""
    k = a.shape[1]
    both = np.concatenate([a, b], axis=1)
    both.sort(axis=1)
    shared = (both[:, 1:] == both[:, :-1]).sum(axis=1)
    return float(shared.mean() / k)


def knn_preservation(high: np.ndarray, low: np.ndarray, k: int = 10) -> float:
    """Mean share of each point's k nearest neighbours (cosine in ``high``) kept in ``low``."""
    k = min(k, len(high) - 1)
    return _overlap(_neighbour_sets(l2_normalise(high), k), _neighbour_sets(low, k))


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None}
    arr = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std()),
        "min": float(arr.min()),
        "max": float(arr.max()),
    }


def map_stability(maps: Mapping[str, np.ndarray], k: int = 10) -> dict:
    """How much maps of the same points agree (across seeds and perplexities).

    For every pair of maps: Procrustes disparity (0 = identical up to rotation,
    reflection, translation and scale) and kNN overlap (mean share of each point's
    ``k`` nearest map neighbours found in both maps). Summaries are mean, std, min, max.
    """
    names = list(maps)
    n = len(next(iter(maps.values()))) if maps else 0
    k = max(1, min(k, n - 1))
    neighbours = {name: _neighbour_sets(maps[name], k) for name in names} if n > 1 else {}
    pairs = []
    for a, b in itertools.combinations(names, 2):
        _, disparity = procrustes_align(maps[a], maps[b])
        pairs.append(
            {
                "a": a,
                "b": b,
                "disparity": disparity,
                "knn_overlap": _overlap(neighbours[a], neighbours[b]),
            }
        )
    return {
        "n_maps": len(names),
        "k": k,
        "pairs": pairs,
        "disparity": _stats([p["disparity"] for p in pairs]),
        "knn_overlap": _stats([p["knn_overlap"] for p in pairs]),
    }


def faithfulness(
    high_dim: np.ndarray,
    low_dim: np.ndarray,
    k: int = 10,
    max_points: int = 5000,
    seed: int = 0,
) -> dict:
    """Trustworthiness, continuity and kNN preservation of a map.

    Trustworthiness penalises map neighbours that are far apart in the embedding
    space; continuity (the same measure with the arguments swapped) penalises
    embedding-space neighbours torn apart on the map. Cosine in ``high_dim`` (rows
    are L2-normalised, so Euclidean ranks equal cosine ranks), Euclidean on the map.
    Both need O(n²) memory, so above ``max_points`` a seeded random subsample of
    ``n_used`` points is measured (neighbours are then found within the subsample).
    """
    high = l2_normalise(high_dim)
    low = np.asarray(low_dim, dtype=np.float32)
    n = len(high)
    if len(low) != n:
        raise DataError(f"map has {len(low)} points, embeddings have {n}")
    if n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))
        high, low = high[keep], low[keep]
    n_used = len(high)
    k = min(k, (n_used - 1) // 2)
    if k < 1:
        return {
            "trustworthiness": None,
            "continuity": None,
            "knn_preservation": None,
            "n_used": n_used,
            "k": k,
        }
    return {
        "trustworthiness": float(trustworthiness(high, low, n_neighbors=k)),
        "continuity": float(trustworthiness(low, high, n_neighbors=k)),
        "knn_preservation": knn_preservation(high, low, k),
        "n_used": n_used,
        "k": k,
    }
