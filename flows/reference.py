"""Embed the evaluation set with the initial (not fine-tuned) backbone: the "0%" reference."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from chexflow import records, runtime
from chexflow.config import ChexflowConfig
from chexflow.pretrain_step import starting_point
from chexflow.results import ReferenceResult
from chexflow.tracking import make_tracker
from flows._common import absolute, check_inputs, closing_run
from flows.pretrain import pretrained_start
from tasks import finetune as steps
from tasks import tracking as mlflow_tasks


@flow(
    name="reference", flow_run_name=records.REFERENCE_RUN_NAME, persist_result=True,
    result_serializer="json", log_prints=True,
)  # fmt: skip
def reference(
    data_dir: str,
    config: ChexflowConfig = ChexflowConfig(),
    workdir: str = ".chexflow",
    sweep_id: str | None = None,
) -> ReferenceResult:
    """Evaluate and embed with the backbone as initialised (hub weights, a local
    checkpoint, or random), logged as a ``chexflow.kind=reference`` run at fraction 0.

    The comparison uses it as the baseline that fine-tuning on labels moves away from.
    """
    workdir, data_dir = absolute(workdir), absolute(data_dir)
    inputs = check_inputs(config, workdir, data_dir, [], [0])  # before its MLflow run
    parallelism = runtime.configure(
        config.train.threads, config.train.num_workers, config.train.device
    )
    get_run_logger().info("Parallelism: %s", parallelism.describe())
    tracker = make_tracker(config.tracking.experiment, Path(workdir))
    config, _ = pretrained_start(data_dir, config, workdir)  # a sweep has done it already
    prepared = steps.prepare_data(data_dir, config.data, 0.0, 0, workdir)
    tags = records.reference_tags(
        config.model.name, prepared.eval_digest, str(flow_run.id), sweep_id
    )
    tags.update(records.init_tags(starting_point(config.model)))
    tags.update(inputs.tags() if inputs else {})
    run_id = mlflow_tasks.start_run(
        tracker, "reference", records.REFERENCE_RUN_NAME, tags, parent_run_id=sweep_id
    )
    with closing_run(tracker, run_id):
        evaluated = steps.evaluate_and_embed(
            prepared, None, config.data, config.model, config.train, workdir
        )
        analysed = steps.analyse(evaluated, config.analysis, "initial backbone (0%)", 0)
        mlflow_tasks.log_reference(tracker, run_id, config, prepared, evaluated, analysed)
    get_run_logger().info("Initial-backbone reference: MLflow run %s", run_id)
    return ReferenceResult(
        run_id=run_id,
        val_auroc_mean=evaluated.auroc.get("mean"),
        silhouette=analysed.flat_metrics.get("silhouette"),
    )
