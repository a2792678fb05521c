"""The tasks and the batched metric logger against a real MLflow store (SQLite), no flow:
tasks run through ``.fn``, as Prefect's testing guide does."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.states import Completed, Failed

from chexflow import records
from chexflow.config import ChexflowConfig
from chexflow.errors import ChexflowError
from chexflow.tracking import BatchedMetricLogger, Tracker, artifact_root
from tasks import tracking as mlflow_tasks


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Tracker:
    """One SQLite store for the module (creating one runs MLflow's migrations: seconds)."""
    workdir = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    return Tracker(uri, "tasks-test", artifact_location=artifact_root(workdir))


def test_a_run_starts_with_its_kind_and_owner_and_closes_failed_with_the_reason(
    tracker: Tracker,
) -> None:
    tags = records.sweep_tags("prefect-id", [0.01, 0.1], [0])
    run_id = mlflow_tasks.start_run.fn(tracker, "sweep", "sweep-0.01-0.1", tags)
    mlflow_tasks.log_config.fn(tracker, run_id, ChexflowConfig())
    mlflow_tasks.finish_run.fn(tracker, run_id, failure="DataError: no train.csv")
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags[records.KIND_TAG] == "sweep"
    assert run.data.tags[records.FRACTIONS_TAG] == "0.01,0.1"
    assert records.read_run_tags(run.data.tags).failure == "DataError: no train.csv"
    assert records.PROCESS_TAG in run.data.tags
    names = [a.path for a in tracker.client.list_artifacts(run_id)]
    assert names == [records.CONFIG_FILE]


def test_user_errors_are_not_retried_io_errors_are() -> None:
    assert not mlflow_tasks.retry_io_only(None, None, Failed(data=ChexflowError("bad")))
    assert mlflow_tasks.retry_io_only(None, None, Failed(data=ConnectionError("down")))
    assert mlflow_tasks.retry_io_only(None, None, Completed(data=1))


def test_the_metric_logger_keeps_metrics_through_an_outage(
    tracker: Tracker, tmp_path: Path
) -> None:
    run_id = mlflow_tasks.start_run.fn(tracker, "finetune", "f", {})
    unreachable = Tracker(f"sqlite:///{tmp_path}/missing/dir/mlflow.db", "tasks-test")
    logger = BatchedMetricLogger(unreachable, run_id, flush_every=2)
    for step in range(4):
        logger.on_step(step, 0, loss=1.0 / (step + 1), lr=0.1)
    logger.on_epoch_end(0, {"epoch": 0, "val_auroc_mean": 0.6, "note": "x"})
    with pytest.raises(Exception):  # noqa: B017 - whatever the store raises
        logger.flush(strict=True)
    logger.tracker = tracker  # the server is back
    mlflow_tasks.flush_metrics.fn(logger)
    history = tracker.client.get_metric_history(run_id, records.TRAIN_LOSS_STEP)
    assert [m.step for m in history] == [0, 1, 2, 3]
    assert [m.value for m in history] == [1.0, 0.5, 1 / 3, 0.25]
    (epoch,) = tracker.client.get_metric_history(run_id, records.epoch_key("val_auroc_mean"))
    assert (epoch.value, epoch.step) == (0.6, 0)
    assert not tracker.client.get_metric_history(run_id, records.epoch_key("epoch"))
