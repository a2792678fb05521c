"""Scaling: how each stage's time grows with the evaluation-set size and the training fraction.

    python -m bench.bench_scaling                     # evaluation sets 1k → 10k
    python -m bench.bench_scaling --large             # adds 20k, 50k and 100k

Evaluation-set size ``n`` (the images every model embeds):

- evaluate + embed (``chexflow.embed.predict_and_embed``, what ``pipeline.
  evaluate_and_embed`` runs): the demo's model over ``n`` random ``64 px`` images through
  ``ChexpertImages`` + ``make_loader`` (batch 64); also the former two passes
  (``evaluation.predict`` then ``embed.extract_embeddings``) at ``--compare-n`` images,
  paired with the one pass, for the before/after.
- analysis (``analyse_embeddings`` with the default ``AnalysisConfig``): synthetic
  ``[n, 512]`` embeddings (``bench_analysis.synthetic_embeddings``); each sub-stage
  (embedding metrics, linear probe, multi-label geometry, PCA, t-SNE, map metrics) is
  timed on its own.

Training fraction: ``pipeline.prepare_data`` and ``pipeline.train_model`` (1 epoch, the
demo's model, image cache warm) on a synthetic dataset at each ``--fractions`` value.

For each stage the observed complexity is the least-squares slope of log(time) on
log(size): 1 is linear, 2 quadratic; fixed costs pull small-size slopes below the
asymptotic one. Figures are medians of ``--repeats`` runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.bench_analysis import synthetic_embeddings
from bench.common import (
    figure,
    finish_document,
    loglog_slope,
    paired,
    paired_ratio,
    start_document,
    stats,
)
from chexflow.analysis.run_analysis import analyse_embeddings
from chexflow.config import AnalysisConfig, DataConfig, ModelConfig, TrainConfig
from chexflow.data.dataset import ChexpertImages, make_loader
from chexflow.embed import extract_embeddings, predict_and_embed
from chexflow.evaluation import predict
from chexflow.models import create_model, head_classes

MODULE = "bench.bench_scaling"
LARGE_SIZES = (20_000, 50_000, 100_000)  # --large: one run each, evaluate+embed and analysis
STAGE_LABELS = {
    "embedding_metrics": "embedding-space metrics",
    "linear_probe": "linear probe",
    "multilabel": "multi-label geometry",
    "preprocess": "L2 + PCA",
    "tsne": "t-SNE",
    "map_metrics": "map metrics",
}


def random_images(n: int, size: int, classes: int, seed: int = 0) -> ChexpertImages:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
    targets = (rng.random((n, classes)) < 0.3).astype(np.float32)
    return ChexpertImages(images, targets, np.ones_like(targets))


def evaluation_stage(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds of ``predict_and_embed`` per size, and the former two passes at one size."""
    device = torch.device("cpu")
    classes = len(head_classes(ModelConfig()))
    torch.manual_seed(0)
    model = create_model(ModelConfig(name=args.model), classes)
    largest = random_images(max(*args.model_sizes, args.compare_n), args.image_size, classes)

    def loader(n: int) -> Any:
        subset = ChexpertImages(
            largest.images[:n], largest.targets[:n].numpy(), largest.mask[:n].numpy()
        )
        return make_loader(subset, args.batch_size, shuffle=False, seed=0)

    def one_pass(n: int) -> float:
        start = time.perf_counter()
        predict_and_embed(model, loader(n), device, progress=False)
        return time.perf_counter() - start

    def two_passes(n: int) -> float:
        start = time.perf_counter()
        predict(model, loader(n), device)
        extract_embeddings(model, loader(n), device, progress=False)
        return time.perf_counter() - start

    one_pass(min(args.model_sizes))  # warm-up
    by_size: dict[int, list[float]] = {}
    for n in args.model_sizes:
        by_size[n] = [one_pass(n) for _ in range(args.model_repeats)]
        print(f"[scaling] evaluate + embed n={n}: {statistics.median(by_size[n]):.1f} s")
    before, after = paired(
        lambda: two_passes(args.compare_n), lambda: one_pass(args.compare_n), args.repeats
    )
    medians = [statistics.median(v) for v in by_size.values()]
    return {
        "sizes": list(by_size),
        "seconds": {str(n): stats(v, 3) for n, v in by_size.items()},
        "images_per_s": [round(n / m, 1) for n, m in zip(by_size, medians, strict=True)],
        "loglog_slope": loglog_slope(list(by_size), medians),
        "before_after": {
            "n": args.compare_n,
            "two_passes_s": stats(before, 3),
            "one_pass_s": stats(after, 3),
            "speedup": paired_ratio(before, after),
        },
    }


