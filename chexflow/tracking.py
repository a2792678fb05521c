"""MLflow: the only module that talks to the tracking server.

Every call names its run id explicitly: MLflow's "active run" is thread-local and Prefect
runs tasks on other threads. The layout (tags, metric keys, artifact paths, registry
names) is ``chexflow.records``; ``chexflow compare`` reads it back through it. Environment
defaults (MLflow's HTTP retries and timeout) are set by the entry point:
``chexflow.environment.apply_environment_defaults``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from chexflow.errors import ChexflowError
from chexflow.files import sqlite_url
from chexflow.procinfo import is_running, start_ticks
from chexflow.records import (
    COMPARED_KINDS,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    FAILURE_TAG,
    HOST_TAG,
    KIND_TAG,
    LEARNING_RATE,
    MAX_FAILURE_LENGTH,
    NAMESPACE_TAG,
    PARENT_TAG,
    PROCESS_TAG,
    TRAIN_LOSS_STEP,
    TRAINING_FP_TAG,
    epoch_key,
    read_run_tags,
)

log = logging.getLogger("chexflow.tracking")

_MAX_BATCH = 1000  # MLflow's per-request limit on metrics in log_batch.
_MAX_PARAM_LENGTH = 6000


def default_tracking_uri(workdir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else SQLite under the workdir."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return sqlite_url(Path(workdir) / "mlflow.db")


def artifact_root(workdir: Path) -> str:
    """Where a locally created experiment keeps its artifacts."""
    return (Path(workdir) / "mlartifacts").resolve().as_uri()


@dataclass(frozen=True)
class Tracker:
    """A tracking URI and experiment, resolved once and passed around by value."""

    tracking_uri: str
    experiment: str
    artifact_location: str | None = None

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri)

    def experiment_id(self) -> str:
        """The experiment's id, created on first use as a model-training experiment.

        The kind tag (``records.EXPERIMENT_KIND``) makes MLflow 3's UI open it on its runs;
        an experiment created without it (by another client) gets it here.
        """
        client = self.client
        try:
            found = client.get_experiment_by_name(self.experiment)
        except MlflowException as exc:
            raise ChexflowError(
                f"MLflow at {self.tracking_uri} is not reachable: {exc.message.splitlines()[0]}"
            ) from exc
        if found is not None:
            if EXPERIMENT_KIND_TAG not in found.tags:
                client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return found.experiment_id
        try:
            return client.create_experiment(
                self.experiment,
                artifact_location=self.artifact_location,
                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
            )
        except MlflowException:  # created concurrently by another worker
            found = client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    def start_run(
        self,
        kind: str,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> str:
        """Create a run and return its id; nothing becomes the "active" run."""
        all_tags = {KIND_TAG: kind, **process_tags(), **(tags or {})}
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        run = self.client.create_run(self.experiment_id(), run_name=run_name, tags=all_tags)
        return run.info.run_id

    @property
    def is_server(self) -> bool:
        """Whether the store is an MLflow server (which has a UI to link to)."""
        return self.tracking_uri.startswith(("http://", "https://"))

    def run_url(self, run_id: str) -> str | None:
        """A link to the run in the MLflow UI when the store is a server."""
        if not self.is_server:
            return None
        return f"{self.tracking_uri.rstrip('/')}/#/experiments/{self.experiment_id()}/runs/{run_id}"

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        items = [Param(k, str(v)[:_MAX_PARAM_LENGTH]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float | None], step: int = 0) -> None:
        """Log finite metrics in as few requests as possible; ``None`` values are skipped."""
        now = int(time.time() * 1000)
        items = [
            Metric(key, float(value), now, step)
            for key, value in metrics.items()
            if value is not None and value == value
        ]
        self.log_metric_objects(run_id, items)

    def log_metric_objects(self, run_id: str, items: list[Metric]) -> None:
        for start in range(0, len(items), _MAX_BATCH):
            self.client.log_batch(run_id, metrics=items[start : start + _MAX_BATCH])

    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str | None) -> None:
        self.client.log_artifacts(run_id, str(local_dir), artifact_path)

    def log_artifact(self, run_id: str, local_file: Path, artifact_path: str | None) -> None:
        self.client.log_artifact(run_id, str(local_file), artifact_path)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_training_subset(self, run_id: str, manifest: pd.DataFrame, name: str) -> None:
        """Record the exact training images as an MLflow dataset input."""
        dataset = mlflow.data.from_pandas(manifest, name=name)
        tag = InputTag(key="mlflow.data.context", value="training")
        self.client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), [tag])])

    def finish(self, run_id: str, failure: str | None = None) -> None:
        """Close a run: FINISHED, or FAILED with the one-line reason as a tag."""
        if failure is not None:
            self.set_tags(run_id, {FAILURE_TAG: failure[:MAX_FAILURE_LENGTH]})
            self.client.set_terminated(run_id, status="FAILED")
        else:
            self.client.set_terminated(run_id, status="FINISHED")

    def register(
        self,
        model_name: str,
        run_id: str,
        artifact_path: str,
        tags: Mapping[str, str],
        alias: str | None,
    ) -> str:
        """Register ``runs:/<run>/<artifact_path>`` as a new version; return the version."""
        client = self.client
        try:
            client.create_registered_model(model_name)
        except MlflowException as exc:
            if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(
                exc
            ):
                raise
        version = client.create_model_version(
            model_name, source=f"runs:/{run_id}/{artifact_path}", run_id=run_id, tags=dict(tags)
        )
        if alias:
            client.set_registered_model_alias(model_name, alias, version.version)
        return str(version.version)

    def find_runs(self, filter_string: str, max_results: int = 1000) -> list[Any]:
        """Runs of the experiment matching an MLflow filter, oldest first."""
        return self.client.search_runs(
            [self.experiment_id()],
            filter_string=filter_string,
            max_results=max_results,
            order_by=["attributes.start_time ASC"],
        )

    def download(self, artifact_uri: str, paths: Iterable[str], dst: Path) -> Path:
        """Copy ``paths`` under a run's ``artifact_uri`` into ``dst``.

        Takes the artifact root the caller already has (``run.info.artifact_uri``) instead of
        a run id: ``MlflowClient.download_artifacts`` looks the run up again for every path,
        which on SQLite cost ~0.1 s per call for a run with a few hundred metrics.
        """
        dst.mkdir(parents=True, exist_ok=True)
        for path in paths:
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"{artifact_uri.rstrip('/')}/{path}",
                dst_path=str(dst),
                tracking_uri=self.tracking_uri,
            )
        return dst


class BatchedMetricLogger:
    """Training callback that buffers per-step metrics and flushes them in batches.

    One ``log_batch`` per ``flush_every`` steps (and at each epoch end) keeps tracking
    well under 2% of step time even against a remote server. While MLflow is unreachable
    the metrics stay buffered and training goes on; the flow's final ``flush(strict=True)``
    sends them (and fails, so that Prefect retries, if it still cannot).
    """

    RETRY_AFTER_S = 10.0

    def __init__(self, tracker: Tracker, run_id: str, flush_every: int = 50) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.flush_every = flush_every
        self._pending: list[Metric] = []
        self._lock = threading.Lock()
        self.epochs_logged: set[int] = set()  # what the history need not log again
        self._quiet_until = 0.0

    def on_step(self, step: int, epoch: int, loss: float, lr: float) -> None:
        now = int(time.time() * 1000)
        with self._lock:
            self._pending += [
                Metric(TRAIN_LOSS_STEP, loss, now, step),
                Metric(LEARNING_RATE, lr, now, step),
            ]
            due = len(self._pending) >= 2 * self.flush_every
        if due:
            self.flush()

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
        now = int(time.time() * 1000)
        with self._lock:
            self._pending += [
                Metric(epoch_key(key), float(value), now, epoch)
                for key, value in metrics.items()
                if isinstance(value, int | float) and value == value and key != "epoch"
            ]
            self.epochs_logged.add(int(epoch))
        self.flush()

    def flush(self, strict: bool = False) -> None:
        """Send the buffer; on failure keep it and wait ``RETRY_AFTER_S`` before trying again.

        ``strict`` tries at once and raises on failure (nothing is dropped either way).
        """
        if not strict and time.monotonic() < self._quiet_until:
            return
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            self.tracker.log_metric_objects(self.run_id, pending)
        except Exception as exc:
            with self._lock:
                self._pending = pending + self._pending
            self._quiet_until = time.monotonic() + self.RETRY_AFTER_S
            if strict:
                raise
            log.warning(
                "MLflow unreachable (%s); %d metric values kept for the next flush",
                type(exc).__name__,
                len(pending),
            )


def _pid_namespace() -> str:
    """This boot and PID namespace: pids compare only within them (not across containers
    that share a hostname, nor across machines of the same name)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


