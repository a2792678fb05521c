"""Projection speed (openTSNE vs scikit-learn t-SNE) and the analysis stage at scale.

    python -m bench.bench_analysis                    # t-SNE race at 2k and 10k
    python -m bench.bench_analysis --large            # + the race at 50k, analysis at 100k
    python -m bench.bench_analysis --sizes "" --large --out bench/results/analysis_100k.json

Data: synthetic ``[n, 512]`` float16 embeddings with the six evaluation classes as
Gaussian clusters (Consolidation and Edema overlapping), ~15% multi-label images between
two class centres and ~5% with no class.

- t-SNE on the same preprocessed input (L2-normalise, PCA 50): ``chexflow.analysis.
  projection.tsne`` (openTSNE, exact cosine kNN graph, 250 + 500 iterations) against
  ``sklearn.manifold.TSNE`` (cosine, PCA init, learning rate "auto", 750 iterations, all
  cores), and their ratio (sklearn / openTSNE, the paired runs' median). The two run in
  adjacent pairs, alternating order. ``--thread-check`` also runs openTSNE with the
  other thread count, to check the map does not change and show what threads buy.
- ``--large``: the race at 50k, and ``analyse_embeddings`` (default ``AnalysisConfig``:
  one map, 200 bootstrap resamples, 5 k-means seeds) on 100k points — its wall time, its
  sub-stages, and all cluster metrics without the t-SNE map (target: under 2 minutes).

Figures are medians of ``--repeats`` pairs (``--repeats-10k`` from 10k points,
``--large-repeats`` at 50k/100k). One openTSNE run on 500 points first (imports, first
calls) is untimed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    figure,
    finish_document,
    paired,
    paired_ratio,
    start_document,
    stats,
)
from chexflow.analysis.projection import n_threads, preprocess, tsne, tsne_threads
from chexflow.config import AnalysisConfig
from chexflow.data.labels import EVAL_CLASSES

MODULE = "bench.bench_analysis"
LARGE_TSNE = 50_000
LARGE_ANALYSIS = 100_000
METRICS_TARGET_S = 120.0
CENTRE_SCALE = 0.15  # centres ~4.8 noise-sd apart in 512-d: overlapping (kNN accuracy ~0.7)


def synthetic_embeddings(
    n: int, dim: int = 512, seed: int = 0
) -> tuple[np.ndarray, list[tuple[str, ...]], list[str | None]]:
    """Clustered float16 embeddings with exclusive, multi-label and no-class images."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=CENTRE_SCALE, size=(len(EVAL_CLASSES), dim))
    consolidation, edema = EVAL_CLASSES.index("Consolidation"), EVAL_CLASSES.index("Edema")
    centres[edema] = 0.6 * centres[edema] + 0.4 * centres[consolidation]
    kind = rng.choice(3, size=n, p=[0.80, 0.15, 0.05])
    first = rng.integers(0, len(EVAL_CLASSES), size=n)
    second = (first + rng.integers(1, len(EVAL_CLASSES), size=n)) % len(EVAL_CLASSES)
    mix = np.where(kind == 1, 0.5, 0.0)[:, None]
    features = (1 - mix) * centres[first] + mix * centres[second]
    features += rng.normal(size=(n, dim))
    features[kind == 2] = rng.normal(size=(int((kind == 2).sum()), dim))
    positives: list[tuple[str, ...]] = []
    exclusive: list[str | None] = []
    for k, a, b in zip(kind, first, second, strict=True):
        if k == 0:
            positives.append((EVAL_CLASSES[a],))
            exclusive.append(EVAL_CLASSES[a])
        elif k == 1:
            positives.append(tuple(EVAL_CLASSES[i] for i in sorted((a, b))))
            exclusive.append(None)
        else:
            positives.append(())
            exclusive.append(None)
    return features.astype(np.float16), positives, exclusive


def seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sklearn_tsne(pre: np.ndarray, seed: int = 0) -> np.ndarray:
    """scikit-learn's t-SNE with the settings closest to ``projection.tsne``."""
    from sklearn.manifold import TSNE

    model = TSNE(
        perplexity=30.0,
        metric="cosine",
        init="pca",
        learning_rate="auto",
        max_iter=750,
        n_jobs=n_threads(),
        random_state=seed,
    )
    return model.fit_transform(pre)


