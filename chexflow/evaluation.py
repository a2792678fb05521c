"""Predictions and per-class AUROC with bootstrap confidence intervals."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

CI_LEVEL = 0.95
# Bootstrap draws are processed in chunks of about this many (resample, image) cells.
_CHUNK_CELLS = 1 << 22


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op elsewhere (CPU runs stay in float32)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a batch of images; channels-last on CUDA."""
    if device.type == "cuda" and images.ndim == 4:
        return images.to(device, non_blocking=True, memory_format=torch.channels_last)
    return images.to(device, non_blocking=True)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and inference mode, restoring the model's previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        model.train(was_training)


def predict(
    model: nn.Module, loader: Iterable[Sequence[torch.Tensor]], device: torch.device
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sigmoid probabilities, targets and mask (float32 `[n, c]`) over a loader."""
    probs, targets, masks = [], [], []
    with eval_mode(model):
        for images, target, mask in loader:
            with autocast(device):
                logits = model(to_device(images, device))
            probs.append(torch.sigmoid(logits.float()).cpu())
            targets.append(target.float())
            masks.append(mask.float())
    if not probs:
        raise ValueError("predict: the loader yielded no batches")
    return tuple(torch.cat(parts).numpy() for parts in (probs, targets, masks))  # type: ignore[return-value]


def auroc_from_counts(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUROC from positive/negative weights per distinct score (ascending, last axis).

    Mann–Whitney with ties counted as one half, the same quantity as the area under
    sklearn's ROC curve. With integer weights every step is exact in float64, so the only
    rounding is the final division. Undefined (no positive or no negative weight) → NaN.
    """
    below = np.cumsum(neg, axis=-1) - neg
    wins = (pos * (below + 0.5 * neg)).sum(axis=-1)
    pairs = pos.sum(axis=-1) * neg.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / np.where(pairs > 0, pairs, 1), np.nan)


def _undefined_reason(n_pos: int, n_neg: int) -> str | None:
    if n_pos and n_neg:
        return None
    if not n_pos and not n_neg:
        return "no labelled images (all masked)"
    return "no positive images" if not n_pos else "no negative images"


def _bootstrap(
    bins: list[np.ndarray],
    n_bins: list[int],
    pos: np.ndarray,
    neg: np.ndarray,
    n_bootstrap: int,
    seed: int,
) -> np.ndarray:
    """AUROC per resample and class, `[n_bootstrap, c]`; images resampled jointly."""
    n, c = pos.shape
    rng = np.random.default_rng(seed)
    out = np.full((n_bootstrap, c), np.nan)
    step = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, n_bootstrap, step):
        b = min(step, n_bootstrap - start)
        draws = rng.integers(0, n, size=(b, n))
        for j in range(c):
            size = n_bins[j]
            flat = (np.arange(b)[:, None] * size + bins[j][draws]).ravel()
            pos_w = np.bincount(flat, pos[draws, j].ravel(), minlength=b * size)
            neg_w = np.bincount(flat, neg[draws, j].ravel(), minlength=b * size)
            out[start : start + b, j] = auroc_from_counts(
                pos_w.reshape(b, size), neg_w.reshape(b, size)
            )
    return out


def _interval(samples: np.ndarray) -> tuple[float | None, float | None]:
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return None, None
    tail = 100 * (1 - CI_LEVEL) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def _row_means(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    counts = finite.sum(axis=1)
    sums = np.where(finite, values, 0.0).sum(axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def auroc_table(
    probs: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray,
    class_names: Sequence[str],
    n_bootstrap: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-class AUROC with percentile bootstrap 95% CIs over images.

    Masked entries (mask 0) are left out of their class. A class without both positive
    and negative labels is reported with `defined: False` and a reason. `mean` averages
    the defined classes; its CI comes from the per-resample mean of those classes.
    `n_bootstrap=0` gives point estimates with `None` intervals.
    """
    probs, targets, mask = (np.asarray(a, dtype=np.float64) for a in (probs, targets, mask))
    if not probs.shape == targets.shape == mask.shape or probs.ndim != 2:
        raise ValueError(f"shapes differ: {probs.shape}, {targets.shape}, {mask.shape}")
    if probs.shape[1] != len(class_names):
        raise ValueError(f"{probs.shape[1]} columns for {len(class_names)} class names")
    labelled = mask > 0
    pos = (labelled & (targets > 0.5)).astype(np.float64)
    neg = (labelled & (targets <= 0.5)).astype(np.float64)
    uniques = [np.unique(probs[:, j], return_inverse=True) for j in range(probs.shape[1])]
    bins = [inv.reshape(-1) for _, inv in uniques]
    n_bins = [len(u) for u, _ in uniques]
    point = np.array(
        [
            auroc_from_counts(
                np.bincount(bins[j], pos[:, j], n_bins[j]),
                np.bincount(bins[j], neg[:, j], n_bins[j]),
            )
            for j in range(len(class_names))
        ]
    )
    boot = (
        _bootstrap(bins, n_bins, pos, neg, n_bootstrap, seed)
        if n_bootstrap > 0 and len(probs)
        else np.empty((0, len(class_names)))
    )
    classes: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(class_names):
        n_pos, n_neg = int(pos[:, j].sum()), int(neg[:, j].sum())
        reason = _undefined_reason(n_pos, n_neg)
        low, high = _interval(boot[:, j]) if reason is None else (None, None)
        classes[name] = {
            "auroc": float(point[j]) if reason is None else None,
            "ci_low": low,
            "ci_high": high,
            "n_pos": n_pos,
            "n_neg": n_neg,
            "defined": reason is None,
            "reason": reason,
        }
    defined = [j for j, name in enumerate(class_names) if classes[name]["defined"]]
    mean = float(point[defined].mean()) if defined else None
    mean_low, mean_high = _interval(_row_means(boot[:, defined])) if defined else (None, None)
    return {
        "classes": classes,
        "mean": mean,
        "mean_ci_low": mean_low,
        "mean_ci_high": mean_high,
        "n": len(probs),
    }