def process_tags() -> dict[str, str]:
    """Which process owns a run: host, ``pid:start-ticks`` (a reused pid does not match)
    and the PID namespace those numbers belong to."""
    pid = os.getpid()
    return {
        HOST_TAG: socket.gethostname(),
        PROCESS_TAG: f"{pid}:{start_ticks(pid)}",
        NAMESPACE_TAG: _pid_namespace(),
    }


def _owner_is_gone(tags: Mapping[str, str]) -> bool:
    """Whether a run's process has certainly ended: same host, boot and PID namespace, and
    its pid:start-ticks no longer runs. Anything else cannot be checked from here."""
    namespace = _pid_namespace()
    if tags.get(HOST_TAG) != socket.gethostname() or not namespace:
        return False
    if tags.get(NAMESPACE_TAG) != namespace:
        return False
    pid, _, ticks = tags.get(PROCESS_TAG, "").partition(":")
    if not pid.isdigit() or not ticks.lstrip("-").isdigit() or int(ticks) < 0:
        return False
    return not is_running(int(pid), int(ticks))


def close_abandoned_runs(tracker: Tracker) -> list[str]:
    """Mark KILLED the RUNNING runs whose process on this host has died (kill -9, OOM, crash).

    Such a run is never closed by its own process; the next flow on the same host closes
    it, with the reason in ``chexflow.failure``. Runs of other hosts are left alone.
    """
    closed = []
    for run in tracker.find_runs(
        f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{socket.gethostname()}'"
    ):
        tags = run.data.tags
        if not _owner_is_gone(tags):
            continue
        pid = tags[PROCESS_TAG].partition(":")[0]
        reason = (
            f"abandoned: process {pid} on {tags[HOST_TAG]} ended without closing the run "
            "(killed or crashed); closed by the next chexflow flow on this host"
        )
        tracker.set_tags(run.info.run_id, {FAILURE_TAG: reason})
        tracker.client.set_terminated(run.info.run_id, status="KILLED")
        closed.append(run.info.run_id)
    return closed


