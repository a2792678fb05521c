"""The embedded mode: flows run in the CLI's process against Prefect's temporary local API
(no ``PREFECT_API_URL``). Its settings, and starting that API while the CLI still imports.

Light on purpose (Prefect's settings only): the CLI imports it before the flows.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prefect.settings import (
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    get_current_settings,
    temporary_settings,
)

# The temporary local API's task-run recorder writes each task-run event in its own SQLite
# transaction (batch size 1). Those writes collide with the flow's own API writes: the API
# answers 503 (SQLITE_BUSY) and Prefect's client backs off ~2 s before retrying. A flow with
# three subflows of five tasks hit 22-24 such retries in 8 runs (median 5.6-6.7 s a run);
# writing the events in batches (flushed every 5 s and when the API stops) hit 0-2
# (0.41-0.47 s a run), with the same task runs recorded (bench/bench_orchestration.py).
EMBEDDED_SERVER_DEFAULTS = {
    "server.services.task_run_recorder.batch_size": 200,
    "server.services.task_run_recorder.read_batch_size": 200,
}


@contextmanager
def embedded_run_settings() -> Iterator[None]:
    """Flow-run settings for the embedded mode (no Prefect server configured).

    Flow-run heartbeats only serve a server that outlives the process (crash detection);
    the temporary local API dies with it. Each flow run's heartbeat thread is joined when
    the run ends and sleeps in 1 s steps, which cost ~1 s per flow run and subflow
    (bench/bench_orchestration.py: a 1% + 10% sweep is 5 flow runs). The temporary API
    started inside this context batches its task-run records (``EMBEDDED_SERVER_DEFAULTS``;
    a user's own ``PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_*`` variables win). With a
    server (``PREFECT_API_URL``) the settings stay as they are.
    """
    if get_current_settings().api.url:
        yield
        return
    with temporary_settings(
        updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}, set_defaults=EMBEDDED_SERVER_DEFAULTS
    ):
        yield


def start_temporary_api() -> Callable[[], None]:
    """Start the temporary local API now, in the background; return what waits for it.

    Prefect starts it on a flow's first API call and waits for it there (3 s on a used
    ``PREFECT_HOME``, 7-8 s on a new one: bench/bench_orchestration.py). Started right after
    the CLI has checked its input, the API boots in its own process while the CLI imports
    the flows (and ``demo`` writes its data). The server is Prefect's own
    ``SubprocessASGIServer`` singleton, so the flow's first call finds it running. Waiting
    re-raises nothing: if the early start failed, Prefect tries again and reports it.
    """
    if get_current_settings().api.url:
        return lambda: None
    # Imported here, in the calling thread: importing Prefect's modules from two threads at
    # once can meet a partially initialised module.
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()

    def start() -> None:
        # the server process takes its settings from this context; a failure is left to
        # Prefect, which tries again on the flow's first call and reports it there
        with embedded_run_settings(), contextlib.suppress(Exception):
            server.start()

    thread = threading.Thread(target=start, name="chexflow-prefect-api", daemon=True)
    thread.start()
    return thread.join
