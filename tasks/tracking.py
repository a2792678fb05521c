"""MLflow tasks. Tracking calls are I/O: they retry, and every one names its run id."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from chexflow import pipeline
from chexflow import tracking as mlflow_records
from chexflow.config import ChexflowConfig, config_to_yaml, flatten
from chexflow.data.labels import metric_key
from chexflow.errors import ChexflowError
from chexflow.tracking import FRACTION_TAG, SEED_TAG, BatchedMetricLogger, Tracker, model_alias


def retry_io_only(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry failures of I/O, not user errors: a ChexflowError would only fail again."""
    try:
        state.result()
    except ChexflowError:
        return False
    except BaseException:
        return True
    return True


RETRY = {
    "retries": 3,
    "retry_delay_seconds": [1, 3, 10],
    "retry_condition_fn": retry_io_only,
    "cache_policy": NO_CACHE,
}


@task(name="mlflow-start-run", **RETRY)
def start_run(
    tracker: Tracker,
    kind: str,
    run_name: str,
    tags: dict[str, str],
    parent_run_id: str | None = None,
) -> str:
    """Create an MLflow run and return its id."""
    return tracker.start_run(kind, run_name, tags, parent_run_id)


def evaluation_metrics(auroc: dict) -> dict[str, float | None]:
    """``val_auroc_mean`` and ``val_auroc/<class>`` (+ CI bounds) from an AUROC table."""
    metrics: dict[str, float | None] = {
        "val_auroc_mean": auroc.get("mean"),
        "val_auroc_mean_ci_low": auroc.get("mean_ci_low"),
        "val_auroc_mean_ci_high": auroc.get("mean_ci_high"),
    }
    for name, row in auroc["classes"].items():
        key = metric_key(name)
        metrics[f"val_auroc/{key}"] = row.get("auroc")
        metrics[f"val_auroc_ci_low/{key}"] = row.get("ci_low")
        metrics[f"val_auroc_ci_high/{key}"] = row.get("ci_high")
    return metrics


def _log_evaluation(
    tracker: Tracker,
    run_id: str,
    config: ChexflowConfig,
    prepared: pipeline.PreparedData,
    evaluated: pipeline.Evaluated,
    analysed: pipeline.Analysed,
    extra_params: dict[str, str],
) -> None:
    """What every embedded model logs: params, evaluation and cluster metrics, artifacts."""
    tracker.log_params(
        run_id,
        {
            **flatten(config),
            "fraction": str(prepared.fraction),
            "seed": str(prepared.seed),
            "data_fingerprint": prepared.data_fingerprint,
            "n_train_images": str(prepared.n_train_images),
            "n_train_patients": str(prepared.n_train_patients),
            "n_eval_images": str(prepared.n_eval_images),
            **extra_params,
        },
    )
    tracker.log_metrics(run_id, {**evaluation_metrics(evaluated.auroc), **analysed.flat_metrics})
    analysis_dir = Path(analysed.output_dir)
    tracker.log_artifacts(run_id, Path(evaluated.embeddings_dir), "embeddings")
    for sub in ("plots", "metrics", "maps"):
        if (analysis_dir / sub).is_dir():
            tracker.log_artifacts(run_id, analysis_dir / sub, sub)
    tracker.log_text(run_id, json.dumps(evaluated.auroc, indent=2), "metrics/evaluation.json")
    tracker.log_text(run_id, config_to_yaml(config), "config.yaml")


@task(name="mlflow-log-finetune", **RETRY)
def log_finetune(
    tracker: Tracker,
    run_id: str,
    config: ChexflowConfig,
    prepared: pipeline.PreparedData,
    trained: pipeline.TrainedModel,
    evaluated: pipeline.Evaluated,
    analysed: pipeline.Analysed,
) -> None:
    """Evaluation as above, plus the training history, subset, patients and checkpoints."""
    _log_evaluation(
        tracker,
        run_id,
        config,
        prepared,
        evaluated,
        analysed,
        {"training_fingerprint": trained.fingerprint},
    )
    for row in trained.history:
        numeric = {
            f"epoch/{k}": v for k, v in row.items() if k != "epoch" and isinstance(v, int | float)
        }
        tracker.log_metrics(run_id, numeric, step=int(row.get("epoch", 0)))
    tracker.log_metrics(run_id, {"best_epoch": trained.best_epoch})
    manifest = prepared.frame("train")[["path", "patient", "study", "view"]]
    tracker.log_training_subset(run_id, manifest, name=f"train-{prepared.data_fingerprint}")
    tracker.log_artifact(run_id, Path(prepared.directory) / "patients.txt", "data")
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "checkpoints"
        staged.mkdir()
        for name in ("best.pt", "best.json", "last.json"):
            source = Path(trained.checkpoint_dir) / name
            if source.exists():
                shutil.copy2(source, staged / name)
        tracker.log_artifacts(run_id, staged, "checkpoints")


@task(name="mlflow-log-reference", **RETRY)
def log_reference(
    tracker: Tracker,
    run_id: str,
    config: ChexflowConfig,
    prepared: pipeline.PreparedData,
    evaluated: pipeline.Evaluated,
    analysed: pipeline.Analysed,
) -> None:
    """The initial backbone's evaluation and embeddings: no training, no checkpoint."""
    _log_evaluation(tracker, run_id, config, prepared, evaluated, analysed, {})


@task(name="mlflow-register-model", **RETRY)
def register_model(
    tracker: Tracker, model_name: str, run_id: str, fraction: float, seed: int
) -> str:
    """Register the run's best checkpoint, tagged and aliased by fraction and seed."""
    return tracker.register(
        model_name,
        run_id,
        "checkpoints",
        tags={FRACTION_TAG: str(fraction), SEED_TAG: str(seed), "run_id": run_id},
        alias=model_alias(fraction, seed),
    )


@task(name="mlflow-set-tags", **RETRY)
def set_tags(tracker: Tracker, run_id: str, tags: dict[str, str]) -> None:
    """Add tags to a run (idempotent: a retry writes the same values)."""
    tracker.set_tags(run_id, tags)


@task(name="mlflow-flush-metrics", **RETRY)
def flush_metrics(metric_logger: BatchedMetricLogger) -> None:
    """Send the training metrics still buffered (MLflow was unreachable during training)."""
    metric_logger.flush(strict=True)


@task(name="mlflow-close-abandoned-runs", **RETRY)
def close_abandoned_runs(tracker: Tracker) -> list[str]:
    """Mark KILLED the RUNNING runs of dead processes on this host; return their ids."""
    return mlflow_records.close_abandoned_runs(tracker)


@task(name="mlflow-previous-attempts", **RETRY)
def previous_attempts(tracker: Tracker, training_fingerprint: str) -> list[str]:
    """Close abandoned runs on this host, then list the unfinished runs of this training
    since its last finished one: the attempts that the new run resumes."""
    mlflow_records.close_abandoned_runs(tracker)
    return mlflow_records.previous_attempts(tracker, training_fingerprint)


@task(name="mlflow-finish-run", **RETRY)
def finish_run(tracker: Tracker, run_id: str, failure: str | None = None) -> None:
    """Mark the run FINISHED, or FAILED with the reason as a tag."""
    tracker.finish(run_id, failure)
