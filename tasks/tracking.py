"""MLflow tasks. Tracking calls are I/O: they retry, and every one names its run id."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from chexflow import pipeline, records
from chexflow import tracking as run_store
from chexflow.config import ChexflowConfig, config_to_yaml, flatten
from chexflow.errors import ChexflowError
from chexflow.tracking import BatchedMetricLogger, Tracker

# HTTP statuses worth another try: the server is busy or down, not refusing the request.
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    """Whether a failure can succeed on retry: a connection error or timeout, an HTTP 5xx
    (or 408/429), a database lock. A validation error (an MLflow ``INVALID_PARAMETER_VALUE``
    or ``RESOURCE_ALREADY_EXISTS``, a 4xx) or a user error (``ChexflowError``) would only
    fail again, after the delays. The causes of a wrapped error count too."""
    import sqlite3

    from mlflow.exceptions import MlflowException

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ChexflowError):
            return False
        if isinstance(current, ConnectionError | TimeoutError):
            return True
        if isinstance(current, MlflowException):
            return current.get_http_status_code() in _TRANSIENT_STATUS
        response = getattr(current, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status in _TRANSIENT_STATUS
        name = type(current).__name__
        if name in ("ConnectError", "ConnectTimeout", "ReadTimeout", "RemoteProtocolError"):
            return True  # httpx / requests / urllib3 transport errors
        if isinstance(current, sqlite3.OperationalError) or name == "OperationalError":
            text = str(current).lower()
            if "locked" in text or "busy" in text:
                return True
        current = current.__cause__ or current.__context__
    return False


def retry_transient_only(_task: Any, _task_run: Any, state: Any) -> bool:
    """Prefect's ``retry_condition_fn``: retry only what ``is_transient`` calls transient."""
    try:
        state.result()
    except BaseException as exc:
        return is_transient(exc)
    return True


retry_io_only = retry_transient_only  # the earlier name


