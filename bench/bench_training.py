"""Training throughput: the real input pipeline + training step versus compute alone.

    python -m bench.bench_training --model resnet18 --image-size 128 --batch-size 32 \\
        --steps 20 --device auto --out bench/results/training.json

(a) "real": `chexflow.train.train_epoch` (the inner loop of `fit`) over a DataLoader of an
in-memory uint8 image dataset, with the masked loss, clipping, AdamW and the scheduler.
(b) "compute-only": the same `TrainStep` on random tensors already on the device.
Warm-up steps are excluded. The two loops run in adjacent pairs, in alternating order,
`--repeats` times; throughputs are medians and the ratio is the median of the pairs'
ratios, which is robust to load from other processes that drifts over the run. Also measured:
`chexflow.embed.extract_embeddings` throughput. On CUDA: bf16 autocast, channels-last,
pinned memory and loader workers, as in training.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch.utils.data import DataLoader, Dataset

from chexflow.config import ModelConfig, TrainConfig
from chexflow.data.labels import PATHOLOGIES
from chexflow.embed import extract_embeddings
from chexflow.models import create_model
from chexflow.train import TrainStep, prepare_model, select_device, train_epoch

# Normalisation of chexflow.data.dataset: (pixel / 255 - MEAN) / STD.
MEAN, STD = 0.5, 0.25


class InMemoryImages(Dataset):
    """Mirrors `chexflow.data.dataset.ChexpertImages` without augmentation: uint8
    `[n, S, S]` images kept in memory, each item `(image float32 [1, S, S], target
    float32 [c], mask float32 [c])` with the same normalisation."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> None:
        self.images = images
        self.targets = torch.from_numpy(targets.astype(np.float32))
        self.mask = torch.from_numpy(mask.astype(np.float32))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pixels = torch.from_numpy(self.images[index]).unsqueeze(0)
        image = pixels.float().div_(255.0).sub_(MEAN).div_(STD)
        return image, self.targets[index], self.mask[index]


def synthetic_dataset(n: int, size: int, classes: int, seed: int = 0) -> InMemoryImages:
    """Random uint8 images with ~30% positive and ~10% masked labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
    targets = (rng.random((n, classes)) < 0.3).astype(np.float32)
    mask = (rng.random((n, classes)) > 0.1).astype(np.float32)
    return InMemoryImages(images, targets, mask)


def make_loader(
    dataset: Dataset, batch_size: int, device: torch.device, workers: int
) -> DataLoader:
    """Shuffled, full batches; pinned memory and persistent workers on CUDA."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )


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


def real_loop(step: TrainStep, loader: DataLoader) -> Timed:
    """One epoch of `train_epoch`, the inner loop of `fit`, over the loader."""
    return timed(lambda: train_epoch(step, loader).images, step.device)


def compute_only_loop(
    step: TrainStep, batch_size: int, size: int, classes: int, steps: int
) -> Timed:
    """`steps` training steps on fixed random tensors that already live on the device."""
    device = step.device
    images = torch.randn(batch_size, 1, size, size, device=device)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    target = (torch.rand(batch_size, classes, device=device) < 0.3).float()
    mask = torch.ones(batch_size, classes, device=device)

    def run_steps() -> int:
        for _ in range(steps):
            step(images, target, mask)
        return steps * batch_size

    return timed(run_steps, device)