def analysis_stages(sizes: Sequence[int], repeats: int, large: bool) -> dict[str, Any]:
    """``analyse_embeddings`` wall time and sub-stage times per size."""
    cfg = AnalysisConfig()
    plan = [(n, repeats) for n in sizes] + ([(n, 1) for n in LARGE_SIZES] if large else [])
    features, positives, exclusive = synthetic_embeddings(min(sizes), 512)
    analyse_embeddings(features, positives, exclusive, cfg, seed=0)  # warm-up
    per_size: dict[str, Any] = {}
    for n, reps in plan:
        features, positives, exclusive = synthetic_embeddings(n, 512)
        totals: list[float] = []
        stages: dict[str, list[float]] = {}
        for _ in range(reps):
            start = time.perf_counter()
            result = analyse_embeddings(features, positives, exclusive, cfg, seed=0)
            totals.append(time.perf_counter() - start)
            for stage, seconds in result.metrics["timings_s"].items():
                stages.setdefault(stage, []).append(seconds)
        per_size[str(n)] = {
            "repeats": reps,
            "total_s": stats(totals, 3),
            "stages_s": {k: stats(v, 3) for k, v in stages.items()},
        }
        print(f"[scaling] analysis n={n}: {statistics.median(totals):.1f} s", flush=True)
    result = {"per_size": per_size, "loglog_slope": _stage_slopes(per_size, list(per_size))}
    tail = [n for n in per_size if int(n) >= 10_000]
    if len(tail) >= 3:  # past the fixed costs and the metrics' subsample caps
        result["loglog_slope_from_10k"] = _stage_slopes(per_size, tail)
    return result


def _stage_slopes(per_size: dict[str, Any], sizes: list[str]) -> dict[str, float | None]:
    ns = [int(n) for n in sizes]
    slopes = {"total": loglog_slope(ns, [per_size[n]["total_s"]["median"] for n in sizes])}
    for stage in per_size[sizes[0]]["stages_s"]:
        slopes[stage] = loglog_slope(
            ns, [max(per_size[n]["stages_s"][stage]["median"], 1e-3) for n in sizes]
        )
    return slopes


