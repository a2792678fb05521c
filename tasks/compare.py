"""Tasks of the comparison: select runs in MLflow, download their artifacts, write the report."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from chexflow.comparison import RunRecord, load_run_record
from chexflow.records import COMPARED_ARTIFACTS, EXPLORER_FILE
from chexflow.tracking import Tracker, select_compared_runs
from tasks.tracking import retry_io_only

RETRY = {
    "retries": 3,
    "retry_delay_seconds": [1, 3, 10],
    "retry_condition_fn": retry_io_only,  # a run id that does not exist is not retried
    "cache_policy": NO_CACHE,
}


@task(name="select-runs", **RETRY)
def select_runs(
    tracker: Tracker,
    sweep_id: str | None,
    run_ids: list[str] | None,
    model_name: str | None,
    aliases: list[str] | None,
) -> list[tuple[str, dict[str, str], str]]:
    """Run ids, tags and artifact roots: of a sweep, named explicitly, or behind registry
    aliases (``chexflow.tracking.select_compared_runs``)."""
    return select_compared_runs(tracker, sweep_id, run_ids, model_name, aliases)


@task(name="download-run", **RETRY)
def download_run(
    tracker: Tracker, run_id: str, tags: dict[str, str], artifact_uri: str, dst: str
) -> RunRecord:
    """Fetch a run's metrics, embeddings and maps from MLflow into ``dst``."""
    directory = tracker.download(artifact_uri, COMPARED_ARTIFACTS, Path(dst) / run_id)
    return load_run_record(run_id, tags, directory)


@task(name="write-explorer", cache_policy=NO_CACHE)
def explorer(records: list[RunRecord], out_dir: str, data_dir: str | None) -> str:
    """The interactive page of the aligned maps (``explorer.html`` beside the report)."""
    from chexflow.explorer import write_comparison_explorer

    page = Path(out_dir) / EXPLORER_FILE
    return str(write_comparison_explorer(records, page, Path(data_dir) if data_dir else None))


@task(name="write-report", cache_policy=NO_CACHE)
def report(records: list[RunRecord], out_dir: str) -> dict[str, str]:
    """The differential analysis as Markdown, HTML and JSON."""
    # Imported here (scikit-learn, SciPy, Matplotlib: ~3 s), not before a sweep's first step.
    from chexflow.report import write_report

    paths = write_report(records, Path(out_dir), explorer=EXPLORER_FILE)
    return {k: str(v) for k, v in paths.items()}
