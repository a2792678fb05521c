"""Cost per image of the training augmentations, at 64 and 320 px, and of one SimCLR step.

    python -m bench.bench_augment --out bench/results/augment.json

(a) ``train.augment``: ``ChexpertImages(augment=True)`` gathering a batch (affine jitter +
brightness/contrast, ``chexflow.data.dataset.augment_batch``) against the same batch
without it; the difference is the augmentation's cost. (b) The pretraining views
(``chexflow.pretrain.radiograph_views``: crop, rotation, gamma, contrast, blur, noise), two
per image as SimCLR draws them. Both on CPU, one torch thread (the per-image cost does not
depend on other processes' use of the cores; CPU time is reported beside wall time).
(c) One pretraining step (two views, forward + backward, AdamW) of the demo's resnet10t at
64 px per image: what sizes the demo's pretraining (``chexflow.demo``). (d) With
``--demo-data DIR`` (the demo's dataset, ``<workdir>/data/synthetic-p3000-px64-seed0``):
the demo's whole pretraining as the flow runs it (``pretrain_step.run_pretraining``, the
demo's ``pretrain`` section, 2 torch threads), its CPU seconds against the demo's share.
Batches of ``--batch`` images; figures are medians over ``--repeats`` after one warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import figure, run_in_tempdir, stats

SIZES = (64, 320)


def _per_image(
    fn: Callable[[], Any], n_images: int, repeats: int
) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds per image of ``fn()`` over ``repeats`` timed calls."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        wall.append((time.perf_counter() - w0) / n_images)
        cpu.append((time.process_time() - c0) / n_images)
    return wall, cpu


DEMO_PRETRAIN_CPU_S = 60.0  # the pretraining's share of the demo's 5-minute budget


def demo_pretraining(data: Path, tmp: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The demo's pretraining, once, with 2 torch threads: its cost and losses."""
    from chexflow.demo import demo_settings
    from chexflow.pretrain_step import pretrain_key, pretrain_pool, run_pretraining

    torch.set_num_threads(2)
    cfg = demo_settings(False).config
    pool = pretrain_pool(data, cfg.data, cfg.pretrain)
    key = pretrain_key(data, pool, cfg.data.image_size, cfg.model.name, cfg.pretrain)
    # the image cache is filled first (the demo's fine-tunes fill it anyway)
    from chexflow.data.dataset import load_images

    load_images(data, pool["path"].tolist(), cfg.data.image_size, tmp / "cache" / "images")
    made = run_pretraining(data, pool, cfg.data, cfg.model, cfg.pretrain, tmp, key)
    torch.set_num_threads(1)
    cpu = made.cpu_seconds
    result = {
        "pretrain": cfg.pretrain.model_dump(mode="json"),
        "images": made.images,
        "cpu_s": cpu,
        "wall_s": made.wall_seconds,
        "losses": made.losses,
    }
    fig = figure(
        "demo pretraining (resnet10t, 64 px)",
        round(cpu, 1),
        "s CPU",
        target=f"<= {DEMO_PRETRAIN_CPU_S:g} s",
        met=cpu <= DEMO_PRETRAIN_CPU_S,
    )
    return result, fig


def measure(batch: int, repeats: int, demo_data: Path | None, tmp: Path) -> dict[str, Any]:
    from chexflow.config import ModelConfig
    from chexflow.data.dataset import ChexpertImages
    from chexflow.models import create_model
    from chexflow.pretrain import PretrainSettings, pretrain, radiograph_views

    torch.set_num_threads(1)
    results: dict[str, Any] = {}
    figures = []
    rng = np.random.default_rng(0)
    for size in SIZES:
        images = rng.integers(0, 256, (batch, size, size), dtype=np.uint8)
        labels = np.zeros((batch, 5), np.float32)
        plain = ChexpertImages(images, labels, labels)
        jitter = ChexpertImages(images, labels, labels, augment=True)
        index = np.arange(batch)
        base_wall, base_cpu = _per_image(lambda d=plain, i=index: d[i], batch, repeats)
        aug_wall, aug_cpu = _per_image(lambda d=jitter, i=index: d[i], batch, repeats)
        unit = torch.from_numpy(images).unsqueeze(1).float() / 255.0
        gen = torch.Generator().manual_seed(0)
        view_wall, view_cpu = _per_image(
            lambda u=unit, g=gen: [radiograph_views(u, g) for _ in range(2)], batch, repeats
        )
        extra = statistics.median(aug_cpu) - statistics.median(base_cpu)
        results[f"s{size}"] = {
            "gather_without_augment_s_per_image": stats(base_wall, 7),
            "gather_with_augment_s_per_image": stats(aug_wall, 7),
            "gather_without_augment_cpu_s_per_image": stats(base_cpu, 7),
            "gather_with_augment_cpu_s_per_image": stats(aug_cpu, 7),
            "simclr_two_views_s_per_image": stats(view_wall, 7),
            "simclr_two_views_cpu_s_per_image": stats(view_cpu, 7),
        }
        figures.append(
            figure(f"train.augment cost at {size} px", round(extra * 1e3, 4), "ms CPU / image")
        )
        figures.append(
            figure(
                f"SimCLR two views at {size} px",
                round(statistics.median(view_cpu) * 1e3, 4),
                "ms CPU / image",
            )
        )
    model = create_model(ModelConfig(name="resnet10t"), num_classes=5)
    images = rng.integers(0, 256, (batch, 64, 64), dtype=np.uint8)
    settings = PretrainSettings(epochs=1, batch_size=batch)
    step_wall, step_cpu = _per_image(lambda: pretrain(model, images, settings), batch, repeats)
    results["pretrain_step_resnet10t_s64"] = {
        "wall_s_per_image": stats(step_wall, 6),
        "cpu_s_per_image": stats(step_cpu, 6),
    }
    figures.append(
        figure(
            "SimCLR step, resnet10t 64 px",
            round(statistics.median(step_cpu) * 1e3, 2),
            "ms CPU / image (1 thread)",
        )
    )
    if demo_data is not None:
        results["demo_pretraining"], fig = demo_pretraining(demo_data, tmp)
        figures.append(fig)
    return {
        "settings": {
            "batch": batch,
            "repeats": repeats,
            "torch_threads": 1,
            "warmup": 1,
            "demo_data": demo_data,
        },
        "results": results,
        "figures": figures,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/augment.json"))
    parser.add_argument("--demo-data", type=Path, default=None, help="The demo's dataset.")
    args = parser.parse_args(argv)
    return run_in_tempdir(
        "augment",
        "bench.bench_augment",
        argv,
        args.out,
        lambda tmp: measure(args.batch, args.repeats, args.demo_data, tmp),
    )


if __name__ == "__main__":
    main()
