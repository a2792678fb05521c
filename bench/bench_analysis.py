"""Embedding-analysis speed: openTSNE vs scikit-learn t-SNE, and the whole analysis stage.

    python -m bench.bench_analysis --sizes 2000,10000 --out bench/results/analysis.json
    python -m bench.bench_analysis --sizes 2000,10000 --large   # adds 100k (analysis only)

Data: synthetic ``[n, 512]`` float16 embeddings with the six evaluation classes as
Gaussian clusters (Consolidation and Edema overlapping), ~15% multi-label images between
two class centres and ~5% with no class. For each size:

- t-SNE on the same preprocessed input (L2-normalise, PCA 50): ``chexflow.analysis.
  projection.tsne`` (openTSNE, exact cosine kNN graph, 250 + 500 iterations) against
  ``sklearn.manifold.TSNE`` (cosine, PCA init, learning rate "auto", 750 iterations, all
  cores), and their ratio. scikit-learn is skipped above ``--sklearn-max`` points.
  openTSNE also runs with the other thread count (1 or all cores) to check that the map
  does not change and to show what threads buy.
- ``analyse_embeddings`` with the default ``AnalysisConfig`` (one map, 200 bootstrap
  resamples, 5 k-means seeds): wall time and its per-stage breakdown.

Each figure is the median of ``--repeats`` runs (one run at 100k). The load average is
recorded before and after: on a shared machine, compare numbers from the same file only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chexflow.analysis.projection import n_threads, preprocess, tsne, tsne_threads
from chexflow.analysis.run_analysis import analyse_embeddings
from chexflow.config import AnalysisConfig
from chexflow.data.labels import EVAL_CLASSES

LARGE_SIZE = 100_000
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


def timed(fn: Callable[[], Any], repeats: int) -> tuple[dict[str, Any], Any]:
    """Median wall time of ``repeats`` calls, the individual runs and the last result."""
    runs, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        runs.append(round(time.perf_counter() - start, 3))
    return {"median_s": statistics.median(runs), "runs_s": runs}, result


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


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    import openTSNE
    import sklearn
    import torch

    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": n_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "opentsne": openTSNE.__version__,
        "torch": torch.__version__,
        "load_average": list(os.getloadavg()),
    }


def bench_size(n: int, dim: int, repeats: int, sklearn_max: int, with_tsne: bool) -> dict:
    """All measurements for one size."""
    features, positives, exclusive = synthetic_embeddings(n, dim)
    row: dict[str, Any] = {"n": n, "dim": dim}
    if with_tsne:
        pre = preprocess(features, 50, 0)
        row["opentsne"], coords = timed(lambda: tsne(pre, 30.0, 0), repeats)
        row["opentsne"]["threads"] = tsne_threads(n)
        if n_threads() > 1:
            # The map must not depend on the thread count; how much do threads buy here?
            for threads in sorted({1, n_threads()} - {tsne_threads(n)}):
                key = f"opentsne_{threads}_threads"
                row[key], other = timed(lambda t=threads: tsne(pre, 30.0, 0, n_jobs=t), repeats)
                row[key]["same_map"] = bool(np.array_equal(coords, other))
        if n <= sklearn_max:
            row["sklearn_tsne"], _ = timed(lambda: sklearn_tsne(pre), repeats)
            row["sklearn_tsne"]["threads"] = n_threads()
            row["sklearn_over_opentsne"] = round(
                row["sklearn_tsne"]["median_s"] / row["opentsne"]["median_s"], 2
            )
    cfg = AnalysisConfig()
    row["analyse_embeddings"], result = timed(
        lambda: analyse_embeddings(features, positives, exclusive, cfg, seed=0), repeats
    )
    timings = result.metrics["timings_s"]
    row["analyse_embeddings"]["stages_s"] = timings
    row["analyse_embeddings"]["metrics_without_tsne_s"] = round(
        sum(v for k, v in timings.items() if k != "tsne"), 3
    )
    row["headline"] = {
        "silhouette": result.metrics["silhouette"],
        "knn_accuracy": result.metrics["knn"]["accuracy"],
        "top_overlap": result.metrics["knn"]["top_overlaps"][0],
        "trustworthiness": result.metrics["faithfulness"]["trustworthiness"],
    }
    return row


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="2000,10000", help="comma-separated n")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sklearn-max", type=int, default=10_000)
    parser.add_argument("--large", action="store_true", help=f"add n={LARGE_SIZE} (no t-SNE race)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/analysis.json"))
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    report: dict[str, Any] = {
        "benchmark": "analysis",
        "command": "python -m bench.bench_analysis " + " ".join(argv),
        "machine": machine_info(),
        "results": [],
    }
    plan = [(n, True, args.repeats) for n in sizes]
    plan += [(LARGE_SIZE, False, 1)] if args.large else []
    for n, with_tsne, repeats in plan:
        row = bench_size(n, args.dim, repeats, args.sklearn_max, with_tsne)
        report["results"].append(row)
        print(json.dumps(row), flush=True)
    report["machine"]["load_average_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