def embedding_loop(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> Timed:
    """`extract_embeddings` over a non-shuffled pass of the loader."""
    return timed(lambda: len(extract_embeddings(model, loader, device, progress=False)), device)


def warm_up(step: TrainStep, loader: DataLoader, steps: int) -> None:
    """Untimed steps: allocator, kernels selection, worker start-up."""
    for i, (images, target, mask) in enumerate(loader):
        if i >= steps:
            break
        step(images, target, mask)
    sync(step.device)


def cpu_model() -> str:
    """`model name` from /proc/cpuinfo, else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure and return the result document."""
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = list(os.getloadavg())
    device = select_device(args.device)
    classes = len(PATHOLOGIES)
    workers = args.workers
    if workers is None:
        workers = min(8, os.cpu_count() or 1) if device.type == "cuda" else 0
    cfg = TrainConfig(
        batch_size=args.batch_size, device=args.device, num_workers=workers, warmup_fraction=0.0
    )
    torch.manual_seed(0)
    model = prepare_model(create_model(ModelConfig(name=args.model), classes), cfg, device)
    step = TrainStep(model, cfg, total_steps=10**9, device=device)
    dataset = synthetic_dataset(args.steps * args.batch_size, args.image_size, classes)
    loader = make_loader(dataset, args.batch_size, device, workers)

    warm_up(step, loader, args.warmup)
    compute_only_loop(step, args.batch_size, args.image_size, classes, args.warmup)
    real: list[Timed] = []
    compute: list[Timed] = []
    for repeat in range(args.repeats):
        # Adjacent pairs in alternating order: load from other processes hits both alike.
        measures = [
            lambda: real.append(real_loop(step, loader)),
            lambda: compute.append(
                compute_only_loop(step, args.batch_size, args.image_size, classes, args.steps)
            ),
        ]
        for measure in measures if repeat % 2 == 0 else measures[::-1]:
            measure()
    eval_loader = DataLoader(
        dataset,
        batch_size=args.batch_size * 2,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    embedding_loop(model, eval_loader, device)  # warm-up
    embed = [embedding_loop(model, eval_loader, device) for _ in range(args.repeats)]
    return {
        "benchmark": "training",
        "config": {
            "model": args.model,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "warmup_steps": args.warmup,
            "repeats": args.repeats,
            "loader_workers": workers,
            "amp_bf16": device.type == "cuda" and cfg.amp,
            "channels_last": device.type == "cuda" and cfg.channels_last,
        },
        "machine": machine_info(device),
        **summarise(real, compute, embed, device),
        "load_average": {"start": load_start, "end": list(os.getloadavg())},
    }


def summarise(
    real: list[Timed], compute: list[Timed], embed: list[Timed], device: torch.device
) -> dict[str, Any]:
    """Medians, the median paired ratio, and every run.

    On CPU the ratio is also given in CPU time (this process, all threads): it stays
    meaningful when other processes share the cores and stretch the wall clock.
    """
    ratios = [r.per_s / c.per_s for r, c in zip(real, compute, strict=True)]
    out: dict[str, Any] = {
        "real_images_per_s": statistics.median(t.per_s for t in real),
        "compute_only_images_per_s": statistics.median(t.per_s for t in compute),
        "ratio_real_to_compute": statistics.median(ratios),
        "embedding_images_per_s": statistics.median(t.per_s for t in embed),
    }
    runs: dict[str, Any] = {
        "real_images_per_s": [t.per_s for t in real],
        "compute_only_images_per_s": [t.per_s for t in compute],
        "ratio": ratios,
        "embedding_images_per_s": [t.per_s for t in embed],
    }
    if device.type == "cpu":
        cpu_ratios = [r.per_cpu_s / c.per_cpu_s for r, c in zip(real, compute, strict=True)]
        out["ratio_real_to_compute_cpu_time"] = statistics.median(cpu_ratios)
        out["real_images_per_cpu_s"] = statistics.median(t.per_cpu_s for t in real)
        out["compute_only_images_per_cpu_s"] = statistics.median(t.per_cpu_s for t in compute)
        runs["ratio_cpu_time"] = cpu_ratios
    return {**out, "runs": runs}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=5, help="paired real/compute runs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = default")
    parser.add_argument("--workers", type=int, default=None, help="default: 0 on CPU, ≤8 on CUDA")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", type=Path, default=Path("bench/results/training.json"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, write the JSON and print a summary line."""
    args = parse_args(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    where = result["machine"]["device_name"]
    print(
        f"{args.model} {args.image_size}px b{args.batch_size} on {where}: "
        f"real {result['real_images_per_s']:.1f} img/s, "
        f"compute-only {result['compute_only_images_per_s']:.1f} img/s, "
        f"ratio {result['ratio_real_to_compute']:.3f} "
        f"(CPU time: {result.get('ratio_real_to_compute_cpu_time', float('nan')):.3f}); "
        f"embedding {result['embedding_images_per_s']:.1f} img/s"
    )
    return result


if __name__ == "__main__":
    main()
