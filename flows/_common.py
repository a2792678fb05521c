"""Helpers shared by the flows."""

from __future__ import annotations

import re
from pathlib import Path

from prefect.artifacts import create_link_artifact, create_markdown_artifact

from chexflow.tracking import Tracker


def absolute(path: str) -> str:
    """Workdirs and data dirs are resolved once, so workers in other directories agree."""
    return str(Path(path).expanduser().resolve())


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
