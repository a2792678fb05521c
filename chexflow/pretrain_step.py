"""The pretraining step on local paths: the pool's images, the cache key, the cached backbone.

`chexflow.pretrain` holds the method (SimCLR, Chen et al. 2020); this module runs it on a
dataset the way `chexflow.pipeline` runs a fine-tune: it picks the training pool's images
(patient-disjoint from the evaluation and validation sets, labels unused), keys the result
by what determines it and writes the backbone where a second call with the same inputs
finds it.

Cache: ``<workdir>/pretrain/<key>/backbone.safetensors`` beside ``backbone.json`` (a
`PretrainedBackbone`: the file's sha256, the MLflow run that trained it, losses, CPU
seconds). The key covers the pool images' bytes (`content_keys`: an edited image changes
it), their paths, the image size, ``PREPROCESS_VERSION``, the model name and the
``pretrain`` section (not its registered-model name). A record whose file is missing or
whose digest differs is not trusted: the backbone is trained again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ValidationError

from chexflow import records
from chexflow.config import DataConfig, ModelConfig, PretrainConfig, fingerprint
from chexflow.data.chexpert import find_dataset_root, read_split
from chexflow.data.dataset import PREPROCESS_VERSION, content_keys, load_images
from chexflow.data.splits import make_splits
from chexflow.errors import DataError
from chexflow.files import atomic_write_json

CHECKPOINT_NAME = "backbone.safetensors"
RECORD_NAME = "backbone.json"


class PretrainedBackbone(BaseModel):
    """A pretrained backbone on disk and how it was made (``backbone.json``)."""

    key: str
    checkpoint: str
    sha256: str
    run_id: str | None
    model: str
    image_size: int
    images: int
    epochs: int
    losses: list[float]
    cpu_seconds: float
    wall_seconds: float


def pretrain_pool(data_dir: Path, data_cfg: DataConfig, cfg: PretrainConfig) -> pd.DataFrame:
    """The training pool's images to pretrain on (the canonical frame, labels unused).

    The pool is what `make_splits` leaves for training (same view filters, patient-disjoint
    from evaluation and validation); with ``cfg.max_images`` a random subset of that many
    images, drawn with ``cfg.seed`` and kept in pool order.

    Raises:
        DataError: the dataset cannot be read, or the pool has fewer than 2 images.
    """
    root = find_dataset_root(Path(data_dir))
    train = read_split(root, "train")
    valid = read_split(root, "valid") if (root / "valid.csv").exists() else None
    if valid is None and data_cfg.eval_source != "holdout":
        raise DataError(f"{root / 'valid.csv'} is missing; use data.eval_source=holdout")
    pool = make_splits(train, valid, data_cfg).pool
    if cfg.max_images is not None and len(pool) > cfg.max_images:
        rng = np.random.default_rng(cfg.seed)
        pool = pool.iloc[np.sort(rng.choice(len(pool), cfg.max_images, replace=False))]
    if len(pool) < 2:
        raise DataError(f"the training pool has {len(pool)} image(s); pretraining needs 2")
    return pool.reset_index(drop=True)


def pretrain_key(
    root: Path, pool: pd.DataFrame, image_size: int, model_name: str, cfg: PretrainConfig
) -> str:
    """16 hex characters naming a pretraining by everything that determines its weights.

    Raises:
        DataError: an image of ``pool`` is missing or unreadable.
    """
    paths = pool["path"].tolist()
    digest = hashlib.sha256()
    digest.update("\n".join(paths).encode())
    digest.update("\n".join(content_keys(Path(root), paths)).encode())
    settings = cfg.model_dump(mode="json", exclude={"registered_model"})
    return fingerprint(
        digest.hexdigest(), settings, model_name, int(image_size), PREPROCESS_VERSION
    )


def backbone_dir(workdir: Path, key: str) -> Path:
    return Path(workdir) / "pretrain" / key


def sha256_of(path: Path) -> str:
    """sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_cached(workdir: Path, key: str) -> PretrainedBackbone | None:
    """The finished pretraining of ``key``, or None when absent or not trustworthy."""
    directory = backbone_dir(workdir, key)
    return read_record(directory / CHECKPOINT_NAME)


