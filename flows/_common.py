"""Helpers shared by the flows: paths, the run-closing context, the input guards, UI artifacts."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from prefect.artifacts import create_link_artifact, create_markdown_artifact

from chexflow import pipeline
from chexflow.config import ChexflowConfig
from chexflow.errors import ChexflowError
from chexflow.preflight import RunInputs, check_run_inputs
from chexflow.tracking import Tracker
from tasks import tracking as mlflow_tasks


def absolute(path: str) -> str:
    """Workdirs and data dirs are resolved once, so workers in other directories agree."""
    return str(Path(path).expanduser().resolve())


def one_line(exc: BaseException) -> str:
    """The first line of an exception, prefixed with its type when not a user error."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if isinstance(exc, ChexflowError) else f"{type(exc).__name__}: {text}"


def check_inputs(
    config: ChexflowConfig,
    workdir: str,
    data_dir: str | None = None,
    fractions: Sequence[float] = (),
    seeds: Sequence[int] = (0,),
) -> RunInputs | None:
    """The input guards of a run, before any MLflow run exists: a writable workdir with
    room, then everything the run reads (``preflight.check_run_inputs``: the config, the
    model and its checkpoint, the data, every image); without ``data_dir`` only the model.

    Called at each entry (the CLI, and every flow, which a deployment may start directly);
    a sweep checks all its fractions and seeds at once, and its subflows, covered by that
    check, do not check again. Returns what was checked (its ``tags()`` go on the run).
    """
    pipeline.check_workdir(Path(workdir))
    if data_dir is None:
        pipeline.check_model_input(config.model, config.data.image_size)
        return None
    cache = pipeline.image_cache_dir(config.data, Path(workdir))
    return check_run_inputs(config, data_dir, fractions, seeds, cache_dir=cache)


@contextmanager
def closing_run(tracker: Tracker, run_id: str) -> Iterator[None]:
    """Close the MLflow run when the block ends: FINISHED, or FAILED with the one-line
    reason (``chexflow.failure``) when it raises; the exception goes on."""
    try:
        yield
        mlflow_tasks.finish_run(tracker, run_id)
    except BaseException as exc:
        mlflow_tasks.finish_run(tracker, run_id, failure=one_line(exc))
        raise


def artifact_key(text: str) -> str:
    """Prefect artifact keys allow lower-case letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:100]


def publish_run_links(tracker: Tracker, run_id: str, key: str, description: str) -> None:
    """Link the MLflow run from the Prefect UI (only servers have a URL to link)."""
    url = mlflow_tasks.run_url(tracker, run_id) if tracker.is_server else None
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
