"""Compare fine-tune runs from their MLflow records alone: no training data needed."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from chexflow import records
from chexflow.comparison import check_comparable
from chexflow.config import ChexflowConfig
from chexflow.results import ComparisonResult
from chexflow.tracking import make_tracker
from flows._common import absolute, closing_run, publish_markdown, publish_run_links
from tasks import compare as steps
from tasks import tracking as mlflow_tasks


def run_name() -> str:
    """``compare-sweep-<id>``, ``compare-3-runs`` or ``compare-aliases-a-b``: what it compares."""
    parameters = flow_run.parameters
    if parameters.get("run_ids"):
        return f"compare-{len(parameters['run_ids'])}-runs"
    if parameters.get("aliases"):
        return "compare-aliases-" + "-".join(parameters["aliases"])
    sweep_id = parameters.get("sweep_id") or parameters.get("parent_run_id")
    return f"compare-sweep-{sweep_id[:8]}" if sweep_id else "compare"


@flow(
    name="compare", flow_run_name=run_name, persist_result=True, result_serializer="json",
    log_prints=True,
)  # fmt: skip
def compare(
    sweep_id: str | None = None,
    run_ids: list[str] | None = None,
    model_name: str | None = None,
    aliases: list[str] | None = None,
    config: ChexflowConfig = ChexflowConfig(),
    workdir: str = ".chexflow",
    parent_run_id: str | None = None,
    data_dir: str | None = None,
) -> ComparisonResult:
    """Write the differential analysis of finished fine-tune runs.

    Select the runs by a sweep id, explicit MLflow run ids, or registry aliases of a model;
    download their metrics, embeddings and maps; refuse runs with different evaluation sets;
    write report.md, report.html, comparison.json and the interactive explorer.html to a
    comparison run in MLflow. ``data_dir``, the runs' dataset folder, gives the explorer its
    radiograph thumbnails and full labels (without it: positives only, no thumbnails).
    """
    workdir = absolute(workdir)
    tracker = make_tracker(config.tracking.experiment, Path(workdir))
    registered = model_name or config.tracking.registered_model if aliases else None
    selected = steps.select_runs(tracker, sweep_id, run_ids, registered, aliases)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = Path(workdir) / "comparisons" / f"{stamp}-{flow_run.id or 'local'}"
    compared = [
        steps.download_run(tracker, run_id, tags, artifact_uri, str(work / "runs"))
        for run_id, tags, artifact_uri in selected
    ]
    check_comparable(compared)
    tags = records.comparison_tags(str(flow_run.id), [r.run_id for r in compared], sweep_id)
    run_id = mlflow_tasks.start_run(
        tracker, "comparison", f"comparison-{stamp}", tags, parent_run_id=parent_run_id or sweep_id
    )
    with closing_run(tracker, run_id):
        paths = steps.report(compared, str(work / records.REPORT_DIR))
        steps.explorer(
            compared, str(work / records.REPORT_DIR), absolute(data_dir) if data_dir else None
        )
        mlflow_tasks.log_report(tracker, run_id, str(work / records.REPORT_DIR), config)
    get_run_logger().info("Report of %d runs: %s", len(compared), paths["html"])
    publish_markdown(
        Path(paths["markdown"]).read_text(),
        f"comparison-{stamp}",
        "Differential analysis across label fractions",
    )
    publish_run_links(tracker, run_id, f"mlflow-comparison-{stamp}", "MLflow comparison run")
    return ComparisonResult(
        run_id=run_id,
        runs=[r.run_id for r in compared],
        markdown=paths["markdown"],
        html=paths["html"],
        comparison_json=paths["json"],
    )
