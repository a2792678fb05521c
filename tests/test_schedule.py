"""A schedule produces a run that a process worker of `chexflow up` executes into MLflow.

The stack is started as a user does (`chexflow up`, one CPU worker, no GPU worker); a
deployment of the reference flow (the cheapest flow that writes an MLflow run) gets an
interval schedule anchored 30 s ahead, and the server turns the schedule into runs with
the same call its scheduler service makes (``POST /deployments/{id}/schedule``; the
service itself wakes once a minute). The test then waits for the worker to run it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from deployments.stack.network import free_port

CHEXFLOW = str(Path(sys.executable).parent / "chexflow")
TINY_CONFIG = {
    "data": {"image_size": 32},
    "model": {"name": "test_resnet"},
    "analysis": {"bootstrap": 20, "kmeans_seeds": 2, "max_faithfulness_points": 300},
}
AHEAD_S = 30


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return subprocess.run([CHEXFLOW, *args], capture_output=True, text=True, timeout=timeout,
                          env=clean, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="chexflow-schedule-"))
    work = root / "work"
    ports = (free_port(), free_port())
    result = _cli("up", "--workdir", str(work), "--gpu-workers", "0", "--cpu-workers", "1",
                  "--prefect-port", str(ports[0]), "--mlflow-port", str(ports[1]))  # fmt: skip
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        yield {"work": work, "root": root, "output": result.stdout,
               "api": f"http://127.0.0.1:{ports[0]}/api",
               "mlflow": f"http://127.0.0.1:{ports[1]}"}  # fmt: skip
    finally:
        _cli("down", "--workdir", str(work))
        shutil.rmtree(root, ignore_errors=True)


async def _schedule_reference(data: Path, work: Path, start: datetime) -> Any:
    from prefect import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import IntervalSchedule
    from prefect.utilities.callables import parameter_schema

    from flows.reference import reference

    async with get_client() as client:
        flow_id = await client.create_flow(reference)
        deployment_id = await client.create_deployment(
            flow_id,
            "scheduled-reference",
            entrypoint="flows/reference.py:reference",
            work_pool_name="chexflow-cpu",
            parameters={"data_dir": str(data), "workdir": str(work), "config": TINY_CONFIG},
            parameter_openapi_schema=parameter_schema(reference).model_dump(),
            enforce_parameter_schema=True,
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {
                "directory": "{{ $CHEXFLOW_REPO }}"}}],
            schedules=[DeploymentScheduleCreate(
                # every 30 s from now: the server's first run is at most a minute ahead
                schedule=IntervalSchedule(interval=timedelta(seconds=AHEAD_S),
                                          anchor_date=start),
                active=True)],
        )  # fmt: skip
        response = await client._client.post(
            f"/deployments/{deployment_id}/schedule", json={"max_runs": 1}
        )
        response.raise_for_status()
        return deployment_id


async def _runs_of(deployment_id: Any) -> list[Any]:
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    async with get_client() as client:
        return await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )


@pytest.mark.slow
def test_a_scheduled_run_is_executed_by_a_worker_and_lands_in_mlflow(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    from mlflow import MlflowClient
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from chexflow.data.synthetic import write_synthetic

    work = stack["work"]
    assert "workers online after" in stack["output"], stack["output"]
    assert f"chexflow down --workdir {work}" in stack["output"]
    data = write_synthetic(stack["root"] / "data" / "CheXpert-v1.0-small", patients=240,
                           image_size=32, seed=0, progress=False)  # fmt: skip
    anchor = datetime.now(UTC) + timedelta(seconds=AHEAD_S)  # the schedule's anchor
    started = time.monotonic()
    with temporary_settings({PREFECT_API_URL: stack["api"]}):
        deployment_id = asyncio.run(_schedule_reference(data, work, anchor))
        (scheduled,) = asyncio.run(_runs_of(deployment_id))
        assert scheduled.auto_scheduled and scheduled.state.is_scheduled()
        ahead = (scheduled.expected_start_time - anchor).total_seconds() + AHEAD_S
        assert 0 < ahead <= 2 * AHEAD_S + 1, ahead  # a minute or less ahead
        run = scheduled
        while time.monotonic() - started < 300 and not run.state.is_final():
            time.sleep(2)
            # the scheduler service may add later runs of the schedule: follow this one
            (run,) = [r for r in asyncio.run(_runs_of(deployment_id)) if r.id == scheduled.id]
    took = time.monotonic() - started
    assert run.state.is_completed(), run.state
    # at its time (the worker prefetches 10 s), not at once
    assert run.start_time >= scheduled.expected_start_time - timedelta(seconds=11)
    assert run.name == "reference-initial-backbone"
    logs = "".join(p.read_text() for p in (work / "stack").glob("worker-*.log"))
    assert str(run.id) in logs  # a worker of the stack submitted it

    client = MlflowClient(stack["mlflow"])
    experiment = client.get_experiment_by_name("chexpert-label-fractions")
    (record,) = client.search_runs(
        [experiment.experiment_id], f"tags.`prefect.flow_run_id` = '{run.id}'"
    )
    assert record.info.status == "FINISHED"
    assert record.data.tags["chexflow.kind"] == "reference"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    status = json.loads(_cli("status", "--json", "--workdir", str(work)).stdout)
    (worker,) = [row for row in status["services"] if row["name"].startswith("worker:")]
    assert worker["healthy"] and worker["worker"]["status"] == "ONLINE"
    assert worker["worker"]["heartbeat_age_s"] < 60
    print(f"\nscheduled {ahead:.0f} s ahead → completed in MLflow after {took:.0f} s")
