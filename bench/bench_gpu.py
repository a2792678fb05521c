"""GPU: fine-tuning one fraction on CheXpert-sized synthetic data (320 px), bf16 + channels-last.

    python -m bench.bench_gpu --quick                  # < 5 min on one H100
    python -m bench.bench_gpu                          # more steps, repeats and epochs
    python -m bench.bench_gpu --model resnet50 --quick --out bench/results/gpu_resnet50.json

Without CUDA it writes a result saying ``skipped: no CUDA device`` and exits 0
(``--allow-cpu`` runs the same code on the CPU, for testing the script itself).

Data: ``write_synthetic`` at ``--image-size`` (CheXpert-v1.0-small is ~390×320, resized to
320 by the project's GPU config), ``pipeline.prepare_data`` for ``--fraction``, and
``pipeline.build_dataset`` (the preprocessed-image cache). Model and training settings
are ``configs/chexpert-gpu.yaml``'s (DenseNet-121, batch 64, bf16 autocast,
channels-last, 8 loader workers) with random initial weights (no hub offline).

Measured, in this order:

1. The fine-tune itself: ``pipeline.train_model`` (``fit``: epochs, validation,
   checkpoints) with a per-step callback like the finetune flow's MLflow logger, then
   ``pipeline.evaluate_and_embed``. Training images/s per epoch from ``fit``'s history;
   the first epoch (cuDNN/allocator warm-up, worker start) is reported but excluded.
2. Loops of ``--steps`` steps, ``--repeats`` times, in rotating order after one warm-up
   each: compute-only (``TrainStep`` on device tensors), the real loader as
   ``pipeline.train_model`` builds it (``make_loader``: ``num_workers`` from the config,
   the input path of ``dataset.input_path``: on CUDA uint8 batches from pinned memory,
   normalised on the device), the same with the per-step callback (a ``float(loss)``
   device sync every step), and the previous input path (float32 normalised in the
   loader, unpinned; on CPU the same as the real loader). Ratios to compute-only are
   medians of per-repeat ratios; the target is ≥ 0.9 for the real loader. The input path
   used is ``settings.input_path``.
3. timm's train benchmark method (``benchmark.py --bench train``: ``in_chans=3``, 1000
   classes, SGD, cross-entropy, autocast, channels-last, ``cudnn.benchmark``, 10 warm-up
   + 40 timed steps) for the same model at 224 px with timm's published batch size, and
   at this benchmark's size and batch; and timm's published numbers for the model.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from bench.common import figure, finish_document, start_document, stats

MODULE = "bench.bench_gpu"
TARGET = 0.90

# timm's published training throughput, results/benchmark-train-amp-nhwc-pt112-cu113-rtx3090.csv
# in github.com/huggingface/pytorch-image-models (benchmark.py --bench train --amp
# --channels-last; RTX 3090, PyTorch 1.12, CUDA 11.3, fp16 autocast, 224 px unless stated).
PUBLISHED_TRAIN = {
    "densenet121": {"samples_per_s": 913.65, "batch_size": 256, "img_size": 224},
    "resnet50": {"samples_per_s": 1218.01, "batch_size": 512, "img_size": 224},
    "resnet18": {"samples_per_s": 3481.78, "batch_size": 512, "img_size": 224},
    "resnet10t": {"samples_per_s": 6318.63, "batch_size": 512, "img_size": 176},
}
PUBLISHED_SOURCE = (
    "huggingface/pytorch-image-models results/benchmark-train-amp-nhwc-pt112-cu113-rtx3090.csv"
    " (RTX 3090, PyTorch 1.12, CUDA 11.3, fp16 AMP, channels-last)"
)


class StepCallback:
    """Receives every step like ``tracking.BatchedMetricLogger`` (no MLflow here)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_step(self, step: int, epoch: int, loss: float, lr: float) -> None:
        self.losses.append(loss)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def skipped_document(argv: list[str], out: Path, reason: str) -> dict[str, Any]:
    doc = start_document("gpu", MODULE, argv)
    doc.update({"skipped": True, "reason": reason, "figures": []})
    finish_document(doc, out)
    print(f"[gpu] skipped: {reason}", flush=True)
    return doc


