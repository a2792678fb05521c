"""Pretrain a backbone with SimCLR on the training pool's images (no labels), cached by input.

The sweep runs it first when ``model.init_from_pretraining`` is set (`pretrained_start`),
so every fraction and the 0% reference start from the same pretrained backbone.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from chexflow import records, runtime
from chexflow.config import ChexflowConfig
from chexflow.results import PretrainingResult
from chexflow.tracking import make_tracker
from flows._common import absolute, check_inputs, closing_run
from tasks import pretrain as steps
from tasks import tracking as mlflow_tasks


@flow(
    name="pretrain",
    flow_run_name=records.PRETRAIN_RUN_NAME,
    persist_result=True,
    result_serializer="json",
    log_prints=True,
)
def pretrain(
    data_dir: str,
    config: ChexflowConfig = ChexflowConfig(),
    workdir: str = ".chexflow",
    force: bool = False,
) -> PretrainingResult:
    """SimCLR-pretrain ``config.model.name`` on the training pool (section ``pretrain``).

    A finished pretraining of the same images (by content), settings, model and
    preprocessing is reused without a new MLflow run; otherwise a ``chexflow.kind=pretrain``
    run logs the loss per epoch, the cost and the safetensors backbone (``backbone/``),
    registered as a version of ``pretrain.registered_model``.
    """
    workdir, data_dir = absolute(workdir), absolute(data_dir)
    check_inputs(config, workdir)
    logger = get_run_logger()
    parallelism = runtime.configure(
        config.train.threads, config.train.num_workers, config.train.device
    )
    logger.info("Parallelism: %s", parallelism.describe())
    planned = steps.plan(data_dir, config.data, config.model, config.pretrain, workdir)
    if planned.cached is not None and not force:
        cached = planned.cached
        logger.info("Pretrained backbone %s reused (run %s)", cached.key, cached.run_id)
        return PretrainingResult(
            run_id=cached.run_id,
            checkpoint=cached.checkpoint,
            key=cached.key,
            reused=True,
            images=cached.images,
            losses=cached.losses,
            cpu_seconds=cached.cpu_seconds,
            wall_seconds=cached.wall_seconds,
        )
    tracker = make_tracker(config.tracking.experiment, Path(workdir))
    tags = records.pretrain_tags(
        config.model.name, planned.key, str(flow_run.id), len(planned.paths)
    )
    run_id = mlflow_tasks.start_run(tracker, "pretrain", records.PRETRAIN_RUN_NAME, tags)
    logger.info(
        "Pretraining %s on %d images: MLflow run %s", config.model.name, len(planned.paths), run_id
    )
    with closing_run(tracker, run_id):
        backbone = steps.train_backbone(
            planned,
            config.data,
            config.model,
            config.pretrain,
            config.train.device,
            workdir,
            run_id,
        )
        steps.log_pretrain(tracker, run_id, config, backbone)
        version = None
        if config.tracking.register_models:
            version = steps.register_backbone(
                tracker, config.pretrain.registered_model, run_id, backbone.key
            )
    logger.info(
        "Pretrained in %.0f s CPU (%.0f s wall), NT-Xent %s",
        backbone.cpu_seconds,
        backbone.wall_seconds,
        " → ".join(f"{x:.3f}" for x in backbone.losses),
    )
    return PretrainingResult(
        run_id=run_id,
        checkpoint=backbone.checkpoint,
        key=backbone.key,
        model_version=version,
        images=backbone.images,
        losses=backbone.losses,
        cpu_seconds=backbone.cpu_seconds,
        wall_seconds=backbone.wall_seconds,
    )


def pretrained_start(
    data_dir: str, config: ChexflowConfig, workdir: str, force: bool = False
) -> tuple[ChexflowConfig, PretrainingResult | None]:
    """With ``model.init_from_pretraining`` (and no ``init_checkpoint``): run or reuse the
    pretraining flow and return the config whose ``model.init_checkpoint`` is its backbone.
    Otherwise the config as given and None."""
    if not config.model.init_from_pretraining or config.model.init_checkpoint is not None:
        return config, None
    result = pretrain(data_dir, config, workdir, force=force)
    model = config.model.model_copy(update={"init_checkpoint": Path(result.checkpoint)})
    return config.model_copy(update={"model": model}), result
