"""Training throughput: the real input pipeline + training step versus compute alone.

    python -m bench.bench_training                  # the demo's model: resnet10t, 64 px, b32
    python -m bench.bench_training --model resnet18 --image-size 128 \
        --out bench/results/training_resnet18.json

Data: a synthetic CheXpert-format dataset (``chexflow.data.synthetic.write_synthetic``)
prepared exactly as a fine-tune prepares it — ``pipeline.prepare_data`` (fraction 1.0),
then ``pipeline.build_dataset``: ``load_images`` (the preprocessed-image cache) →
``ChexpertImages`` → ``make_loader`` with the run's batch size, seed and workers, and the
input path ``dataset.input_path`` chooses for the device (CPU: float32 normalised in the
loader; CUDA: uint8 from pinned memory, normalised on the device).

(a) "real": ``chexflow.train.train_epoch`` (the inner loop of ``fit``) over that loader
for ``--steps`` batches: gather + normalise a batch, masked loss, clipping, AdamW, the
scheduler. (b) "compute-only": the same ``TrainStep`` on fixed random tensors already on the
device. Warm-up steps of both are excluded. The two loops run in adjacent pairs in
alternating order, ``--repeats`` times; throughputs are medians and the ratio is the
median of the pairs' ratios. On CPU the ratio is also given in this process's CPU time,
which other processes on shared cores do not stretch. With ``--input-check`` (default) a
third loop, in rotating order with the two, runs the real pipeline over the other input
path (CPU: uint8 batches normalised inside the step; CUDA: float32, unpinned), so that
the choice of ``input_path`` stands on a measurement. Also measured: the image cache
(``load_images`` decoding cold vs reading warm packs) and ``extract_embeddings``
throughput. On CUDA: bf16 autocast and channels-last as ``TrainConfig`` sets them.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.common import figure, paired_ratio, run_in_tempdir, stats
from chexflow import pipeline
from chexflow.config import DataConfig, ModelConfig, TrainConfig
from chexflow.data.dataset import ChexpertImages, InputPath, input_path, make_loader
from chexflow.data.synthetic import write_synthetic
from chexflow.embed import extract_embeddings
from chexflow.models import create_model, head_classes
from chexflow.train import TrainStep, prepare_model, select_device, train_epoch

MODULE = "bench.bench_training"
CPU_TARGET = 0.95
GPU_TARGET = 0.90


def sync(device: torch.device) -> None:
    """Wait for queued device work before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timed:
    """Images processed, wall-clock seconds and this process's CPU seconds."""

    images: int
    wall_s: float
    cpu_s: float

    @property
    def per_s(self) -> float:
        return self.images / self.wall_s

    @property
    def per_cpu_s(self) -> float:
        return self.images / self.cpu_s


def timed(run_images: Callable[[], int], device: torch.device) -> Timed:
    """Run, synchronise the device, and read both clocks."""
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    images = run_images()
    sync(device)
    return Timed(images, time.perf_counter() - wall, time.process_time() - cpu)


@dataclass
class RealData:
    """The training set as a fine-tune builds it, and what building it cost."""

    dataset: ChexpertImages
    n_images: int
    decode_s: float
    cached_s: float


def prepare_real_data(workdir: Path, patients: int, image_size: int, seed: int = 0) -> RealData:
    """Synthetic CheXpert → ``prepare_data`` (all pool patients) → ``build_dataset`` twice
    (the first decodes and fills the image cache, the second reads it)."""
    root = write_synthetic(workdir / "data", patients, image_size, seed, progress=False)
    data_cfg = DataConfig(image_size=image_size)
    prepared = pipeline.prepare_data(root, data_cfg, 1.0, seed, workdir)
    classes = head_classes(ModelConfig())
    start = time.perf_counter()
    pipeline.build_dataset(prepared, "train", classes, data_cfg, workdir)
    decode_s = time.perf_counter() - start
    start = time.perf_counter()
    dataset, _ = pipeline.build_dataset(prepared, "train", classes, data_cfg, workdir)
    cached_s = time.perf_counter() - start
    return RealData(dataset, len(dataset), decode_s, cached_s)


def real_loop(step: TrainStep, loader: Iterable[Any], steps: int) -> Timed:
    """``steps`` batches of ``train_epoch`` (the inner loop of ``fit``) over the loader."""
    return timed(lambda: train_epoch(step, itertools.islice(loader, steps)).images, step.device)


