"""Flow runs handed to a work pool as a queue, and waited for.

``prefect.deployments.run_deployment`` creates its flow run in the state *Scheduled*. A GPU
worker runs one flow run at a time (``--limit 1``), so the fine-tunes of a sweep that no
worker has taken yet stay Scheduled, and the server's late-runs service renames them *Late*
15 s after their start time (``PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS``), which reads
as a fault. That service only renames runs whose state is named "Scheduled", while workers
take every run whose state is of type SCHEDULED. So a run created here is of type SCHEDULED,
named ``QUEUED``: workers take it as before, and it reads "Queued" until one does.
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID, uuid4

from prefect import get_client, task
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun, TaskRunResult
from prefect.context import FlowRunContext, TaskRunContext
from prefect.states import Pending, Scheduled, State

QUEUED = "Queued"
"""The name of a dispatched flow run's state until a worker takes it (type SCHEDULED)."""

POLL_INTERVAL_S = 5.0
"""Seconds between two reads of a dispatched run's state (``run_deployment``'s default)."""


def queued_state() -> State[Any]:
    """A SCHEDULED-type state for now, named ``QUEUED``, that the late-runs service leaves."""
    return Scheduled(name=QUEUED)


@task(name="deployment-run")
def _deployment_run() -> None:
    """Stands for a dispatched flow run in its caller's run graph; never run itself."""


def _subflow_link(client: SyncPrefectClient, name: str) -> UUID | None:
    """A task run in the calling flow run that a dispatched run becomes the subflow of.

    As ``run_deployment(as_subflow=True)`` does: the task run stands in the caller's flow
    run, under the calling task run if there is one, so the Prefect UI shows the dispatched
    run nested in the caller. The dispatched run's states are copied onto this task run by
    the server, which is why it is not the calling task run itself. None outside a flow run.
    """
    caller = TaskRunContext.get()
    flow_context = FlowRunContext.get()
    inputs: dict[str, list[Any]] = {}
    if caller is not None and caller.task_run.flow_run_id is not None:
        flow_run_id = caller.task_run.flow_run_id
        inputs["__parents__"] = [TaskRunResult(id=caller.task_run.id)]
    elif flow_context is not None and flow_context.flow_run is not None:
        flow_run_id = flow_context.flow_run.id
    else:
        return None
    link = client.create_task_run(
        task=_deployment_run,
        flow_run_id=flow_run_id,
        dynamic_key=uuid4().hex,
        name=name,
        state=Pending(),
        task_inputs=inputs,
    )
    return link.id


def queue_run(
    client: SyncPrefectClient, deployment: str, parameters: dict[str, Any], name: str
) -> FlowRun:
    """Create a flow run of ``deployment`` waiting in the ``QUEUED`` state.

    Args:
        client: A Prefect API client.
        deployment: ``"flow name/deployment name"``.
        parameters: The run's parameters (merged with the deployment's defaults).
        name: The flow run's name from its creation, e.g. ``finetune-1pct-seed0``.

    Returns:
        The created flow run, a subflow of the calling flow run (if any).

    Raises:
        prefect.exceptions.ObjectNotFound: No such deployment.
        prefect.exceptions.PrefectHTTPStatusError: The server refused the parameters (409).
    """
    target = client.read_deployment_by_name(deployment)
    return client.create_flow_run_from_deployment(
        target.id,
        parameters=parameters,
        state=queued_state(),
        name=name,
        parent_task_run_id=_subflow_link(client, name),
    )


def wait_for_run(
    client: SyncPrefectClient, flow_run_id: UUID, poll_interval_s: float = POLL_INTERVAL_S
) -> FlowRun:
    """Poll a flow run until its state is final, without a time limit; the final flow run."""
    while True:
        run = client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(poll_interval_s)


def run_queued(
    deployment: str,
    parameters: dict[str, Any],
    name: str,
    poll_interval_s: float = POLL_INTERVAL_S,
) -> FlowRun:
    """Queue a flow run of ``deployment`` (``queue_run``) and wait until it ends.

    Returns:
        The flow run in its final state (completed or not: the caller judges).
    """
    with get_client(sync_client=True) as client:
        run = queue_run(client, deployment, parameters, name)
        return wait_for_run(client, run.id, poll_interval_s)
