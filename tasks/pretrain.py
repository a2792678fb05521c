"""Tasks of the pretraining flow: plan (key and cache), train, log, register."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from chexflow import pretrain_step, records
from chexflow.config import ChexflowConfig, DataConfig, ModelConfig, PretrainConfig, flatten
from chexflow.tracking import Tracker
from tasks.tracking import RETRY


class PretrainPlan(BaseModel):
    """The images a pretraining uses, its cache key and the cached backbone if any."""

    dataset_root: str
    paths: list[str]
    key: str
    cached: pretrain_step.PretrainedBackbone | None = None


@task(name="plan-pretraining", cache_policy=NO_CACHE)
def plan(
    data_dir: str, data_cfg: DataConfig, model_cfg: ModelConfig, cfg: PretrainConfig, workdir: str
) -> PretrainPlan:
    """Choose the pool images, key them by content and settings, look in the cache."""
    from chexflow.data.chexpert import find_dataset_root

    root = find_dataset_root(Path(data_dir))
    pool = pretrain_step.pretrain_pool(root, data_cfg, cfg)
    key = pretrain_step.pretrain_key(root, pool, data_cfg.image_size, model_cfg.name, cfg)
    return PretrainPlan(
        dataset_root=str(root),
        paths=pool["path"].tolist(),
        key=key,
        cached=pretrain_step.load_cached(Path(workdir), key),
    )


@task(name="pretrain-backbone", cache_policy=NO_CACHE)
def train_backbone(
    planned: PretrainPlan,
    data_cfg: DataConfig,
    model_cfg: ModelConfig,
    cfg: PretrainConfig,
    device: str,
    workdir: str,
    run_id: str,
) -> pretrain_step.PretrainedBackbone:
    """SimCLR on the planned images; the backbone is written under the plan's key."""
    from chexflow.train import select_device

    return pretrain_step.run_pretraining(
        Path(planned.dataset_root),
        pd.DataFrame({"path": planned.paths}),
        data_cfg,
        model_cfg,
        cfg,
        Path(workdir),
        planned.key,
        run_id=run_id,
        device=str(select_device(device)),  # type: ignore[arg-type]
    )


@task(name="mlflow-log-pretrain", **RETRY)
def log_pretrain(
    tracker: Tracker,
    run_id: str,
    config: ChexflowConfig,
    backbone: pretrain_step.PretrainedBackbone,
) -> None:
    """Settings, the loss per epoch, the cost, and the backbone under ``backbone/``."""
    params = {
        k: v
        for k, v in flatten(config).items()
        if k.startswith(("pretrain.", "model.name", "data."))
    }
    params["pretrain.key"] = backbone.key
    params["pretrain.n_images"] = str(backbone.images)
    tracker.log_params(run_id, params)
    for epoch, loss in enumerate(backbone.losses):
        tracker.log_metrics(run_id, {records.PRETRAIN_LOSS: loss}, step=epoch)
    tracker.log_metrics(
        run_id,
        {
            "pretrain_cpu_seconds": backbone.cpu_seconds,
            "pretrain_wall_seconds": backbone.wall_seconds,
        },
    )
    tracker.log_artifacts(run_id, Path(backbone.checkpoint).parent, records.BACKBONE_DIR)


@task(name="mlflow-register-backbone", **RETRY)
def register_backbone(tracker: Tracker, model_name: str, run_id: str, key: str) -> str:
    """Register the run's ``backbone/`` as a version of ``model_name``, aliased by its key."""
    return tracker.register(
        model_name,
        run_id,
        records.BACKBONE_DIR,
        tags={records.VERSION_RUN_TAG: run_id, records.PRETRAIN_KEY_TAG: key},
        alias=f"key-{key}",
    )
