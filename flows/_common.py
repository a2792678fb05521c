"""Helpers shared by the flows."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.settings import (
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    get_current_settings,
    temporary_settings,
)

from chexflow.tracking import Tracker


def absolute(path: str) -> str:
    """Workdirs and data dirs are resolved once, so workers in other directories agree."""
    return str(Path(path).expanduser().resolve())


# The temporary local API's task-run recorder writes each task-run event in its own SQLite
# transaction (batch size 1). Those writes collide with the flow's own API writes: the API
# answers 503 (SQLITE_BUSY) and Prefect's client backs off ~2 s before retrying. A flow with
# three subflows of five tasks hit 22-24 such retries in 8 runs (median 5.6-6.7 s a run);
# writing the events in batches (flushed every 5 s and when the API stops) hit 0-2
# (0.41-0.47 s a run), with the same task runs recorded (bench/bench_orchestration.py).
EMBEDDED_SERVER_DEFAULTS = {
    "server.services.task_run_recorder.batch_size": 200,
    "server.services.task_run_recorder.read_batch_size": 200,
}


@contextmanager
def embedded_run_settings() -> Iterator[None]:
    """Flow-run settings for the embedded mode (no Prefect server configured).

    Flow-run heartbeats only serve a server that outlives the process (crash detection);
    the temporary local API dies with it. Each flow run's heartbeat thread is joined when
    the run ends and sleeps in 1 s steps, which cost ~1 s per flow run and subflow
    (bench/bench_orchestration.py: a 1% + 10% sweep is 5 flow runs). The temporary API
    started inside this context batches its task-run records (``EMBEDDED_SERVER_DEFAULTS``;
    a user's own ``PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_*`` variables win). With a
    server (``PREFECT_API_URL``) the settings stay as they are.
    """
    if get_current_settings().api.url:
        yield
        return
    with temporary_settings(
        updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}, set_defaults=EMBEDDED_SERVER_DEFAULTS
    ):
        yield


def one_line(exc: BaseException) -> str:
    """The first line of an exception, prefixed with its type when not a user error."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    from chexflow.errors import ChexflowError

    return text if isinstance(exc, ChexflowError) else f"{type(exc).__name__}: {text}"


def artifact_key(text: str) -> str:
    """Prefect artifact keys allow lower-case letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:100]


def publish_run_links(tracker: Tracker, run_id: str, key: str, description: str) -> None:
    """Link the MLflow run from the Prefect UI (only servers have a URL to link)."""
    url = tracker.run_url(run_id)
    if url:
        create_link_artifact(
            link=url,
            link_text=f"MLflow run {run_id}",
            key=artifact_key(key),
            description=description,
        )


def publish_markdown(markdown: str, key: str, description: str) -> None:
    """A small markdown artifact for the Prefect UI (kept under 100 kB)."""
    if len(markdown) > 100_000:
        markdown = markdown[:100_000] + "\n\n… (truncated; the full text is in MLflow)"
    create_markdown_artifact(markdown=markdown, key=artifact_key(key), description=description)
