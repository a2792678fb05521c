"""Pre-logits embeddings of the evaluation set, and their files on disk.

A directory holds `features.npy` (float16 `[n, d]`), `index.csv` (one row per feature
row: `path`, `patient`, `view`, `positives` as `A|B`, `exclusive` or empty) and
`meta.json` (`n`, `dim`, `dtype` plus what the caller passes, e.g. `eval_digest`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from chexflow.errors import DataError
from chexflow.evaluation import autocast, eval_mode, to_device
from chexflow.files import json_safe, staged_directory

FEATURES = "features.npy"
INDEX = "index.csv"
META = "meta.json"
INDEX_COLUMNS: tuple[str, ...] = ("path", "patient", "view", "positives", "exclusive")
DTYPE = np.float16


def embedding_dim(model: nn.Module) -> int:
    """Width of `forward_head(..., pre_logits=True)` for a timm model."""
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


def extract_embeddings(
    model: nn.Module,
    loader: Iterable[Sequence[torch.Tensor]],
    device: torch.device,
    progress: bool = True,
) -> np.ndarray:
    """Pre-logits features, float16 `[n, d]`, in loader order (eval + inference mode).

    The loader yields `(image, target, mask)`; only the images are used: normalised
    float32 `[B, 1, S, S]`, or uint8 pixels normalised on the device after the copy
    (`evaluation.to_device`, the CUDA input path of `dataset.input_path`).
    """
    chunks: list[np.ndarray] = []
    total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    show = progress and sys.stderr.isatty()
    with eval_mode(model), tqdm(total=total, desc="embed", disable=not show) as bar:
        for batch in loader:
            with autocast(device):
                features = model.forward_features(to_device(batch[0], device))
                pooled = model.forward_head(features, pre_logits=True)
            chunks.append(pooled.float().cpu().numpy().astype(DTYPE))
            bar.update(1)
    if not chunks:
        return np.empty((0, embedding_dim(model)), dtype=DTYPE)
    return np.concatenate(chunks)


def predict_and_embed(
    model: nn.Module,
    loader: Iterable[Sequence[torch.Tensor]],
    device: torch.device,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`evaluation.predict` and `extract_embeddings` in one pass over the loader.

    A timm model computes `model(x)` as `forward_head(forward_features(x))`, so the
    logits and the pre-logits embedding come from the same backbone features: the
    evaluation set is decoded and run through the backbone once instead of twice (the
    head, a pooling and a linear layer, runs twice). Same numbers as the two passes.
    Images as in `extract_embeddings` (float32 normalised, or uint8 pixels).

    Returns:
        Sigmoid probabilities, targets and mask (float32 `[n, c]`), and the features
        (float16 `[n, d]`), in loader order.
    """
    probs, targets, masks, chunks = [], [], [], []
    total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    show = progress and sys.stderr.isatty()
    with eval_mode(model), tqdm(total=total, desc="evaluate", disable=not show) as bar:
        for images, target, mask in loader:
            with autocast(device):
                features = model.forward_features(to_device(images, device))
                logits = model.forward_head(features)
                pooled = model.forward_head(features, pre_logits=True)
            probs.append(torch.sigmoid(logits.float()).cpu())
            chunks.append(pooled.float().cpu().numpy().astype(DTYPE))
            targets.append(target.float())
            masks.append(mask.float())
            bar.update(1)
    if not probs:
        raise ValueError("predict_and_embed: the loader yielded no batches")
    labels = tuple(torch.cat(parts).numpy() for parts in (probs, targets, masks))
    return (*labels, np.concatenate(chunks))  # type: ignore[return-value]


def _join_labels(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    return "|".join(str(v) for v in value)


def _exclusive(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)


def index_frame(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with the index columns first, `positives` as `A|B` and `exclusive` as text."""
    missing = [c for c in INDEX_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{INDEX}: the table lacks column(s) {', '.join(missing)}")
    out = table.reset_index(drop=True).copy()
    out["positives"] = [_join_labels(v) for v in out["positives"]]
    out["exclusive"] = [_exclusive(v) for v in out["exclusive"]]
    rest = [c for c in out.columns if c not in INDEX_COLUMNS]
    return out[[*INDEX_COLUMNS, *rest]]


def save_embeddings(
    out_dir: Path, features: np.ndarray, table: pd.DataFrame, meta: Mapping[str, Any]
) -> None:
    """Write the three files into a temporary sibling directory, then swap it in.

    Raises:
        DataError: features are not 2-D, or the table has another number of rows or lacks
            an index column.
    """
    out_dir = Path(out_dir)
    if features.ndim != 2:
        raise DataError(f"{FEATURES}: expected a 2-D [n, d] array, got shape {features.shape}")
    if len(table) != len(features):
        raise DataError(f"{INDEX}: {len(table)} rows for {len(features)} feature rows")
    frame = index_frame(table)
    n, dim = features.shape
    info = {**meta, "n": int(n), "dim": int(dim), "dtype": np.dtype(DTYPE).name}
    with staged_directory(out_dir) as tmp:
        np.save(tmp / FEATURES, np.ascontiguousarray(features, dtype=DTYPE), allow_pickle=False)
        frame.to_csv(tmp / INDEX, index=False)
        (tmp / META).write_text(json.dumps(json_safe(info), indent=2, default=str) + "\n")


def _require(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: missing embedding file")
    return path


def load_embeddings(directory: Path) -> tuple[np.ndarray, pd.DataFrame, dict[str, Any]]:
    """Features (as float32), index table and metadata written by `save_embeddings`.

    Raises:
        DataError: a missing or malformed file, or files that disagree on the row count.
    """
    directory = Path(directory)
    features_path, index_path, meta_path = (
        _require(directory / name) for name in (FEATURES, INDEX, META)
    )
    try:
        features = np.load(features_path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{features_path}: not a plain .npy array ({exc})") from exc
    if features.ndim != 2:
        raise DataError(f"{features_path}: expected [n, d], got shape {features.shape}")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise DataError(f"{meta_path}: malformed JSON ({exc})") from exc
    table = pd.read_csv(index_path, dtype={c: str for c in INDEX_COLUMNS})
    missing = [c for c in INDEX_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{index_path}: lacks column(s) {', '.join(missing)}")
    table[["positives", "exclusive"]] = table[["positives", "exclusive"]].fillna("")
    if len(table) != len(features):
        raise DataError(f"{index_path}: {len(table)} rows for {len(features)} feature rows")
    if (meta.get("n"), meta.get("dim")) != features.shape:
        raise DataError(
            f"{meta_path}: says n={meta.get('n')}, dim={meta.get('dim')} but "
            f"{FEATURES} has shape {features.shape}"
        )
    return features.astype(np.float32), table, meta
