"""The one entry point of the embedding analysis: embeddings in, metrics + maps + plots out.

``analyse_embeddings`` measures one run's evaluation embeddings (schema in
docs/METRICS.md); ``write_analysis`` writes them under a run folder; ``flat_metrics``
gives the MLflow-ready scalars.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score

from chexflow.analysis import clusters, plots, projection
from chexflow.analysis.bootstrap import cluster_weights, patient_codes, unit_of
from chexflow.config import AnalysisConfig
from chexflow.data.labels import EVAL_CLASSES, metric_key
from chexflow.errors import DataError
from chexflow.files import json_safe as jsonable

SCHEMA = "chexflow.cluster-metrics/1"
FAITHFULNESS_K = 10
STABILITY_K = 10


@dataclass
class AnalysisResult:
    """Metrics (JSON-ready, see docs/METRICS.md) and 2-D maps of one run's embeddings.

    Attributes:
        metrics: the ``chexflow.cluster-metrics/1`` document.
        maps: ``[n, 2]`` float32 maps: ``tsne_s<seed>_p<perplexity>`` (aligned to the
            reference orientation), ``tsne`` (the primary one), ``pca``, ``umap``.
        exclusive: per image, its class when it has exactly one, else None.
        positives: per image, its positive evaluation classes.
    """

    metrics: dict[str, Any]
    maps: dict[str, np.ndarray]
    exclusive: list[str | None]
    positives: list[tuple[str, ...]]

    @property
    def primary(self) -> str:
        """Key of the primary t-SNE map (first seed, first perplexity)."""
        return self.metrics["primary_map"]

    def to_json(self, indent: int | None = 2) -> str:
        """The metrics as strict JSON (no NaN)."""
        return json.dumps(self.metrics, indent=indent, allow_nan=False)


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 3)


def _check_inputs(
    features: np.ndarray, positives: Sequence[Sequence[str]], exclusive: Sequence[str | None]
) -> tuple[list[tuple[str, ...]], list[str | None]]:
    if features.ndim != 2:
        raise DataError(f"features must be a 2-D array [n, d], got shape {features.shape}")
    n = len(features)
    if len(positives) != n or len(exclusive) != n:
        raise DataError(
            f"{n} embeddings but {len(positives)} positive sets and {len(exclusive)} "
            "exclusive labels: they must describe the same images in the same order"
        )
    bad = np.flatnonzero(~np.isfinite(features).all(axis=1))
    if len(bad):
        raise DataError(f"embeddings contain NaN or inf (first at row {bad[0]})")
    positives = [tuple(p) for p in positives]
    for i, (pos, exc) in enumerate(zip(positives, exclusive, strict=True)):
        unknown = set(pos) - set(EVAL_CLASSES)
        if unknown:
            raise DataError(f"row {i}: unknown class {sorted(unknown)} in positives")
        if exc is not None and tuple(pos) != (exc,):
            raise DataError(f"row {i}: exclusive class {exc!r} but positives {list(pos)}")
    return positives, list(exclusive)


# ---------------------------------------------------------------- embedding-space metrics


def _bootstrap(
    x: np.ndarray,
    subset: clusters.ExclusiveSubset,
    sil: np.ndarray,
    queries: np.ndarray,
    correct: np.ndarray,
    codes: np.ndarray,
    n_resamples: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Headline metrics on patient-bootstrap resamples of the exclusive images (weights,
    no refits): every image of a drawn patient comes along (``bootstrap.cluster_weights``)."""
    out: dict[str, list[np.ndarray]] = {"silhouette": [], "davies_bouldin": [], "knn": []}
    by_class: list[list[np.ndarray]] = [[] for _ in subset.classes]
    rows = max(1, (projection.BLOCK_FLOATS // 2) // max(1, len(x)))
    for weights in cluster_weights(codes, n_resamples, seed, max_rows=min(rows, 256)):
        out["silhouette"].append(clusters.weighted_mean(weights, sil))
        out["davies_bouldin"].append(clusters.weighted_davies_bouldin(x, subset.labels, weights))
        out["knn"].append(clusters.weighted_mean(weights[:, queries], correct))
        for c, parts in enumerate(by_class):
            members = subset.labels == c
            parts.append(clusters.weighted_mean(weights[:, members], sil[members]))
    joined = {k: np.concatenate(v) if v else None for k, v in out.items()}
    for c, parts in enumerate(by_class):
        joined[f"class{c}"] = np.concatenate(parts) if parts else None
    return joined


def relative_geometry_section(z: np.ndarray, subset: clusters.ExclusiveSubset) -> dict[str, Any]:
    """``relative_geometry`` of the exclusive images in the centred space, JSON-ready."""
    classes = subset.classes
    geo = clusters.relative_geometry(z, subset.labels, len(classes))
    masked = geo["distances"] + np.diag(np.full(len(classes), np.inf))
    return {
        "space": "centred on the mean of all evaluation images, then L2-normalised",
        "spread": geo["spread"],
        "cohesion": dict(zip(classes, geo["cohesion"].tolist(), strict=True)),
        "centroid_distances": {"classes": list(classes), "matrix": geo["distances"].tolist()},
        "separation": {
            c: {"class": classes[int(j)], "distance": float(masked[i, j])}
            for i, (c, j) in enumerate(zip(classes, masked.argmin(axis=1), strict=True))
        },
    }


def embedding_metrics(
    x: np.ndarray,
    subset: clusters.ExclusiveSubset,
    cfg: AnalysisConfig,
    seed: int,
    codes: np.ndarray | None = None,
) -> dict[str, Any]:
    """Cluster, neighbourhood and geometry metrics of the exclusive subset (``x`` normalised).

    ``codes``: patient code per exclusive image (``bootstrap.patient_codes``); the
    intervals resample patients (None: every image its own patient). Only the kNN search
    (large matrix products) uses several threads; the rest runs on one.
    """
    labels, classes = subset.labels, subset.classes
    codes = np.arange(len(x)) if codes is None else codes
    knn, queries, correct = clusters.knn_metrics(x, subset, cfg.knn_k, seed)
    with projection.limit_threads():
        sil = clusters.silhouette_values(x, labels, len(classes))
        boot = _bootstrap(x, subset, sil, queries, correct, codes, cfg.bootstrap, seed)
        dbi = float(davies_bouldin_score(x, labels))
        chi = float(calinski_harabasz_score(x, labels))
        geometry = clusters.centroid_geometry(x, subset)
        kmeans = clusters.kmeans_agreement(x, labels, cfg.kmeans_seeds, seed)
    knn["accuracy"] = clusters.interval(knn["accuracy"], boot["knn"])
    by_class = {}
    for c, name in enumerate(classes):
        values = sil[labels == c]
        by_class[name] = {
            **clusters.interval(float(values.mean()), boot[f"class{c}"]),
            "n": len(values),
            "n_patients": len(np.unique(codes[labels == c])),
        }
    return {
        "silhouette": clusters.interval(float(sil.mean()), boot["silhouette"]),
        "silhouette_by_class": by_class,
        "davies_bouldin": clusters.interval(dbi, boot["davies_bouldin"], method="shifted"),
        "calinski_harabasz": chi,
        "centroids": geometry.pop("centroids"),
        **geometry,
        "knn": knn,
        "kmeans": kmeans,
    }


# ---------------------------------------------------------------- maps


def _aligned_tsne_maps(
    pre: np.ndarray, cfg: AnalysisConfig, reference: np.ndarray | None
) -> tuple[dict[str, np.ndarray], str, dict[str, Any]]:
    raw = projection.tsne_maps(pre, cfg.tsne_seeds, cfg.perplexities, cfg.early_exaggeration)
    named = {projection.map_key(s, p): coords for (s, p), coords in raw.items()}
    primary = next(iter(named))
    target = named[primary] if reference is None else np.asarray(reference, dtype=np.float32)
    if target.shape != named[primary].shape:
        raise DataError(
            f"reference map has shape {target.shape}, expected {named[primary].shape}: "
            "it must be a map of the same evaluation images"
        )
    aligned, disparity = {}, {}
    for key, coords in named.items():
        aligned[key], disparity[key] = projection.procrustes_align(target, coords)
    alignment = {"to": "primary" if reference is None else "reference", "disparity": disparity}
    return aligned, primary, alignment


def _map_sections(
    features: np.ndarray,
    x_all: np.ndarray,
    subset: clusters.ExclusiveSubset,
    cfg: AnalysisConfig,
    seed: int,
    reference: np.ndarray | None,
    timings: dict[str, float],
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with _timed(timings, "preprocess"), projection.limit_threads():
        pre = projection.preprocess(features, cfg.pca_dims, seed)
    with _timed(timings, "tsne"):
        tsne, primary, alignment = _aligned_tsne_maps(pre, cfg, reference)
    maps = {**tsne, "tsne": tsne[primary], "pca": projection.pca_2d(pre)}
    if cfg.umap:
        with _timed(timings, "umap"):
            maps["umap"] = projection.umap_2d(pre, seed)
    with _timed(timings, "map_metrics"), projection.limit_threads():
        sections: dict[str, Any] = {
            "primary_map": primary,
            "maps": sorted(maps),
            "alignment": alignment,
            "visual_separation": clusters.map_separation(tsne, subset, seed),
            "map_stability": projection.map_stability(tsne, STABILITY_K),
            "faithfulness": projection.faithfulness(
                x_all, maps["tsne"], FAITHFULNESS_K, cfg.max_faithfulness_points, seed
            ),
        }
        for name in ("pca", "umap"):
            if name in maps:
                sep = clusters.map_separation({name: maps[name]}, subset, seed)["per_map"][name]
                sections[name] = {
                    "silhouette_2d": sep["silhouette"],
                    "davies_bouldin_2d": sep["davies_bouldin"],
                }
    return maps, sections


# ---------------------------------------------------------------- entry points


def _params(cfg: AnalysisConfig, seed: int) -> dict[str, Any]:
    return {
        **cfg.model_dump(mode="json"),
        "seed": seed,
        "limits": {
            "max_knn_queries": clusters.MAX_KNN_QUERIES,
            "max_kmeans_fit": clusters.MAX_KMEANS_FIT,
            "max_probe_points": clusters.MAX_PROBE_POINTS,
            "max_map_silhouette": clusters.MAX_MAP_SILHOUETTE,
            "probe_folds": clusters.PROBE_FOLDS,
            "probe_c": clusters.PROBE_C,
            "faithfulness_k": FAITHFULNESS_K,
            "stability_k": STABILITY_K,
        },
    }


def analyse_embeddings(
    features: np.ndarray,
    positives: Sequence[Sequence[str]],
    exclusive: Sequence[str | None],
    cfg: AnalysisConfig,
    *,
    seed: int = 0,
    reference_map: np.ndarray | None = None,
    patients: Sequence[object] | None = None,
) -> AnalysisResult:
    """Measure one run's evaluation embeddings and project them to 2-D.

    Args:
        features: ``[n, d]`` embeddings (any float dtype), one row per evaluation image.
        positives: per image, its positive evaluation classes (``EVAL_CLASSES``).
        exclusive: per image, its class when it has exactly one positive, else None.
        cfg: projection and metric settings.
        seed: seeds PCA, subsamples, bootstrap, k-means and probe folds.
        reference_map: ``[n, 2]`` map (e.g. another fraction's primary t-SNE map of
            the same images) whose orientation the t-SNE maps are aligned to.
        patients: patient id per image: intervals resample patients and probe folds are
            grouped by patient (None: every image its own patient).

    Raises:
        DataError: inconsistent inputs, or fewer than 2 classes with ≥ 2 exclusive images.
    """
    features = np.asarray(features)
    from chexflow.numerics import check_not_collapsed  # issue 16: never score a collapsed space

    check_not_collapsed(features)
    positives, exclusive = _check_inputs(features, positives, exclusive)
    subset = clusters.exclusive_subset(exclusive)
    if len(subset.classes) < 2:
        raise DataError(
            f"cluster metrics need ≥ 2 classes with ≥ 2 single-label images; found "
            f"{list(subset.classes)} (dropped: {subset.dropped})"
        )
    codes = patient_codes(patients, len(features))
    with projection.limit_threads(len(features)):
        return _analyse(features, positives, exclusive, subset, cfg, seed, reference_map, codes)


def _analyse(
    features: np.ndarray,
    positives: list[tuple[str, ...]],
    exclusive: list[str | None],
    subset: clusters.ExclusiveSubset,
    cfg: AnalysisConfig,
    seed: int,
    reference_map: np.ndarray | None,
    codes: np.ndarray,
) -> AnalysisResult:
    timings: dict[str, float] = {}
    x_all = projection.l2_normalise(features)
    x = x_all[subset.index]
    sub_codes = codes[subset.index]
    with _timed(timings, "embedding_metrics"):
        metrics = embedding_metrics(x, subset, cfg, seed, sub_codes)
        z = clusters.centred_space(features)[subset.index]
        metrics["relative_geometry"] = relative_geometry_section(z, subset)
    centroids = metrics.pop("centroids")
    with _timed(timings, "linear_probe"):
        probe = clusters.probe_exclusive(x, subset.labels, subset.classes, seed, sub_codes)
        probe["all_images"] = clusters.probe_multilabel(
            x_all, positives, subset.classes, seed, codes
        )
    with _timed(timings, "multilabel"), projection.limit_threads():
        multilabel = clusters.multilabel_geometry(x_all, positives, subset, centroids)
    maps, map_sections = _map_sections(features, x_all, subset, cfg, seed, reference_map, timings)
    document = {
        "schema": SCHEMA,
        "n": len(features),
        "dim": int(features.shape[1]),
        "n_exclusive": len(subset.index),
        "n_multilabel": multilabel["n"],
        "n_no_class": sum(1 for p in positives if not p),
        "classes": list(subset.classes),
        "class_counts": dict(zip(subset.classes, subset.counts.tolist(), strict=True)),
        "class_patients": {
            c: len(np.unique(sub_codes[subset.labels == i])) for i, c in enumerate(subset.classes)
        },
        "n_patients": len(np.unique(codes)),
        "dropped_classes": subset.dropped,
        **metrics,
        "linear_probe": probe,
        "multilabel": multilabel,
        **map_sections,
        "bootstrap": {
            "resamples": cfg.bootstrap,
            "seed": seed,
            "level": 0.95,
            "unit": unit_of(codes),
            "method": "cluster bootstrap over patients (count weights, no refits); percentile "
            "intervals, bias-shifted percentile for davies_bouldin; every interval contains "
            "its value",
        },
        "timings_s": timings,
        "params": _params(cfg, seed),
    }
    return AnalysisResult(jsonable(document), maps, exclusive, positives)


def write_analysis(result: AnalysisResult, out_dir: Path | str, title: str) -> dict[str, Path]:
    """Write ``metrics/cluster_metrics.json``, ``maps/<key>.npy`` and ``plots/*.png``.

    Returns:
        The written files by short name (``metrics``, ``map:<key>``, ``plot:<name>``).
    """
    out = Path(out_dir)
    for sub in ("metrics", "maps", "plots"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    written = {"metrics": out / "metrics" / "cluster_metrics.json"}
    written["metrics"].write_text(result.to_json())
    for key, coords in result.maps.items():
        path = out / "maps" / f"{key}.npy"
        np.save(path, np.asarray(coords, dtype=np.float32), allow_pickle=False)
        written[f"map:{key}"] = path
    m = result.metrics
    excl, pos = result.exclusive, result.positives
    figures = {
        "tsne": lambda p: plots.plot_map(
            result.maps["tsne"], excl, pos, f"{title} — t-SNE ({result.primary})", p
        ),
        "pca": lambda p: plots.plot_map(result.maps["pca"], excl, pos, f"{title} — PCA", p),
        "silhouette_by_class": lambda p: plots.plot_silhouette_bars(
            {title: m["silhouette_by_class"]}, p
        ),
        "mixing": lambda p: plots.plot_mixing(
            {title: (m["knn"]["mixing"]["classes"], m["knn"]["mixing"]["matrix"])}, p
        ),
    }
    tsne_keys = [k for k in result.maps if k.startswith("tsne_")]
    if len(tsne_keys) > 1:
        figures["tsne_maps"] = lambda p: plots.plot_maps_side_by_side(
            {k: result.maps[k] for k in tsne_keys}, excl, pos, p
        )
    for name, draw in figures.items():
        path = out / "plots" / f"{name}.png"
        draw(path)
        written[f"plot:{name}"] = path
    return written


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """MLflow-ready scalar metrics (``silhouette``, ``silhouette/<class>``, ...); no None."""
    lp = metrics["linear_probe"]
    flat: dict[str, float | None] = {
        "silhouette": metrics["silhouette"]["value"],
        "davies_bouldin": metrics["davies_bouldin"]["value"],
        "calinski_harabasz": metrics["calinski_harabasz"],
        "knn_accuracy": metrics["knn"]["accuracy"]["value"],
        "kmeans_purity": metrics["kmeans"]["purity"]["mean"],
        "kmeans_nmi": metrics["kmeans"]["nmi"]["mean"],
        "kmeans_ari": metrics["kmeans"]["ari"]["mean"],
        "linear_probe_auroc": lp["mean"],
        "linear_probe_auroc_all": lp["all_images"]["mean"],
        "trustworthiness": metrics["faithfulness"]["trustworthiness"],
        "continuity": metrics["faithfulness"]["continuity"],
        "tsne_silhouette": metrics["visual_separation"]["silhouette"]["mean"],
        "tsne_davies_bouldin": metrics["visual_separation"]["davies_bouldin"]["mean"],
        "map_disparity": metrics["map_stability"]["disparity"]["mean"],
    }
    for name, entry in metrics["silhouette_by_class"].items():
        flat[f"silhouette/{metric_key(name)}"] = entry["value"]
    for name, entry in metrics["knn"]["accuracy_by_class"].items():
        flat[f"knn_accuracy/{metric_key(name)}"] = entry["value"]
    for name, entry in metrics["intra_distance"].items():
        flat[f"intra_distance/{metric_key(name)}"] = entry
    for name, entry in metrics.get("relative_geometry", {}).get("cohesion", {}).items():
        flat[f"relative_cohesion/{metric_key(name)}"] = entry
    for name, entry in lp["classes"].items():
        flat[f"linear_probe_auroc/{metric_key(name)}"] = entry["auroc"]
    return {k: float(v) for k, v in flat.items() if v is not None and math.isfinite(v)}
