"""Fine-tunes dispatched to a work pool read "Queued", not "Late", while they wait for a worker.

The fast tests use the session's test API (it runs no late-runs service: the harness is an
ephemeral server); the slow one starts a real `prefect server` whose late-runs service marks
runs Late one second after their start time, and checks that it relabels a plain
``run_deployment`` run and leaves a queued one alone.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chexflow import records

PARAMETERS = {"data_dir": "/d", "fraction": 0.01, "seed": 0, "workdir": "/w"}
LATE_AFTER_S = 1  # the real server's late-runs threshold and loop in the slow test


async def _unserved_deployment(name: str) -> str:
    """A deployment of the finetune flow that no worker serves: ``"finetune/<name>"``."""
    from prefect import get_client

    from flows.finetune import finetune

    async with get_client() as client:
        flow_id = await client.create_flow(finetune)
        await client.create_deployment(flow_id, name, entrypoint="flows/finetune.py:finetune")
    return f"finetune/{name}"


def _queue_from_a_sweep(deployment: str, control: bool = False) -> dict[str, Any]:
    """Queue one fine-tune from a task of a flow, as the sweep does; with ``control``, also
    create one with plain ``run_deployment``. Returns the ids involved."""
    from prefect import flow, get_client, task
    from prefect.context import TaskRunContext
    from prefect.deployments import run_deployment

    from flows.dispatch import queue_run

    @task
    def dispatch_one() -> dict[str, Any]:
        name = records.finetune_run_name(PARAMETERS["fraction"], PARAMETERS["seed"])
        with get_client(sync_client=True) as client:
            queued = queue_run(client, deployment, PARAMETERS, name)
        ids = {"queued": queued.id, "task_run": TaskRunContext.get().task_run.id}
        if control:
            ids["plain"] = run_deployment(deployment, parameters=PARAMETERS, timeout=0).id
        return ids

    @flow
    def parent() -> dict[str, Any]:
        return dispatch_one()

    state = parent(return_state=True)
    return {**state.result(), "parent": state.state_details.flow_run_id}


def _read(call):
    from prefect import get_client

    async def go():
        async with get_client() as client:
            return await call(client)

    return asyncio.run(go())


def test_a_queued_run_is_named_scheduled_type_and_a_subflow_of_its_sweep(prefect_api) -> None:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    from flows.dispatch import QUEUED

    deployment = asyncio.run(_unserved_deployment("unserved-link"))
    ids = _queue_from_a_sweep(deployment)

    async def read(client):
        run = await client.read_flow_run(ids["queued"])
        link = await client.read_task_run(run.parent_task_run_id)
        subflows = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[ids["parent"]])
            )
        )
        return run, link, subflows

    run, link, subflows = _read(read)
    assert run.name == "finetune-1pct-seed0"
    assert run.state.is_scheduled() and run.state.name == QUEUED
    # Nested in the sweep: the UI's subflow query finds it, under the dispatching task run.
    assert [s.id for s in subflows] == [run.id]
    assert link.flow_run_id == ids["parent"]
    assert [p.id for p in link.task_inputs["__parents__"]] == [ids["task_run"]]


def test_a_dispatched_fine_tune_that_fails_is_an_error_naming_it(prefect_api) -> None:
    from prefect import flow, get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.states import Failed

    from flows.sweep import dispatch

    deployment = asyncio.run(_unserved_deployment("unserved-fail"))

    def fail_the_child() -> None:
        """Play the worker: fail the fine-tune once it has been queued."""
        with get_client(sync_client=True) as client:
            for _ in range(300):
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(
                        name=DeploymentFilterName(any_=["unserved-fail"])
                    )
                )
                if runs:
                    client.set_flow_run_state(runs[0].id, Failed(message="no GPU"), force=True)
                    return
                time.sleep(0.1)

    @flow
    def parent() -> Any:
        return dispatch(deployment, PARAMETERS)

    worker = threading.Thread(target=fail_the_child)
    worker.start()
    try:
        with pytest.raises(RuntimeError, match="flow run finetune-1pct-seed0 ended Failed"):
            parent()
    finally:
        worker.join()


@pytest.fixture
def server_marking_late(tmp_path: Path) -> Iterator[str]:
    """A real Prefect server (SQLite) whose late-runs service marks runs Late after 1 s."""
    from deployments.stack import commands, network, processes

    port = network.free_port()
    env = {
        **commands.base_env(tmp_path),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS": str(LATE_AFTER_S),
        "PREFECT_SERVER_SERVICES_LATE_RUNS_LOOP_SECONDS": str(LATE_AFTER_S),
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
    }
    command = [commands.venv_executable("prefect"), "server", "start",
               "--host", network.HOST, "--port", str(port)]  # fmt: skip
    service = processes.spawn("prefect-server", command, env, tmp_path / "server.log")
    try:
        url = f"http://{network.HOST}:{port}/api"
        network.wait_until(lambda: network.http_ok(f"{url}/health"), [service], "server", 120)
        yield url
    finally:
        processes.stop(service)
        processes.reap([service])


@pytest.mark.slow
def test_a_queued_run_is_not_marked_late_while_a_plain_one_is(server_marking_late: str) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.dispatch import QUEUED

    with temporary_settings({PREFECT_API_URL: server_marking_late}):
        deployment = asyncio.run(_unserved_deployment("unserved-late"))
        ids = _queue_from_a_sweep(deployment, control=True)
        created = time.monotonic()

        async def states(client) -> dict[str, list[str]]:
            return {
                kind: [s.name for s in await client.read_flow_run_states(ids[kind])]
                for kind in ("queued", "plain")
            }

        names = _read(states)
        while "Late" not in names["plain"] and time.monotonic() - created < 45:
            time.sleep(0.5)
            names = _read(states)
        waited_s = time.monotonic() - created
        time.sleep(2 * LATE_AFTER_S)  # another pass of the service over the queued run
        names = _read(states)

    assert names["plain"] == ["Scheduled", "Late"], names  # the control: the service ran
    assert names["queued"] == [QUEUED], names
    print(f"\nplain run marked Late {waited_s:.1f} s after creation; queued run: {names['queued']}")
