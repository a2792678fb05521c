"""Compare fine-tune runs from their MLflow records alone: no training data needed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from chexflow.comparison import check_comparable
from chexflow.config import ChexflowConfig, config_to_yaml
from chexflow.tracking import PREFECT_RUN_TAG, SWEEP_TAG, make_tracker
from flows._common import absolute, one_line, publish_markdown, publish_run_links
from tasks import compare as steps
from tasks import tracking as mlflow_tasks


@flow(name="compare", persist_result=True, result_serializer="json", log_prints=True)
def compare(
    sweep_id: str | None = None,
    run_ids: list[str] | None = None,
    model_name: str | None = None,
    aliases: list[str] | None = None,
    config: ChexflowConfig = ChexflowConfig(),
    workdir: str = ".chexflow",
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """Write the differential analysis of finished fine-tune runs.

    Select the runs by a sweep id, explicit MLflow run ids, or registry aliases of a model;
    download their metrics, embeddings and maps; refuse runs with different evaluation sets;
    write report.md, report.html and comparison.json to a comparison run in MLflow.
    """
    logger = get_run_logger()
    workdir = absolute(workdir)
    tracker = make_tracker(config.tracking.experiment, Path(workdir))
    selected = steps.select_runs(
        tracker,
        sweep_id,
        run_ids,
        model_name or config.tracking.registered_model if aliases else None,
        aliases,
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = Path(workdir) / "comparisons" / f"{stamp}-{flow_run.id or 'local'}"
    records = [
        steps.download_run(tracker, run_id, tags, artifact_uri, str(work / "runs"))
        for run_id, tags, artifact_uri in selected
    ]
    check_comparable(records)
    tags = {
        PREFECT_RUN_TAG: str(flow_run.id),
        "chexflow.compared_runs": ",".join(r.run_id for r in records),
    }
    if sweep_id:
        tags[SWEEP_TAG] = sweep_id
    run_id = mlflow_tasks.start_run(
        tracker, "comparison", f"comparison-{stamp}", tags, parent_run_id=parent_run_id or sweep_id
    )
    try:
        paths = steps.report(records, str(work / "report"))
        tracker.log_artifacts(run_id, work / "report", "report")
        tracker.log_text(run_id, config_to_yaml(config), "config.yaml")
        mlflow_tasks.finish_run(tracker, run_id)
    except BaseException as exc:
        mlflow_tasks.finish_run(tracker, run_id, failure=one_line(exc))
        raise
    logger.info("Report of %d runs: %s", len(records), paths["html"])
    publish_markdown(
        Path(paths["markdown"]).read_text(),
        f"comparison-{stamp}",
        "Differential analysis across label fractions",
    )
    publish_run_links(tracker, run_id, f"mlflow-comparison-{stamp}", "MLflow comparison run")
    return {"run_id": run_id, "runs": [r.run_id for r in records], **paths}