def timm_style_train(
    model_name: str,
    batch_size: int,
    img_size: int,
    device: torch.device,
    warmup: int = 10,
    steps: int = 40,
) -> dict[str, Any]:
    """Samples/s by timm benchmark.py's train method (module docstring, item 3)."""
    import timm
    from timm.optim import create_optimizer_v2

    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        model = timm.create_model(model_name, in_chans=3, global_pool="fast")
        model.to(device, memory_format=torch.channels_last).train()
        optimizer = create_optimizer_v2(model, opt="sgd", lr=1e-4)
        loss_fn = torch.nn.CrossEntropyLoss()
        inputs = torch.randn(batch_size, 3, img_size, img_size, device=device)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
        amp = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if device.type == "cuda"
            else torch.autocast("cpu", enabled=False)
        )

        def step() -> None:
            optimizer.zero_grad()
            with amp:
                output = model(inputs)
                target = torch.randint(0, model.num_classes, (batch_size,), device=device)
                loss_fn(output, target).backward()
            optimizer.step()
            sync(device)

        for _ in range(warmup):
            step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        elapsed = time.perf_counter() - start
    finally:
        torch.backends.cudnn.benchmark = previous
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {
        "samples_per_s": round(batch_size * steps / elapsed, 2),
        "step_ms": round(1000 * elapsed / steps, 3),
        "batch_size": batch_size,
        "img_size": img_size,
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
        "warmup_steps": warmup,
        "steps": steps,
    }


def loop_seconds(run: Callable[[], int], device: torch.device) -> tuple[int, float]:
    sync(device)
    start = time.perf_counter()
    images = run()
    sync(device)
    return images, time.perf_counter() - start


def measure_loops(
    args: argparse.Namespace, config: Any, train_set: Any, device: torch.device
) -> dict[str, Any]:
    """Compute-only vs the real loader (module docstring, item 2)."""
    from chexflow.data.dataset import input_path, make_loader
    from chexflow.models import create_model, head_classes
    from chexflow.train import TrainStep, prepare_model, train_epoch

    cfg = config.train
    classes = head_classes(config.model)
    torch.manual_seed(0)
    model = prepare_model(create_model(config.model, len(classes)), cfg, device)
    step = TrainStep(model, cfg, total_steps=10**9, device=device)
    size, batch = args.image_size, cfg.batch_size
    images = torch.randn(batch, 1, size, size, device=device)
    if device.type == "cuda" and cfg.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    target = (torch.rand(batch, len(classes), device=device) < 0.3).float()
    mask = torch.ones(batch, len(classes), device=device)

    def loader(dataset: Any, pin: bool) -> Iterable[Any]:
        return make_loader(
            dataset,
            batch,
            shuffle=True,
            seed=0,
            num_workers=cfg.num_workers,
            pin_memory=pin,
            drop_last=True,
        )

    inputs = input_path(device)  # train_set was built for it (``run``)
    as_built = loader(train_set, inputs.pin_memory)
    previous = loader(train_set.with_uint8(False), False)

    def batches(source: Iterable[Any]) -> Iterable[Any]:
        """``--steps`` batches, passing over the (small) training set as often as needed."""
        return itertools.islice(itertools.chain.from_iterable(itertools.repeat(source)), args.steps)

    def compute_only() -> int:
        for _ in range(args.steps):
            step(images, target, mask)
        return args.steps * batch

    variants: dict[str, Callable[[], int]] = {
        "compute_only": compute_only,
        "real_loader": lambda: train_epoch(step, batches(as_built)).images,
        "real_loader_step_callback": lambda: (
            train_epoch(step, batches(as_built), callbacks=[StepCallback()]).images
        ),
        "real_loader_float32": lambda: train_epoch(step, batches(previous)).images,
    }
    errors: dict[str, str] = {}
    for name, fn in list(variants.items()):  # warm-up: workers, allocator, kernels
        try:
            loop_seconds(fn, device)
        except Exception as exc:  # e.g. loader workers out of shared memory: keep the rest
            errors[name] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
            del variants[name]
    if "compute_only" not in variants:
        raise RuntimeError(f"the compute-only loop failed: {errors['compute_only']}")
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            n, seconds = loop_seconds(variants[name], device)
            samples[name].append(n / seconds)
    loops: dict[str, Any] = {name: stats(values, 2) for name, values in samples.items()}
    for name in names[1:]:
        loops[f"ratio_{name}"] = {
            "median": round(
                statistics.median(
                    r / c for r, c in zip(samples[name], samples["compute_only"], strict=True)
                ),
                4,
            ),
        }
    if errors:
        loops["errors"] = errors
    return loops


