"""Fine-tune one label fraction × seed and record everything in MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import Field

from chexflow import pipeline
from chexflow.config import ChexflowConfig
from chexflow.data.labels import metric_key
from chexflow.tracking import (
    EVAL_DIGEST_TAG,
    FRACTION_TAG,
    PREFECT_RUN_TAG,
    PREVIOUS_ATTEMPTS_TAG,
    SEED_TAG,
    SWEEP_TAG,
    TRAINING_FP_TAG,
    BatchedMetricLogger,
    fraction_label,
    make_tracker,
)
from flows._common import absolute, one_line, publish_markdown, publish_run_links
from tasks import finetune as steps
from tasks import tracking as mlflow_tasks

Fraction = Annotated[float, Field(gt=0, le=1, description="Share of training patients, (0, 1].")]


def _train_with_cache(
    prepared, config: ChexflowConfig, workdir: str, force: bool, callbacks: list[Any]
) -> tuple[Any, bool]:
    """Train, or reuse a finished training of the same fingerprint; say which happened.

    A cached record whose checkpoint files were deleted is not trusted: it retrains.
    """
    options = {"result_storage": Path(workdir) / "prefect-results"}
    steps.check_training_record(options["result_storage"], prepared, config.model, config.train)
    args = (prepared, config.data, config.model, config.train, workdir, callbacks)
    state = steps.train.with_options(refresh_cache=force, **options)(*args, return_state=True)
    trained = state.result()
    cached = state.name == "Cached"
    if not Path(trained.best_checkpoint).exists():
        trained = steps.train.with_options(refresh_cache=True, **options)(*args)
        cached = False
    return trained, cached


def _summary_markdown(fraction: float, seed: int, run_id: str, auroc: dict, flat: dict) -> str:
    rows = [
        f"| {name} | {row['auroc']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}] | "
        f"{flat.get('silhouette/' + metric_key(name), float('nan')):.3f} |"
        if row.get("auroc") is not None
        else f"| {name} | undefined | |"
        for name, row in auroc["classes"].items()
    ]
    mean = auroc.get("mean")
    return "\n".join(
        [
            f"### Fine-tune {fraction_label(fraction)}, seed {seed}",
            f"MLflow run `{run_id}` · mean AUROC "
            + (
                f"{mean:.3f} [{auroc['mean_ci_low']:.3f}, {auroc['mean_ci_high']:.3f}]"
                if mean is not None
                else "undefined"
            )
            + f" · silhouette {flat.get('silhouette', float('nan')):.3f}",
            "",
            "| class | AUROC [95% CI] | silhouette |",
            "|---|---|---|",
            *rows,
        ]
    )


@flow(name="finetune", persist_result=True, result_serializer="json", log_prints=True)
def finetune(
    data_dir: str,
    fraction: Fraction,
    seed: int = 0,
    config: ChexflowConfig = ChexflowConfig(),
    workdir: str = ".chexflow",
    sweep_id: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Fine-tune a timm backbone on one fraction of the training patients.

    Prepares the fixed split and this fraction's patients, trains (resuming from the last
    checkpoint of the same configuration, or reusing a finished one), evaluates per-class
    AUROC, embeds the evaluation set, measures its clusters and logs it all to one MLflow
    run, whose checkpoint is registered as a model version.
    """
    logger = get_run_logger()
    workdir, data_dir = absolute(workdir), absolute(data_dir)
    # Bad input is refused before any MLflow run exists (nothing half-written).
    pipeline.check_workdir(Path(workdir))
    pipeline.check_model_input(config.model, config.data.image_size)
    tracker = make_tracker(config.tracking.experiment, Path(workdir))
    prepared = steps.prepare_data(data_dir, config.data, fraction, seed, workdir)
    n_images = prepared.n_train_images + prepared.n_val_images + prepared.n_eval_images
    pipeline.check_workdir(
        Path(workdir),
        config.data.cache_dir,
        pipeline.image_bytes(n_images, config.data.image_size),
    )
    train_fp = pipeline.training_fingerprint(prepared, config.model, config.train, seed)
    previous = mlflow_tasks.previous_attempts(tracker, train_fp)
    name = f"finetune-{fraction_label(fraction)}-seed{seed}"
    tags = {
        FRACTION_TAG: str(fraction),
        SEED_TAG: str(seed),
        EVAL_DIGEST_TAG: prepared.eval_digest,
        PREFECT_RUN_TAG: str(flow_run.id),
        TRAINING_FP_TAG: train_fp,
        "chexflow.model": config.model.name,
    }
    if sweep_id:
        tags[SWEEP_TAG] = sweep_id
    if previous:  # killed or failed attempts of this training: this run resumes them
        tags[PREVIOUS_ATTEMPTS_TAG] = ",".join(previous)
    run_id = mlflow_tasks.start_run(tracker, "finetune", name, tags, parent_run_id=sweep_id)
    logger.info(
        "MLflow run %s (%s), %d training images of %d patients",
        run_id,
        name,
        prepared.n_train_images,
        prepared.n_train_patients,
    )
    try:
        metric_logger = BatchedMetricLogger(tracker, run_id)
        trained, reused = _train_with_cache(prepared, config, workdir, force, [metric_logger])
        mlflow_tasks.flush_metrics(metric_logger)
        outcome = {"chexflow.reused_training": str(reused).lower()}
        if trained.resumed_from_epoch is not None and not reused:
            outcome["chexflow.resumed_from_epoch"] = str(trained.resumed_from_epoch)
        mlflow_tasks.set_tags(tracker, run_id, outcome)
        evaluated = steps.evaluate_and_embed(
            prepared, trained, config.data, config.model, config.train, workdir
        )
        analysed = steps.analyse(evaluated, config.analysis, name, seed)
        mlflow_tasks.log_finetune(tracker, run_id, config, prepared, trained, evaluated, analysed)
        version = None
        if config.tracking.register_models:
            version = mlflow_tasks.register_model(
                tracker, config.tracking.registered_model, run_id, fraction, seed
            )
        mlflow_tasks.finish_run(tracker, run_id)
    except BaseException as exc:
        mlflow_tasks.finish_run(tracker, run_id, failure=one_line(exc))
        raise
    publish_markdown(
        _summary_markdown(fraction, seed, run_id, evaluated.auroc, analysed.flat_metrics),
        key=f"finetune-{name}",
        description=f"Evaluation of {name}",
    )
    publish_run_links(tracker, run_id, f"mlflow-{name}", f"MLflow run of {name}")
    return {
        "run_id": run_id,
        "fraction": fraction,
        "seed": seed,
        "model_version": version,
        "val_auroc_mean": evaluated.auroc.get("mean"),
        "silhouette": analysed.flat_metrics.get("silhouette"),
        "reused_training": reused,
        "output_dir": evaluated.output_dir,
    }