def read_record(checkpoint: Path) -> PretrainedBackbone | None:
    """The record beside a backbone file, when it names this file's exact bytes."""
    checkpoint = Path(checkpoint)
    record_path = checkpoint.with_name(RECORD_NAME)
    if not checkpoint.is_file() or not record_path.is_file():
        return None
    try:
        record = PretrainedBackbone.model_validate(json.loads(record_path.read_text()))
    except (OSError, ValueError, ValidationError):
        return None
    if Path(record.checkpoint).name != checkpoint.name or sha256_of(checkpoint) != record.sha256:
        return None
    return record


def run_pretraining(
    root: Path,
    pool: pd.DataFrame,
    data_cfg: DataConfig,
    model_cfg: ModelConfig,
    cfg: PretrainConfig,
    workdir: Path,
    key: str,
    *,
    run_id: str | None = None,
    device: str = "cpu",
    on_epoch: Callable[[int, float], None] | None = None,
) -> PretrainedBackbone:
    """Pretrain ``model_cfg.name`` from random weights on ``pool`` and write it under ``key``.

    Images come from the shared preprocessed-image cache at ``data_cfg.image_size``. The
    backbone is built like the fine-tune model (same architecture, one input channel);
    hub weights and ``init_checkpoint`` are not used: pretraining starts from scratch.

    Returns:
        The record written beside the checkpoint (CPU seconds of this process included).
    """
    from chexflow.models import create_model, head_classes
    from chexflow.pipeline import image_cache_dir
    from chexflow.pretrain import PretrainSettings, pretrain, save_backbone
    from chexflow.train import seed_everything

    started_cpu, started = time.process_time(), time.perf_counter()
    images = load_images(
        Path(root), pool["path"].tolist(), data_cfg.image_size, image_cache_dir(data_cfg, workdir)
    )
    bare = model_cfg.model_copy(
        update={"pretrained": False, "init_checkpoint": None, "linear_probe": False}
    )
    seed_everything(cfg.seed)
    model = create_model(bare, len(head_classes(bare)))
    settings = PretrainSettings(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        temperature=cfg.temperature,
        projection_dim=cfg.projection_dim,
        min_crop=cfg.min_crop,
        seed=cfg.seed,
    )
    result = pretrain(model, images, settings, device=device, on_epoch=on_epoch)
    directory = backbone_dir(workdir, key)
    checkpoint = save_backbone(model.cpu(), directory / CHECKPOINT_NAME)
    record = PretrainedBackbone(
        key=key,
        checkpoint=str(checkpoint),
        sha256=sha256_of(checkpoint),
        run_id=run_id,
        model=model_cfg.name,
        image_size=data_cfg.image_size,
        images=result.images,
        epochs=cfg.epochs,
        losses=result.losses,
        cpu_seconds=round(time.process_time() - started_cpu, 3),
        wall_seconds=round(time.perf_counter() - started, 3),
    )
    atomic_write_json(directory / RECORD_NAME, record.model_dump(mode="json"), indent=2)
    return record


def starting_point(model_cfg: ModelConfig) -> str:
    """The ``chexflow.init`` tag of a run built from ``model_cfg`` (`records.init_tag_value`).

    A checkpoint written by `run_pretraining` (its record beside it, digest matching) is
    named by its pretraining run; any other local checkpoint by its sha256 prefix.
    """
    if model_cfg.init_checkpoint is not None:
        path = Path(model_cfg.init_checkpoint)
        record = read_record(path)
        if record is not None and record.run_id:
            return records.init_tag_value(None, record.run_id, None)
        sha = record.sha256 if record is not None else sha256_of(path) if path.is_file() else "?"
        return records.init_tag_value(sha, None, None)
    return records.init_tag_value(None, None, model_cfg.name if model_cfg.pretrained else None)
