"""Sweep label fractions × seeds under one parent MLflow run, then compare them."""

from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import AfterValidator, Field

from chexflow import records, runtime
from chexflow.config import ChexflowConfig, Seed, check_fractions, check_seeds
from chexflow.results import FinetuneResult, SweepResult
from chexflow.tracking import make_tracker
from flows._common import absolute, check_inputs, closing_run
from flows.compare import compare
from flows.device import TurnOrder
from flows.dispatch import run_queued
from flows.finetune import finetune
from flows.pretrain import pretrained_start
from flows.reference import reference
from tasks import tracking as mlflow_tasks

# Bounds on the items and uniqueItems: the JSON schema (Prefect's run form, and the server's
# check of a submitted run) carries what check_fractions / check_seeds enforce in Python.
FractionItem = Annotated[float, Field(gt=0, le=1)]
Fractions = Annotated[
    list[FractionItem],
    Field(
        min_length=1,
        description="Shares of training patients, each in (0, 1], each once.",
        json_schema_extra={"uniqueItems": True},
    ),
    AfterValidator(check_fractions),
]
Seeds = Annotated[
    list[Seed],
    Field(
        min_length=1,
        description="Seeds of the fine-tunes, each once.",
        json_schema_extra={"uniqueItems": True},
    ),
    AfterValidator(check_seeds),
]


def run_name() -> str:
    """``sweep-1pct-10pct-seeds0``: the fractions and seeds a sweep runs."""
    parameters = flow_run.parameters
    fractions = "-".join(records.fraction_label(f) for f in parameters.get("fractions", []))
    seeds = ",".join(str(s) for s in parameters.get("seeds", [0]))
    return f"sweep-{fractions}-seeds{seeds}"


@task(name="dispatch-finetune", cache_policy=NO_CACHE)
def dispatch(deployment: str, parameters: dict[str, Any]) -> FinetuneResult:
    """Run one fine-tune as a flow run of ``deployment`` on its work pool and wait for it.

    The run is named for its fraction and seed from the start, and reads "Queued" (not
    "Late") while it waits for a free worker (``flows.dispatch``).
    """
    name = records.finetune_run_name(parameters["fraction"], parameters["seed"])
    run = run_queued(deployment, parameters, name)
    if not run.state or not run.state.is_completed():
        raise RuntimeError(f"flow run {run.name} ended {run.state.name if run.state else '?'}")
    return FinetuneResult.model_validate(run.state.result())


def run_local(
    grid: list[tuple[float, int]],
    data_dir: str,
    config: ChexflowConfig,
    workdir: str,
    sweep_id: str,
    force: bool,
    overlap_analysis: bool | None,
) -> list[FinetuneResult]:
    """The fine-tunes of ``grid`` in this process, in order.

    With ``overlap_analysis`` two run at once: one holds the device (training, then
    embedding the evaluation set; ``flows.device``, in the grid's order) while the other analyses
    its embeddings on the CPU, so the device does not wait for each run's t-SNE maps,
    metrics and plots (bench/bench_overlap.py measures the share of the sweep's wall time
    in which nothing trains). Without it they run one after another. None (automatic):
    overlap when the fine-tunes train on CUDA; on a CPU the training and the analysis share
    the same cores, and overlapping them was no faster (docs/BENCHMARKS.md, section 12).
    """
    if overlap_analysis is None:
        overlap_analysis = runtime.device_type(config.train.device) == "cuda"
    if not overlap_analysis or len(grid) == 1:
        return [
            finetune(data_dir, f, s, config, workdir, sweep_id=sweep_id, force=force)
            for f, s in grid
        ]
    # Plain threads, each with a copy of this flow run's context: the fine-tunes stay
    # subflows of the sweep and log as themselves (a wrapping task would own their logs).
    order = TurnOrder()
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="chexflow-finetune") as pool:
        futures = [
            pool.submit(
                contextvars.copy_context().run,
                order.run,
                index,
                finetune,
                data_dir,
                f,
                s,
                config,
                workdir,
                sweep_id=sweep_id,
                force=force,
            )
            for index, (f, s) in enumerate(grid)
        ]
        try:
            return [future.result() for future in futures]
        except BaseException:
            pool.shutdown(cancel_futures=True)  # as in series: no new fine-tune after a failure
            raise


@flow(
    name="sweep", flow_run_name=run_name, persist_result=True, result_serializer="json",
    log_prints=True,
)  # fmt: skip
def sweep(
    data_dir: str,
    fractions: Fractions = [0.01, 0.1],  # noqa: B006 - copied by pydantic validation
    seeds: Seeds = [0],  # noqa: B006
    config: ChexflowConfig = ChexflowConfig(),
    workdir: str = ".chexflow",
    dispatch_to: Literal["local", "deployment"] = "local",
    deployment: str = "finetune/chexflow-finetune",
    run_compare: bool = True,
    include_reference: bool = True,
    force: bool = False,
    overlap_analysis: Annotated[
        bool | None,
        Field(description="Train the next fine-tune while the last is analysed; null: on CUDA."),
    ] = None,
) -> SweepResult:
    """Fine-tune every fraction × seed, then write their comparison.

    With ``dispatch_to=deployment`` each fine-tune becomes a flow run of the named
    deployment, so GPU workers of its work pool run the fractions in parallel. With
    ``include_reference`` the initial backbone's embeddings join the comparison as "0%".
    With ``overlap_analysis`` (local fine-tunes; default: on CUDA) the next fine-tune
    trains while the last one's embeddings are analysed (``run_local``).
    """
    workdir, data_dir = absolute(workdir), absolute(data_dir)
    # every fraction x seed at once: the fine-tunes it starts find themselves checked
    check_inputs(config, workdir, data_dir, fractions, seeds)
    tracker = make_tracker(config.tracking.experiment, Path(workdir))
    mlflow_tasks.close_abandoned_runs(tracker)
    sweep_id = mlflow_tasks.start_run(
        tracker,
        "sweep",
        records.sweep_run_name(fractions),
        records.sweep_tags(str(flow_run.id), fractions, seeds),
    )
    get_run_logger().info("Sweep %s: fractions %s × seeds %s", sweep_id, fractions, seeds)
    with closing_run(tracker, sweep_id):
        # model.init_from_pretraining: every fraction and the 0% reference start from one
        # pretrained backbone (run or reused here), recorded as each run's chexflow.init.
        config, pretraining = pretrained_start(data_dir, config, workdir, force=force)
        mlflow_tasks.log_config(tracker, sweep_id, config)
        grid = [(f, s) for f in fractions for s in seeds]
        if dispatch_to == "local":
            children = run_local(grid, data_dir, config, workdir, sweep_id, force, overlap_analysis)
        else:
            futures = [
                dispatch.submit(
                    deployment,
                    {
                        "data_dir": data_dir,
                        "fraction": f,
                        "seed": s,
                        "config": config.model_dump(mode="json"),
                        "workdir": workdir,
                        "sweep_id": sweep_id,
                        "force": force,
                    },
                )
                for f, s in grid
            ]
            children = [future.result() for future in futures]
        baseline = reference(data_dir, config, workdir, sweep_id) if include_reference else None
        comparison = None
        if run_compare:
            compared = [c.run_id for c in children] + ([baseline.run_id] if baseline else [])
            comparison = compare(
                run_ids=compared,
                config=config,
                workdir=workdir,
                parent_run_id=sweep_id,
                data_dir=data_dir,
            )
    return SweepResult(
        sweep_id=sweep_id,
        runs=children,
        reference=baseline,
        comparison=comparison,
        pretraining=pretraining,
    )