def training_fraction(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """``prepare_data`` and a 1-epoch ``train_model`` per fraction (image cache warm)."""
    from chexflow import pipeline
    from chexflow.data.synthetic import write_synthetic

    root = write_synthetic(workdir / "data", args.patients, args.image_size, 0, progress=False)
    data_cfg = DataConfig(image_size=args.image_size)
    model_cfg = ModelConfig(name=args.model)
    train_cfg = TrainConfig(epochs=1, batch_size=32, bootstrap=1, device="cpu")
    # Warm-up: fills the image cache with every image, so each fraction times its own work.
    prepared = pipeline.prepare_data(root, data_cfg, 1.0, 0, workdir / "warm")
    pipeline.train_model(prepared, data_cfg, model_cfg, train_cfg, workdir / "warm", progress=False)
    rows: dict[str, Any] = {}
    for fraction in args.fractions:
        prepare_s, train_s, images = [], [], 0
        for r in range(args.repeats):
            work = workdir / f"f{fraction}-{r}"
            start = time.perf_counter()
            prepared = pipeline.prepare_data(root, data_cfg, fraction, 0, work)
            prepare_s.append(time.perf_counter() - start)
            data_cfg_cached = data_cfg.model_copy(
                update={"cache_dir": workdir / "warm" / "cache" / "images"}
            )
            start = time.perf_counter()
            pipeline.train_model(
                prepared, data_cfg_cached, model_cfg, train_cfg, work, progress=False
            )
            train_s.append(time.perf_counter() - start)
            images = prepared.n_train_images
        rows[str(fraction)] = {
            "train_images": images,
            "prepare_s": stats(prepare_s, 3),
            "train_1_epoch_s": stats(train_s, 3),
        }
        print(f"[scaling] fraction {fraction}: {images} images", flush=True)
    images = [rows[str(f)]["train_images"] for f in args.fractions]
    return {
        "per_fraction": rows,
        "loglog_slope": {
            "prepare": loglog_slope(
                images, [rows[str(f)]["prepare_s"]["median"] for f in args.fractions]
            ),
            "train_1_epoch": loglog_slope(
                images, [rows[str(f)]["train_1_epoch_s"]["median"] for f in args.fractions]
            ),
        },
        "note": "train_1_epoch includes one validation pass over the fixed validation split",
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,2000,5000,10000", help="analysis sizes")
    parser.add_argument("--model-sizes", default="1000,2000,5000,10000", help="embed sizes")
    parser.add_argument("--compare-n", type=int, default=1000, help="before/after size")
    parser.add_argument("--fractions", default="0.1,0.25,0.5,1.0")
    parser.add_argument("--patients", type=int, default=800, help="training-fraction dataset")
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model-repeats", type=int, default=1, help="runs per embed size")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    parser.add_argument("--large", action="store_true", help=f"add n in {LARGE_SIZES}")
    parser.add_argument("--out", type=Path, default=Path("bench/results/scaling.json"))
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.model_sizes = [int(s) for s in args.model_sizes.split(",")]
    if args.large:
        args.model_sizes += [n for n in LARGE_SIZES if n not in args.model_sizes]
    args.fractions = [float(f) for f in args.fractions.split(",")]
    return args


def scaling_figures(results: dict[str, Any]) -> list[dict[str, Any]]:
    evaluation, analysis = results["evaluation"], results["analysis"]
    training = results["training_fraction"]
    figures = [
        figure("evaluate + embed: slope vs n", evaluation["loglog_slope"], "log-log"),
        figure(
            "evaluate + embed: two passes / one pass (same run)",
            evaluation["before_after"]["speedup"]["median"],
            "x",
        ),
        figure("analysis total: slope vs n", analysis["loglog_slope"]["total"], "log-log"),
    ]
    for stage, label in STAGE_LABELS.items():
        if stage in analysis["loglog_slope"]:
            figures.append(
                figure(f"analysis {label}: slope vs n", analysis["loglog_slope"][stage], "log-log")
            )
    for stage, slope in analysis.get("loglog_slope_from_10k", {}).items():
        label = "total" if stage == "total" else STAGE_LABELS.get(stage, stage)
        figures.append(figure(f"analysis {label}: slope vs n from 10k", slope, "log-log"))
    figures.append(
        figure(
            "train 1 epoch: slope vs training images",
            training["loglog_slope"]["train_1_epoch"],
            "log-log",
        )
    )
    return figures


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    doc = start_document("scaling", MODULE, argv)
    results: dict[str, Any] = {"evaluation": evaluation_stage(args)}
    results["analysis"] = analysis_stages(args.sizes, args.repeats, args.large)
    with tempfile.TemporaryDirectory(prefix="chexflow-bench-scaling-") as tmp:
        results["training_fraction"] = training_fraction(args, Path(tmp))
    doc["settings"] = {
        "analysis_sizes": args.sizes + (list(LARGE_SIZES) if args.large else []),
        "embed_sizes": args.model_sizes,
        "model": args.model,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "fractions": args.fractions,
        "patients": args.patients,
        "repeats": args.repeats,
        "embed_repeats": args.model_repeats,
        "torch_threads": torch.get_num_threads(),
        "warmup": "one untimed run per stage (smallest size)",
        "slope": "least-squares slope of log(seconds) on log(size)",
    }
    doc["results"] = results
    doc["figures"] = scaling_figures(results)
    finish_document(doc, args.out)
    return doc


if __name__ == "__main__":
    main()
