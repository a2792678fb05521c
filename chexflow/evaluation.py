"""Predictions and per-class AUROC with bootstrap confidence intervals."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from chexflow.analysis.bootstrap import cluster_weights, patient_codes, percentile_interval, unit_of
from chexflow.data.dataset import normalise_pixels
from chexflow.data.labels import EVAL_CLASSES, column_of

CI_LEVEL = 0.95
# Bootstrap draws are processed in chunks of about this many (resample, image) cells.
_CHUNK_CELLS = 1 << 22


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op elsewhere (CPU runs stay in float32)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a batch of images; channels-last on CUDA; uint8 pixels normalised after the copy.

    uint8 ``[B, 1, S, S]`` (the CUDA input path, ``dataset.input_path``) becomes float32
    through ``dataset.normalise_pixels`` on ``device``; float batches arrive normalised.
    """
    if device.type == "cuda" and images.ndim == 4:
        moved = images.to(device, non_blocking=True, memory_format=torch.channels_last)
    else:
        moved = images.to(device, non_blocking=True)
    return normalise_pixels(moved) if moved.dtype == torch.uint8 else moved


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


def weighted_auroc(
    bins: list[np.ndarray],
    n_bins: list[int],
    pos: np.ndarray,
    neg: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:
    """AUROC per resample and class ``[rows, c]`` from image count weights ``[rows, n]``.

    ``bins[j]`` is each image's rank among the distinct scores of class j; a resample's
    positive and negative weights per distinct score give its exact Mann–Whitney AUROC.
    """
    b = len(weights)
    out = np.full((b, pos.shape[1]), np.nan)
    rows = np.arange(b)[:, None]
    for j in range(pos.shape[1]):
        size = n_bins[j]
        flat = (rows * size + bins[j][None, :]).ravel()
        pos_w = np.bincount(flat, (weights * pos[:, j]).ravel(), minlength=b * size)
        neg_w = np.bincount(flat, (weights * neg[:, j]).ravel(), minlength=b * size)
        out[:, j] = auroc_from_counts(pos_w.reshape(b, size), neg_w.reshape(b, size))
    return out


def score_bins(probs: np.ndarray) -> tuple[list[np.ndarray], list[int]]:
    """Per class, each image's index among the distinct scores, and how many there are."""
    uniques = [np.unique(probs[:, j], return_inverse=True) for j in range(probs.shape[1])]
    return [inv.reshape(-1) for _, inv in uniques], [len(u) for u, _ in uniques]


def _bootstrap(
    bins: list[np.ndarray],
    n_bins: list[int],
    pos: np.ndarray,
    neg: np.ndarray,
    n_bootstrap: int,
    seed: int,
    codes: np.ndarray,
) -> np.ndarray:
    """AUROC per resample and class, `[n_bootstrap, c]`; patients resampled jointly."""
    n = pos.shape[0]
    step = max(1, _CHUNK_CELLS // max(n, 1))
    parts = [
        weighted_auroc(bins, n_bins, pos, neg, w)
        for w in cluster_weights(codes, n_bootstrap, seed, max_rows=step)
    ]
    return np.concatenate(parts) if parts else np.empty((0, pos.shape[1]))


def label_values(frame: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """Raw label cells ``[n, c]`` of ``classes`` (1, 0, −1; NaN for blank)."""
    return (
        np.stack(
            [
                pd.to_numeric(frame[column_of(c)], errors="coerce").to_numpy(np.float64)
                for c in classes
            ],
            axis=1,
        )
        if len(classes)
        else np.empty((len(frame), 0))
    )


def certain_membership(values: np.ndarray) -> tuple[list[tuple[str, ...]], list[str | None]]:
    """Positive sets and single-label classes of ``EVAL_CLASSES`` by the certain-label rule.

    ``values`` are the raw cells of ``EVAL_CLASSES`` (``label_values``). An image is a
    positive of c when its cell is 1; it is single-label c (it joins the cluster
    metrics as c) when c is its only positive and none of the other classes is
    uncertain (−1): an uncertain class leaves its membership unknown, as it leaves the
    image out of that class's AUROC.
    """
    positive = values == 1.0
    uncertain = values == -1.0
    positives = [tuple(c for c, p in zip(EVAL_CLASSES, row, strict=True) if p) for row in positive]
    exclusive = [
        p[0] if len(p) == 1 and not u.any() else None
        for p, u in zip(positives, uncertain, strict=True)
    ]
    return positives, exclusive


def evaluation_columns(
    values: np.ndarray, probs: np.ndarray, head_classes: Sequence[str]
) -> dict[str, list[Any]]:
    """Per-image columns the comparison re-scores from: ``uncertain`` (``A|B``), the raw
    labels ``label/<class>`` of ``EVAL_CLASSES`` and the head's ``prob/<class>``."""
    columns: dict[str, list[Any]] = {
        "uncertain": [
            "|".join(c for c, u in zip(EVAL_CLASSES, row, strict=True) if u)
            for row in values == -1.0
        ]
    }
    for j, c in enumerate(EVAL_CLASSES):
        columns[f"label/{c}"] = values[:, j].tolist()
    for j, c in enumerate(head_classes):
        columns[f"prob/{c}"] = np.asarray(probs[:, j], dtype=np.float64).tolist()
    return columns


def certain_labels(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluation targets on certain labels only, whatever the training policy.

    Args:
        values: raw CheXpert cells ``[n, c]``: 1 positive, 0 negative, -1 uncertain,
            NaN blank (not mentioned).

    Returns:
        ``targets`` (1 where the cell is 1), ``mask`` (0 where it is -1: left out of that
        class's evaluation; blank counts as negative) and ``uncertain`` (bool), all
        ``[n, c]``; targets and mask float32.
    """
    values = np.asarray(values, dtype=np.float64)
    uncertain = values == -1.0
    targets = (values == 1.0).astype(np.float32)
    mask = (~uncertain).astype(np.float32)
    return targets, mask, uncertain


def _interval(value: float, samples: np.ndarray) -> tuple[float | None, float | None]:
    return percentile_interval(value, samples, CI_LEVEL)


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
    *,
    patients: Sequence[object] | None = None,
) -> dict[str, Any]:
    """Per-class AUROC with 95% percentile intervals from a patient (cluster) bootstrap.

    Masked entries (mask 0) are left out of their class: evaluate on certain labels by
    building ``targets``/``mask`` with ``certain_labels`` (−1 masked, whatever the
    training policy). A class without both positive and negative labels is reported
    with `defined: False` and a reason. `mean` averages the defined classes; its CI comes
    from the per-resample mean of those classes. `n_bootstrap=0` gives point estimates
    with `None` intervals. Intervals always contain their value.

    Args:
        patients: patient id per image; resamples draw patients with replacement and
            keep all their images (``None``: every image its own patient).

    Returns:
        ``classes`` {name: auroc, ci_low, ci_high, n_pos, n_neg, n_uncertain_excluded,
        n_pos_patients, defined, reason}, ``mean``, ``mean_ci_low``, ``mean_ci_high``,
        ``n``, ``n_patients``, ``bootstrap`` {resamples, seed, unit, method}.
    """
    probs, targets, mask = (np.asarray(a, dtype=np.float64) for a in (probs, targets, mask))
    if not probs.shape == targets.shape == mask.shape or probs.ndim != 2:
        raise ValueError(f"shapes differ: {probs.shape}, {targets.shape}, {mask.shape}")
    if probs.shape[1] != len(class_names):
        raise ValueError(f"{probs.shape[1]} columns for {len(class_names)} class names")
    codes = patient_codes(patients, len(probs))
    labelled = mask > 0
    pos = (labelled & (targets > 0.5)).astype(np.float64)
    neg = (labelled & (targets <= 0.5)).astype(np.float64)
    bins, n_bins = score_bins(probs)
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
        _bootstrap(bins, n_bins, pos, neg, n_bootstrap, seed, codes)
        if n_bootstrap > 0 and len(probs)
        else np.empty((0, len(class_names)))
    )
    classes: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(class_names):
        n_pos, n_neg = int(pos[:, j].sum()), int(neg[:, j].sum())
        reason = _undefined_reason(n_pos, n_neg)
        low, high = _interval(point[j], boot[:, j]) if reason is None else (None, None)
        classes[name] = {
            "auroc": float(point[j]) if reason is None else None,
            "ci_low": low,
            "ci_high": high,
            "n_pos": n_pos,
            "n_neg": n_neg,
            "n_uncertain_excluded": int((~labelled[:, j]).sum()),
            "n_pos_patients": len(np.unique(codes[pos[:, j] > 0])),
            "defined": reason is None,
            "reason": reason,
        }
    defined = [j for j, name in enumerate(class_names) if classes[name]["defined"]]
    mean = float(point[defined].mean()) if defined else None
    mean_low, mean_high = _interval(mean, _row_means(boot[:, defined])) if defined else (None, None)
    return {
        "classes": classes,
        "mean": mean,
        "mean_ci_low": mean_low,
        "mean_ci_high": mean_high,
        "n": len(probs),
        "n_patients": len(np.unique(codes)) if len(codes) else 0,
        "bootstrap": {
            "resamples": n_bootstrap,
            "seed": seed,
            "unit": unit_of(codes),
            "method": "percentile, cluster bootstrap over patients",
        },
    }