def run(args: argparse.Namespace, workdir: Path, device: torch.device) -> dict[str, Any]:
    from chexflow import pipeline
    from chexflow.config import load_config
    from chexflow.data.dataset import input_path
    from chexflow.data.synthetic import write_synthetic
    from chexflow.models import head_classes

    overrides = [
        f"data.image_size={args.image_size}",
        f"model.name={args.model}",
        "model.pretrained=false",
        f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch_size}",
        f"train.num_workers={args.workers}",
        f"train.device={device.type}",
        "train.early_stopping_patience=null",
        "train.bootstrap=200",
        # A few hundred synthetic patients instead of 64,540: larger held-out shares so
        # that every class has positives in the evaluation set and the fraction.
        "data.holdout_fraction=0.2",
        "data.val_fraction=0.1",
        "data.min_class_count=1",
    ]
    config = load_config(Path(args.config), overrides)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    root = write_synthetic(workdir / "data", args.patients, args.image_size, 0, progress=False)
    timings["write_synthetic_s"] = time.perf_counter() - start
    start = time.perf_counter()
    prepared = pipeline.prepare_data(root, config.data, args.fraction, 0, workdir)
    classes = head_classes(config.model)
    inputs = input_path(device)  # as pipeline.train_model chooses it
    train_set, _ = pipeline.build_dataset(
        prepared, "train", classes, config.data, workdir, uint8=inputs.uint8
    )
    timings["prepare_and_decode_s"] = time.perf_counter() - start

    # 1. The fine-tune of one fraction, as the flow runs it (per-step callback included).
    epochs: list[float] = []
    fit_error = None
    try:
        start = time.perf_counter()
        trained = pipeline.train_model(
            prepared,
            config.data,
            config.model,
            config.train,
            workdir,
            callbacks=[StepCallback()],
            progress=False,
        )
        timings["train_model_s"] = time.perf_counter() - start
        epochs = [row["images_per_s"] for row in trained.history]
        start = time.perf_counter()
        pipeline.evaluate_and_embed(
            prepared, trained, config.data, config.model, config.train, workdir, progress=False
        )
        timings["evaluate_and_embed_s"] = time.perf_counter() - start
    except Exception as exc:  # record and go on: the loops below still say a lot
        fit_error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"

    # 2. Loops: compute-only vs the real loader, paired and in rotating order.
    loops = measure_loops(args, config, train_set, device)
    cfg = config.train
    size, batch = args.image_size, cfg.batch_size
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # 3. timm's method, and its published figure for the model.
    reference: dict[str, Any] = {}
    published = PUBLISHED_TRAIN.get(args.model)
    timm_steps = {"warmup": args.timm_warmup, "steps": args.timm_steps}
    if published:
        reference["published"] = {**published, "source": PUBLISHED_SOURCE}
        published_batch = published["batch_size"] if device.type == "cuda" else min(batch, 8)
        reference["timm_method_published_settings"] = timm_style_train(
            args.model, published_batch, published["img_size"], device, **timm_steps
        )
    reference["timm_method_this_size"] = timm_style_train(
        args.model, batch, size, device, **timm_steps
    )

    results = {
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "fit": {
            "epochs": len(epochs),
            "train_images": prepared.n_train_images,
            "images_per_s_by_epoch": [round(x, 1) for x in epochs],
            "images_per_s_after_first_epoch": (
                round(statistics.median(epochs[1:]), 1) if len(epochs) > 1 else None
            ),
            "note": "training part of each epoch (validation and checkpoints excluded)",
            "error": fit_error,
        },
        "loops": loops,
        "timm_reference": reference,
    }
    settings = {
        "model": args.model,
        "image_size": size,
        "batch_size": batch,
        "fraction": args.fraction,
        "patients": args.patients,
        "epochs": args.epochs,
        "steps_per_loop": args.steps,
        "repeats": args.repeats,
        "loader_workers": cfg.num_workers,
        "input_path": inputs.describe(),
        "input_mb_per_batch": round(batch * size * size * (1 if inputs.uint8 else 4) / 1e6, 2),
        "amp_bf16": device.type == "cuda" and cfg.amp,
        "channels_last": device.type == "cuda" and cfg.channels_last,
        "cudnn_benchmark_in_chexflow": torch.backends.cudnn.benchmark,
        "config": args.config,
        "overrides": overrides,
        "device": str(device),
        "warmup": "one untimed loop per variant; first fit epoch excluded from its median",
    }
    return {"settings": settings, "results": results}