def compute_only_loop(
    step: TrainStep, batch_size: int, size: int, classes: int, steps: int
) -> Timed:
    """``steps`` training steps on fixed random tensors that already live on the device."""
    device = step.device
    images = torch.randn(batch_size, 1, size, size, device=device)
    if device.type == "cuda" and step.cfg.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    target = (torch.rand(batch_size, classes, device=device) < 0.3).float()
    mask = torch.ones(batch_size, classes, device=device)

    def run_steps() -> int:
        for _ in range(steps):
            step(images, target, mask)
        return steps * batch_size

    return timed(run_steps, device)


def thread_check(step: TrainStep, args: argparse.Namespace, classes: int) -> dict[str, Any]:
    """Compute-only throughput with torch's default thread count vs one thread, paired."""
    chosen, default = torch.get_num_threads(), os.cpu_count() or 1
    by_threads: dict[int, list[float]] = {default: [], 1: []}
    steps = max(2, args.steps // 4)  # many threads on busy cores can be several times slower
    for repeat in range(args.repeats):
        order = [default, 1] if repeat % 2 == 0 else [1, default]
        for threads in order:
            torch.set_num_threads(threads)
            timed_loop = compute_only_loop(step, args.batch_size, args.image_size, classes, steps)
            by_threads[threads].append(timed_loop.per_s)
    torch.set_num_threads(chosen)
    return {
        f"{n}_threads_images_per_s": {
            **stats(v, 2),
            "max_over_min": round(max(v) / min(v), 2),
        }
        for n, v in by_threads.items()
    }


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Measure; returns the ``results``, ``settings`` and ``figures`` parts of the document."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    cfg = TrainConfig(
        batch_size=args.batch_size,
        device=args.device,
        num_workers=args.workers,
        warmup_fraction=0.0,
    )
    data = prepare_real_data(workdir, args.patients, args.image_size)
    need = (args.steps + args.warmup) * args.batch_size
    if data.n_images < need:
        raise SystemExit(
            f"{data.n_images} training images < {need} needed; raise --patients or lower --steps"
        )
    classes = len(head_classes(ModelConfig()))
    torch.manual_seed(0)
    model = prepare_model(create_model(ModelConfig(name=args.model), classes), cfg, device)
    step = TrainStep(model, cfg, total_steps=10**9, device=device)
    # The loader as pipeline.train_model builds it, and the other input path.
    inputs = input_path(device)
    other = InputPath(uint8=not inputs.uint8, pin_memory=False)

    def training_loader(path: InputPath) -> Any:
        dataset = data.dataset.with_uint8(path.uint8)
        return make_loader(
            dataset,
            cfg.batch_size,
            shuffle=True,
            seed=0,
            num_workers=cfg.num_workers,
            pin_memory=path.pin_memory,
        )

    loader = training_loader(inputs)
    other_loader = training_loader(other) if args.input_check else None

    real_loop(step, loader, args.warmup)  # warm-up: allocator, kernels, worker start-up
    compute_only_loop(step, args.batch_size, args.image_size, classes, args.warmup)
    if other_loader is not None:
        real_loop(step, other_loader, args.warmup)
    real: list[Timed] = []
    compute: list[Timed] = []
    real_other: list[Timed] = []
    measures = [
        lambda: real.append(real_loop(step, loader, args.steps)),
        lambda: compute.append(
            compute_only_loop(step, args.batch_size, args.image_size, classes, args.steps)
        ),
    ]
    if other_loader is not None:
        measures.append(lambda: real_other.append(real_loop(step, other_loader, args.steps)))
    for repeat in range(args.repeats):
        if other_loader is None:  # adjacent pairs, alternating order
            order = measures if repeat % 2 == 0 else measures[::-1]
        else:  # rotating order: each loop comes first, second and third equally often
            shift = repeat % len(measures)
            order = measures[shift:] + measures[:shift]
        for measure in order:
            measure()

    eval_loader = make_loader(
        data.dataset.with_uint8(inputs.uint8),
        cfg.batch_size * 2,
        shuffle=False,
        seed=0,
        pin_memory=inputs.pin_memory,
    )
    embed_run = lambda: len(extract_embeddings(model, eval_loader, device, progress=False))  # noqa: E731
    timed(embed_run, device)  # warm-up
    embed = [timed(embed_run, device) for _ in range(args.repeats)]

    ratio = paired_ratio([r.per_s for r in real], [c.per_s for c in compute])
    results: dict[str, Any] = {
        "real_images_per_s": stats([t.per_s for t in real], 2),
        "compute_only_images_per_s": stats([t.per_s for t in compute], 2),
        "ratio_real_to_compute": ratio,
        "step_ms": {
            "real": round(1000 * statistics.median(t.wall_s for t in real) / args.steps, 2),
            "compute_only": round(
                1000 * statistics.median(t.wall_s for t in compute) / args.steps, 2
            ),
        },
        "embedding_images_per_s": stats([t.per_s for t in embed], 2),
        "image_cache": {
            "images": data.n_images,
            "decode_images_per_s": round(data.n_images / data.decode_s, 1),
            "cached_images_per_s": round(data.n_images / data.cached_s, 1),
        },
    }
    if real_other:
        results["input_path"] = {
            "used": inputs.describe(),
            "other": other.describe(),
            "other_images_per_s": stats([t.per_s for t in real_other], 2),
            "ratio_other_to_used": paired_ratio(
                [t.per_s for t in real_other], [t.per_s for t in real]
            ),
            "ratio_other_to_used_cpu_time": paired_ratio(
                [t.per_cpu_s for t in real_other], [t.per_cpu_s for t in real]
            ),
        }
    if args.thread_check and device.type == "cpu":
        results["threads"] = thread_check(step, args, classes)
    target = GPU_TARGET if device.type == "cuda" else CPU_TARGET
    figures = [
        figure(
            f"training throughput, real pipeline / compute-only ({device.type}, wall clock)",
            ratio["median"],
            "ratio",
            f">= {target}",
            ratio["median"] >= target,
        ),
        figure("real training throughput", results["real_images_per_s"]["median"], "img/s"),
    ]
    if device.type == "cpu":
        cpu_ratio = paired_ratio([r.per_cpu_s for r in real], [c.per_cpu_s for c in compute])
        results["ratio_real_to_compute_cpu_time"] = cpu_ratio
        figures.append(
            figure(
                "training throughput ratio in process CPU time (immune to other load)",
                cpu_ratio["median"],
                "ratio",
                f">= {target}",
                cpu_ratio["median"] >= target,
            )
        )
    if "threads" in results:
        default = f"{os.cpu_count() or 1}_threads_images_per_s"
        many, one = results["threads"][default], results["threads"]["1_threads_images_per_s"]
        figures.append(
            figure(
                f"compute-only, {os.cpu_count()} threads / 1 thread (spread max/min: "
                f"{many['max_over_min']} vs {one['max_over_min']})",
                round(many["median"] / one["median"], 3),
                "ratio",
            )
        )
    if "input_path" in results:
        chosen = results["input_path"]
        figures.append(
            figure(
                f"real pipeline, {chosen['other']} / {chosen['used']} (the chosen path; "
                "process CPU time)",
                chosen["ratio_other_to_used_cpu_time"]["median"],
                "ratio",
            )
        )
    figures.append(
        figure(
            "image cache: cached / decoded load speed",
            round(data.decode_s / data.cached_s, 1),
            "x",
        )
    )
    settings = {
        "model": args.model,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup_steps_excluded": args.warmup,
        "repeats": args.repeats,
        "patients": args.patients,
        "training_images": data.n_images,
        "loader_workers": cfg.num_workers,
        "input_path": inputs.describe(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "amp_bf16": device.type == "cuda" and cfg.amp,
        "channels_last": device.type == "cuda" and cfg.channels_last,
        "pairing": (
            "real, compute-only and other-input-path loops in rotating order"
            if real_other
            else "real and compute-only loops in adjacent pairs, alternating order"
        ),
    }
    return {"settings": settings, "results": results, "figures": figures}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--patients", type=int, default=600, help="synthetic dataset size")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=5, help="paired real/compute runs")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (0: torch's default); 1 keeps timings stable on shared cores",
    )
    parser.add_argument("--workers", type=int, default=0, help="loader workers (config: 0)")
    parser.add_argument(
        "--thread-check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time compute-only steps with torch's default threads vs one (CPU)",
    )
    parser.add_argument(
        "--input-check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the real pipeline over the other input path (dataset.input_path)",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", type=Path, default=Path("bench/results/training.json"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, write the JSON and print the headline figures."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    return run_in_tempdir("training", MODULE, argv, args.out, lambda tmp: run(args, tmp))


if __name__ == "__main__":
    main()