def previous_attempts(tracker: Tracker, training_fingerprint: str) -> list[str]:
    """Runs of the same training that did not finish, since the last one that did."""
    runs = tracker.find_runs(f"tags.`{TRAINING_FP_TAG}` = '{training_fingerprint}'")
    attempts: list[str] = []
    for run in runs:  # oldest first
        if run.info.status == "FINISHED":
            attempts = []
        elif run.info.status in ("FAILED", "KILLED"):
            attempts.append(run.info.run_id)
    return attempts


def runs_of_sweep(tracker: Tracker, sweep_id: str) -> list[Any]:
    """Finished fine-tune (and initial-backbone reference) runs of the sweep ``sweep_id``."""
    runs = tracker.find_runs(
        f"tags.`{PARENT_TAG}` = '{sweep_id}' and attributes.status = 'FINISHED'"
    )
    return [r for r in runs if r.data.tags.get(KIND_TAG) in COMPARED_KINDS]


def runs_by_id(tracker: Tracker, run_ids: Iterable[str]) -> list[Any]:
    """The runs named, refusing ids that do not exist."""
    runs = []
    for run_id in run_ids:
        try:
            runs.append(tracker.client.get_run(run_id))
        except MlflowException as exc:
            raise ChexflowError(
                f"MLflow run {run_id} does not exist in {tracker.tracking_uri}"
            ) from exc
    return runs


def select_compared_runs(
    tracker: Tracker,
    sweep_id: str | None,
    run_ids: list[str] | None,
    model_name: str | None,
    aliases: list[str] | None,
) -> list[tuple[str, dict[str, str], str]]:
    """The runs a comparison reads: of a sweep, named explicitly, or behind registry aliases.

    Returns:
        ``(run id, tags, artifact URI)`` of each run.

    Raises:
        ChexflowError: not exactly one way of naming runs; a sweep without finished runs;
            a run id or alias that does not exist; runs that are not chexflow fine-tune or
            reference runs, or did not finish.
    """
    if sum(bool(x) for x in (sweep_id, run_ids, aliases)) != 1:
        raise ChexflowError("name exactly one of: a sweep id, run ids, or model aliases")
    if sweep_id:
        runs = runs_of_sweep(tracker, sweep_id)
        if not runs:
            raise ChexflowError(f"sweep {sweep_id} has no finished fine-tune runs in MLflow")
    elif run_ids:
        runs = runs_by_id(tracker, run_ids)
    else:
        if not model_name:
            raise ChexflowError("model aliases need a registered model name")
        versions = []
        for alias in aliases or []:
            try:
                versions.append(tracker.client.get_model_version_by_alias(model_name, alias))
            except Exception as exc:
                raise ChexflowError(f"model {model_name} has no alias {alias!r}") from exc
        runs = runs_by_id(tracker, [v.run_id for v in versions])
    foreign = [r.info.run_id for r in runs if not read_run_tags(r.data.tags).is_compared]
    if foreign:
        raise ChexflowError(f"runs {foreign} are not chexflow fine-tune or reference runs")
    unfinished = [r.info.run_id for r in runs if r.info.status != "FINISHED"]
    if unfinished:
        raise ChexflowError(f"runs {unfinished} did not finish; compare finished runs only")
    return [(r.info.run_id, dict(r.data.tags), r.info.artifact_uri) for r in runs]


def make_tracker(experiment: str, workdir: Path) -> Tracker:
    """The tracker for a workdir: ``MLFLOW_TRACKING_URI`` or SQLite + local artifacts."""
    uri = default_tracking_uri(workdir)
    location = artifact_root(workdir) if uri.startswith("sqlite:") else None
    return Tracker(tracking_uri=uri, experiment=experiment, artifact_location=location)