def gpu_figures(doc: dict[str, Any]) -> list[dict[str, Any]]:
    results, settings = doc["results"], doc["settings"]
    loops, ref = results["loops"], results["timm_reference"]
    ratio = loops.get("ratio_real_loader", {}).get("median")
    figures = [
        figure(
            f"{settings['model']} {settings['image_size']} px: real loader / compute-only "
            f"({settings['input_path']})",
            ratio,
            "ratio",
            f">= {TARGET}",
            ratio is not None and ratio >= TARGET,
        ),
        figure(
            "same, with a per-step callback (float(loss) sync, as the flow's logger)",
            loops.get("ratio_real_loader_step_callback", {}).get("median"),
            "ratio",
        ),
        figure(
            "same, previous input path (float32 normalised in the loader, unpinned)",
            loops.get("ratio_real_loader_float32", {}).get("median"),
            "ratio",
        ),
        figure("compute-only training", loops["compute_only"]["median"], "img/s"),
        figure(
            "fit, training images/s (after epoch 1)",
            results["fit"]["images_per_s_after_first_epoch"],
            "img/s",
        ),
        figure(
            "timm method at this size and batch",
            ref["timm_method_this_size"]["samples_per_s"],
            "img/s",
        ),
    ]
    if "published" in ref:
        pub, ours = ref["published"], ref["timm_method_published_settings"]
        figures.append(
            figure(
                f"timm method at {ours['img_size']} px, batch {ours['batch_size']} (this machine)",
                ours["samples_per_s"],
                "img/s",
            )
        )
        figures.append(
            figure("timm published (RTX 3090, fp16, same settings)", pub["samples_per_s"], "img/s")
        )
    return figures


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer patients/steps: < 5 min")
    parser.add_argument("--model", default="densenet121")
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--fraction", type=float, default=1.0, help="of the synthetic pool")
    parser.add_argument("--patients", type=int, default=None, help="default 200, quick 120")
    parser.add_argument("--epochs", type=int, default=None, help="default 3, quick 2")
    parser.add_argument("--steps", type=int, default=None, help="default 40, quick 20")
    parser.add_argument("--repeats", type=int, default=None, help="default 5, quick 3")
    parser.add_argument("--timm-warmup", type=int, default=10, help="timm method warm-up steps")
    parser.add_argument("--timm-steps", type=int, default=40, help="timm method timed steps")
    parser.add_argument("--config", default="configs/chexpert-gpu.yaml")
    parser.add_argument("--allow-cpu", action="store_true", help="run on CPU (script tests)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu.json"))
    args = parser.parse_args(argv)
    quick = args.quick
    args.patients = args.patients or (120 if quick else 200)
    args.epochs = args.epochs or (2 if quick else 3)
    args.steps = args.steps or (20 if quick else 40)
    args.repeats = args.repeats or (3 if quick else 5)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if torch.cuda.is_available():
        device = torch.device("cuda")
    elif args.allow_cpu:
        device = torch.device("cpu")
    else:
        return skipped_document(argv, args.out, "no CUDA device (torch.cuda.is_available() false)")
    doc = start_document("gpu", MODULE, argv)
    with tempfile.TemporaryDirectory(prefix="chexflow-bench-gpu-") as tmp:
        doc.update(run(args, Path(tmp), device))
    doc["figures"] = gpu_figures(doc)
    finish_document(doc, args.out)
    return doc


if __name__ == "__main__":
    main()
