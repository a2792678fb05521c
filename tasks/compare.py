"""Tasks of the comparison: select runs in MLflow, download their artifacts, write the report."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from chexflow.comparison import RunRecord, load_run_record
from chexflow.errors import ChexflowError
from chexflow.records import COMPARED_ARTIFACTS, EXPLORER_FILE, read_run_tags
from chexflow.report import write_report
from chexflow.tracking import Tracker, runs_by_id, runs_of_sweep
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
    aliases."""
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
    return {k: str(v) for k, v in write_report(records, Path(out_dir)).items()}
