"""Embed the evaluation set with the initial (not fine-tuned) backbone: the "0%" reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from chexflow.config import ChexflowConfig
from chexflow.tracking import (
    EVAL_DIGEST_TAG,
    FRACTION_TAG,
    PREFECT_RUN_TAG,
    SEED_TAG,
    SWEEP_TAG,
    make_tracker,
)
from flows._common import absolute, one_line
from tasks import finetune as steps
from tasks import tracking as mlflow_tasks


@flow(name="reference", persist_result=True, result_serializer="json", log_prints=True)
def reference(
    data_dir: str,
    config: ChexflowConfig = ChexflowConfig(),
    workdir: str = ".chexflow",
    sweep_id: str | None = None,
) -> dict[str, Any]:
    """Evaluate and embed with the backbone as initialised (hub weights, a local
    checkpoint, or random), logged as a ``chexflow.kind=reference`` run at fraction 0.

    The comparison uses it as the baseline that fine-tuning on labels moves away from.
    """
    logger = get_run_logger()
    workdir, data_dir = absolute(workdir), absolute(data_dir)
    tracker = make_tracker(config.tracking.experiment, Path(workdir))
    prepared = steps.prepare_data(data_dir, config.data, 0.0, 0, workdir)
    tags = {
        FRACTION_TAG: "0.0",
        SEED_TAG: "0",
        EVAL_DIGEST_TAG: prepared.eval_digest,
        PREFECT_RUN_TAG: str(flow_run.id),
        "chexflow.model": config.model.name,
    }
    if sweep_id:
        tags[SWEEP_TAG] = sweep_id
    run_id = mlflow_tasks.start_run(
        tracker, "reference", "reference-initial-backbone", tags, parent_run_id=sweep_id
    )
    try:
        evaluated = steps.evaluate_and_embed(
            prepared, None, config.data, config.model, config.train, workdir
        )
        analysed = steps.analyse(evaluated, config.analysis, "initial backbone (0%)", 0)
        mlflow_tasks.log_reference(tracker, run_id, config, prepared, evaluated, analysed)
        mlflow_tasks.finish_run(tracker, run_id)
    except BaseException as exc:
        mlflow_tasks.finish_run(tracker, run_id, failure=one_line(exc))
        raise
    logger.info("Initial-backbone reference: MLflow run %s", run_id)
    return {
        "run_id": run_id,
        "fraction": 0.0,
        "seed": 0,
        "val_auroc_mean": evaluated.auroc.get("mean"),
        "silhouette": analysed.flat_metrics.get("silhouette"),
    }
