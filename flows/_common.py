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


@contextmanager
def embedded_run_settings() -> Iterator[None]:
    """Flow-run settings for the embedded mode (no Prefect server configured).

    Flow-run heartbeats only serve a server that outlives the process (crash detection);
    the temporary local API dies with it. Each flow run's heartbeat thread is joined when
    the run ends and sleeps in 1 s steps, which cost ~1 s per flow run and subflow
    (bench/bench_orchestration.py: a 1% + 10% sweep is 5 flow runs). With a server
    (``PREFECT_API_URL``) the settings stay as they are.
    """
    if get_current_settings().api.url:
        yield
        return
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
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