RETRY = {
    "retries": 3,
    "retry_delay_seconds": [1, 3, 10],
    "retry_condition_fn": retry_transient_only,
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


def _log_evaluation(
    tracker: Tracker,
    run_id: str,
    config: ChexflowConfig,
    prepared: pipeline.PreparedData,
    evaluated: pipeline.Evaluated,
    analysed: pipeline.Analysed,
    training_fingerprint: str | None,
) -> None:
    """What every embedded model logs: params, evaluation and cluster metrics, artifacts."""
    params = records.embedding_params(
        flatten(config),
        prepared.fraction,
        prepared.seed,
        prepared.data_fingerprint,
        prepared.n_train_images,
        prepared.n_train_patients,
        prepared.n_eval_images,
        training_fingerprint,
    )
    tracker.log_params(run_id, params)
    metrics = {**records.evaluation_metrics(evaluated.auroc), **analysed.flat_metrics}
    tracker.log_metrics(run_id, metrics)
    analysis_dir = Path(analysed.output_dir)
    tracker.log_artifacts(run_id, Path(evaluated.embeddings_dir), records.EMBEDDINGS_DIR)
    for sub in records.ANALYSIS_DIRS:
        if (analysis_dir / sub).is_dir():
            tracker.log_artifacts(run_id, analysis_dir / sub, sub)
    evaluation = json.dumps(evaluated.auroc, indent=2)
    tracker.log_text(run_id, evaluation, f"{records.METRICS_DIR}/{records.EVALUATION_FILE}")
    tracker.log_text(run_id, config_to_yaml(config), records.CONFIG_FILE)


@task(name="mlflow-log-finetune", **RETRY)
def log_finetune(
    tracker: Tracker,
    run_id: str,
    config: ChexflowConfig,
    prepared: pipeline.PreparedData,
    trained: pipeline.TrainedModel,
    evaluated: pipeline.Evaluated,
    analysed: pipeline.Analysed,
    epochs_logged: list[int] | None = None,
) -> None:
    """Evaluation as above, plus the training history, subset, patients and checkpoints.

    Epochs the live metric logger sent already (``epochs_logged``) are not sent again:
    the history fills in only those of a reused training or of an earlier attempt.
    """
    _log_evaluation(
        tracker,
        run_id,
        config,
        prepared,
        evaluated,
        analysed,
        trained.fingerprint,
    )
    live = set(epochs_logged or ())
    for row in trained.history:
        step = int(row.get("epoch", 0))
        if step not in live:
            tracker.log_metrics(run_id, records.epoch_metrics(row), step=step)
    tracker.log_metrics(run_id, {records.BEST_EPOCH: trained.best_epoch})
    manifest = prepared.frame("train")[["path", "patient", "study", "view"]]
    tracker.log_training_subset(run_id, manifest, name=f"train-{prepared.data_fingerprint}")
    tracker.log_artifact(run_id, Path(prepared.directory) / "patients.txt", records.DATA_DIR)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / records.CHECKPOINTS_DIR
        staged.mkdir()
        for name in records.CHECKPOINT_FILES:
            source = Path(trained.checkpoint_dir) / name
            if source.exists():
                shutil.copy2(source, staged / name)
        tracker.log_artifacts(run_id, staged, records.CHECKPOINTS_DIR)


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
    _log_evaluation(tracker, run_id, config, prepared, evaluated, analysed, None)


@task(name="mlflow-register-model", **RETRY)
def register_model(
    tracker: Tracker, model_name: str, run_id: str, fraction: float, seed: int
) -> str:
    """Register the run's best checkpoint, tagged and aliased by fraction and seed."""
    return tracker.register(
        model_name,
        run_id,
        records.CHECKPOINTS_DIR,
        tags=records.model_version_tags(fraction, seed, run_id),
        alias=records.model_alias(fraction, seed),
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
    return run_store.close_abandoned_runs(tracker)


@task(name="mlflow-previous-attempts", **RETRY)
def previous_attempts(tracker: Tracker, training_fingerprint: str) -> list[str]:
    """Close abandoned runs on this host, then list the unfinished runs of this training
    since its last finished one: the attempts that the new run resumes."""
    run_store.close_abandoned_runs(tracker)
    return run_store.previous_attempts(tracker, training_fingerprint)


@task(name="mlflow-log-config", **RETRY)
def log_config(tracker: Tracker, run_id: str, config: ChexflowConfig) -> None:
    """The run's configuration as ``config.yaml``."""
    tracker.log_text(run_id, config_to_yaml(config), records.CONFIG_FILE)


@task(name="mlflow-log-report", **RETRY)
def log_report(tracker: Tracker, run_id: str, report_dir: str, config: ChexflowConfig) -> None:
    """A comparison's report files under ``report/`` and its configuration; its headline
    contrasts as metrics and its conclusion, with links to report.html, as the run's
    description (what the MLflow UI shows first)."""
    report = Path(report_dir)
    tracker.log_artifacts(run_id, report, records.REPORT_DIR)
    tracker.log_text(run_id, config_to_yaml(config), records.CONFIG_FILE)
    conclusion = json.loads((report / "comparison.json").read_text()).get("conclusion") or {}
    tracker.log_metrics(run_id, records.contrast_metrics(conclusion))
    markdown = (report / "report.md").read_text()
    note = records.comparison_note(
        _section(markdown, "Conclusion"),
        tracker.experiment_id(),
        run_id,
        str((report / "report.html").resolve()),
    )
    tracker.set_tags(run_id, {records.NOTE_TAG: note})


def _section(markdown: str, title: str) -> str:
    """The body of the ``## <title>`` section of a Markdown text ("" when absent)."""
    lines, inside = [], False
    for line in markdown.splitlines():
        if line.startswith("## "):
            if inside:
                break
            inside = line[3:].strip() == title
        elif inside:
            lines.append(line)
    return "\n".join(lines).strip()


@task(name="mlflow-run-url", **RETRY)
def run_url(tracker: Tracker, run_id: str) -> str | None:
    """The run's page in the MLflow UI (None without a server)."""
    return tracker.run_url(run_id)


@task(name="mlflow-finish-run", **RETRY)
def finish_run(tracker: Tracker, run_id: str, failure: str | None = None) -> None:
    """Mark the run FINISHED, or FAILED with the reason as a tag."""
    tracker.finish(run_id, failure)
