"""Fine-tune one label fraction × seed and record everything in MLflow."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import Field

from chexflow import pipeline, records, runtime
from chexflow.config import ChexflowConfig, Seed
from chexflow.pretrain_step import starting_point
from chexflow.progress import EpochProgress
from chexflow.results import FinetuneResult
from chexflow.tracking import BatchedMetricLogger, make_tracker
from flows._common import absolute, check_inputs, closing_run, publish_markdown, publish_run_links
from flows.device import device_turn
from flows.pretrain import pretrained_start
from flows.summaries import finetune_markdown
from tasks import finetune as steps
from tasks import tracking as mlflow_tasks

Fraction = Annotated[float, Field(gt=0, le=1, description="Share of training patients, (0, 1].")]


def run_name() -> str:
    """``finetune-1pct-seed0``: the flow run says what it trains (Prefect UI, sweeps)."""
    parameters = flow_run.parameters
    return records.finetune_run_name(parameters["fraction"], parameters.get("seed", 0))


@flow(
    name="finetune",
    flow_run_name=run_name,
    persist_result=True,
    result_serializer="json",
    log_prints=True,
)
def finetune(
    data_dir: str,
    fraction: Fraction,
    seed: Seed = 0,
    config: ChexflowConfig = ChexflowConfig(),
    workdir: str = ".chexflow",
    sweep_id: str | None = None,
    force: bool = False,
) -> FinetuneResult:
    """Fine-tune a timm backbone on one fraction of the training patients.

    Prepares the fixed split and this fraction's patients, trains (resuming from the last
    checkpoint of the same configuration, or reusing a finished one), evaluates per-class
    AUROC, embeds the evaluation set, measures its clusters and logs it all to one MLflow
    run, whose checkpoint is registered as a model version.
    """
    workdir, data_dir = absolute(workdir), absolute(data_dir)
    # everything the run reads, before any MLflow run exists (nothing half-written)
    inputs = check_inputs(config, workdir, data_dir, [fraction], [seed])
    parallelism = runtime.configure(
        config.train.threads, config.train.num_workers, config.train.device
    )
    get_run_logger().info("Parallelism: %s", parallelism.describe())
    config, _ = pretrained_start(data_dir, config, workdir)  # a sweep has done it already
    tracker = make_tracker(config.tracking.experiment, Path(workdir))
    name = records.finetune_run_name(fraction, seed)
    device = contextlib.ExitStack()
    with device:
        # held until the evaluation set is embedded (flows.device)
        device.enter_context(device_turn(name, get_run_logger()))
        prepared = steps.prepare_data(data_dir, config.data, fraction, seed, workdir)
        steps.check_room(prepared, config.data, workdir)
        train_fp = pipeline.training_fingerprint(prepared, config.model, config.train, seed)
        previous = mlflow_tasks.previous_attempts(tracker, train_fp)
        tags = records.finetune_tags(
            fraction,
            seed,
            config.model.name,
            prepared.eval_digest,
            str(flow_run.id),
            train_fp,
            sweep_id,
            previous,
        )
        tags.update(records.init_tags(starting_point(config.model)))
        tags.update(inputs.tags() if inputs else {})  # coverage of an incomplete init_checkpoint
        run_id = mlflow_tasks.start_run(tracker, "finetune", name, tags, parent_run_id=sweep_id)
        get_run_logger().info(
            "MLflow run %s (%s), %d training images of %d patients",
            run_id,
            name,
            prepared.n_train_images,
            prepared.n_train_patients,
        )
        with closing_run(tracker, run_id):
            metric_logger = BatchedMetricLogger(tracker, run_id)
            # One line per epoch in the run's log (the console of the CLI, the Prefect UI).
            progress = EpochProgress(config.train.epochs, get_run_logger())
            trained, reused = steps.train_or_reuse(
                prepared, config, workdir, force, [metric_logger, progress]
            )
            mlflow_tasks.flush_metrics(metric_logger)
            outcome = records.training_outcome_tags(reused, trained.resumed_from_epoch)
            mlflow_tasks.set_tags(tracker, run_id, outcome)
            evaluated = steps.evaluate_and_embed(
                prepared, trained, config.data, config.model, config.train, workdir
            )
            device.close()  # the device is free: the next fine-tune may train during the analysis
            analysed = steps.analyse(evaluated, config.analysis, name, seed)
            mlflow_tasks.log_finetune(
                tracker,
                run_id,
                config,
                prepared,
                trained,
                evaluated,
                analysed,
                sorted(metric_logger.epochs_logged),
            )
            version = None
            if config.tracking.register_models:
                version = mlflow_tasks.register_model(
                    tracker, config.tracking.registered_model, run_id, fraction, seed
                )
    publish_markdown(
        finetune_markdown(fraction, seed, run_id, evaluated.auroc, analysed.flat_metrics),
        key=f"finetune-{name}",
        description=f"Evaluation of {name}",
    )
    publish_run_links(tracker, run_id, f"mlflow-{name}", f"MLflow run of {name}")
    return FinetuneResult(
        run_id=run_id,
        fraction=fraction,
        seed=seed,
        model_version=version,
        val_auroc_mean=evaluated.auroc.get("mean"),
        silhouette=analysed.flat_metrics.get("silhouette"),
        reused_training=reused,
        output_dir=evaluated.output_dir,
    )