def tsne_race(n: int, repeats: int, sklearn_max: int, thread_check: bool) -> dict[str, Any]:
    """openTSNE vs scikit-learn on the same preprocessed ``n`` points."""
    features, _, _ = synthetic_embeddings(n)
    pre = preprocess(features, 50, 0)
    row: dict[str, Any] = {"n": n, "opentsne_threads": tsne_threads(n)}
    if n <= sklearn_max:
        ours, theirs = paired(
            lambda: seconds(lambda: tsne(pre, 30.0, 0)),
            lambda: seconds(lambda: sklearn_tsne(pre)),
            repeats,
        )
        row["sklearn_s"] = stats(theirs, 3)
        row["sklearn_threads"] = n_threads()
        row["sklearn_over_opentsne"] = paired_ratio(theirs, ours)
    else:
        ours = [seconds(lambda: tsne(pre, 30.0, 0)) for _ in range(repeats)]
    row["opentsne_s"] = stats(ours, 3)
    if thread_check and n_threads() > 1:
        coords = tsne(pre, 30.0, 0)
        for threads in sorted({1, n_threads()} - {tsne_threads(n)}):
            runs, other = [], coords
            for _ in range(repeats):
                start = time.perf_counter()
                other = tsne(pre, 30.0, 0, n_jobs=threads)
                runs.append(time.perf_counter() - start)
            row[f"opentsne_{threads}_threads_s"] = stats(runs, 3)
            row[f"opentsne_{threads}_threads_same_map"] = bool(np.array_equal(coords, other))
    print(f"[analysis] t-SNE n={n}: {row.get('sklearn_over_opentsne')}", flush=True)
    return row


def analysis_at(n: int, repeats: int) -> dict[str, Any]:
    """``analyse_embeddings`` on ``n`` points: wall time, sub-stages, metrics without t-SNE."""
    from chexflow.analysis.run_analysis import analyse_embeddings

    features, positives, exclusive = synthetic_embeddings(n)
    cfg = AnalysisConfig()
    totals, metrics_only, stages = [], [], []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = analyse_embeddings(features, positives, exclusive, cfg, seed=0)
        totals.append(time.perf_counter() - start)
        timings = result.metrics["timings_s"]
        stages.append(timings)
        metrics_only.append(sum(v for k, v in timings.items() if k != "tsne"))
    assert result is not None
    return {
        "n": n,
        "dim": int(features.shape[1]),
        "total_s": stats(totals, 3),
        "metrics_without_tsne_s": stats(metrics_only, 3),
        "stages_s": {k: stats([s[k] for s in stages], 3) for k in stages[0]},
        "headline": {
            "silhouette": result.metrics["silhouette"],
            "knn_accuracy": result.metrics["knn"]["accuracy"],
            "top_overlap": result.metrics["knn"]["top_overlaps"][0],
            "trustworthiness": result.metrics["faithfulness"]["trustworthiness"],
        },
    }


def race_repeats(n: int, args: argparse.Namespace) -> int:
    if n >= LARGE_TSNE:
        return args.large_repeats
    return args.repeats_10k if n >= 10_000 else args.repeats


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="2000,10000", help="t-SNE race sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--repeats-10k", type=int, default=2, help="repeats from 10k points")
    parser.add_argument("--large-repeats", type=int, default=1)
    parser.add_argument("--sklearn-max", type=int, default=LARGE_TSNE)
    parser.add_argument("--thread-check", action="store_true", help="openTSNE at 1 and N threads")
    parser.add_argument(
        "--large", action="store_true", help=f"race at {LARGE_TSNE}, analysis at {LARGE_ANALYSIS}"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/analysis.json"))
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    return args


def analysis_figures(doc: dict[str, Any]) -> list[dict[str, Any]]:
    figures = []
    for row in doc["results"]["tsne"]:
        figures.append(
            figure(f"openTSNE, n={row['n']}", row["opentsne_s"]["median"], "s"),
        )
        if "sklearn_over_opentsne" in row:
            figures.append(
                figure(
                    f"scikit-learn TSNE / openTSNE, n={row['n']}",
                    row["sklearn_over_opentsne"]["median"],
                    "x",
                )
            )
    large = doc["results"].get("analysis_large")
    if large:
        figures.append(figure(f"analysis stage, n={large['n']}", large["total_s"]["median"], "s"))
        value = large["metrics_without_tsne_s"]["median"]
        figures.append(
            figure(
                f"all cluster metrics, {large['n']} x {large['dim']}",
                value,
                "s",
                f"< {METRICS_TARGET_S:.0f} s",
                value < METRICS_TARGET_S,
            )
        )
    return figures


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    doc = start_document("analysis", MODULE, argv)
    sizes = args.sizes + ([LARGE_TSNE] if args.large else [])
    if sizes:
        warm, _, _ = synthetic_embeddings(500)
        tsne(preprocess(warm, 50, 0), 30.0, 0)  # warm-up, untimed
    results: dict[str, Any] = {
        "tsne": [
            tsne_race(
                n,
                race_repeats(n, args),
                args.sklearn_max,
                args.thread_check,
            )
            for n in sizes
        ]
    }
    if args.large:
        results["analysis_large"] = analysis_at(LARGE_ANALYSIS, args.large_repeats)
    doc["settings"] = {
        "tsne_sizes": sizes,
        "repeats": {str(n): race_repeats(n, args) for n in sizes},
        "large_repeats": args.large_repeats,
        "sklearn_max": args.sklearn_max,
        "dim": 512,
        "usable_cores": n_threads(),
        "warmup": "one untimed openTSNE run on 500 points",
        "pairing": "openTSNE and scikit-learn in adjacent pairs, alternating order",
    }
    doc["results"] = results
    doc["figures"] = analysis_figures(doc)
    finish_document(doc, args.out)
    return doc


if __name__ == "__main__":
    main()
