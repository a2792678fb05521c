"""The embedded mode: flows run in the CLI's process against a temporary local Prefect API
(no ``PREFECT_API_URL`` configured). Its settings, and serving that API while the CLI
still imports.

Light on purpose (Prefect's settings only): the CLI imports it before the flows; the API's
process itself is ``flows.api_process``, started by ``flows.temporary_api``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prefect.context import refresh_global_settings_context
from prefect.settings import (
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    get_current_settings,
    temporary_settings,
)

from chexflow.errors import ChexflowError
from chexflow.loopback import port_is_free
from flows import temporary_api

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
# What Prefect's ``SubprocessASGIServer`` adds to the temporary API's environment (no UI).
SERVER_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
}
_temporary_url: str | None = None  # this command's temporary API, once it answers


@contextmanager
def embedded_run_settings() -> Iterator[None]:
    """Flow-run settings for the embedded mode (no Prefect server configured).

    Flow-run heartbeats only serve a server that outlives the process (crash detection);
    the temporary local API dies with it. Each flow run's heartbeat thread is joined when
    the run ends and sleeps in 1 s steps, which cost ~1 s per flow run and subflow
    (bench/bench_orchestration.py: a 1% + 10% sweep is 5 flow runs). The temporary API
    started inside this context batches its task-run records (``EMBEDDED_SERVER_DEFAULTS``;
    a user's own ``PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_*`` variables win). With a
    server (``PREFECT_API_URL`` other than the temporary API's) the settings stay as they are.
    """
    url = get_current_settings().api.url
    if url and not is_temporary_api(url):
        yield
        return
    with temporary_settings(
        updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}, set_defaults=EMBEDDED_SERVER_DEFAULTS
    ):
        yield


def start_temporary_api() -> Callable[[], None]:
    """Serve the temporary local API now, in the background; return what waits for it.

    The API's process was started at the command's start (``temporary_api.prelaunch``) and
    has imported Prefect's server while the command checked its input; it is now given the
    environment Prefect's own ``SubprocessASGIServer`` would give it (``SERVER_ENV``, the
    workdir's home and database, ``EMBEDDED_SERVER_DEFAULTS``) and serves while the
    command imports the flows (and ``demo`` writes its data). A new process is started
    where none waits, and another on a new port when one exits with uvicorn's start-up
    failure (code 3) when the port was taken meanwhile; any other failure ends the wait
    at once (a database it cannot open: before, the API was started again until the bound).

    Once it answers, the returned callable points this process's Prefect client at it
    (``PREFECT_API_URL``; no UI links: the temporary API serves no UI), so the client does
    not import Prefect's server again (~4 s, docs/BENCHMARKS.md section 9). It still
    counts as the embedded mode (``embedded_run_settings``). The API ends with this
    process however it ends (``temporary_api.watch_api_processes``). Waiting is bounded by
    ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` (Prefect's own wait restarted an
    API that exits with code 3 without end: a database it cannot open hung a command for
    8 minutes).

    Raises (from the returned callable):
        ChexflowError: the API did not come up within the bound, or failed to start.
    """
    if get_current_settings().api.url:
        # a server is configured (or this process's earlier temporary API, which stays):
        # a process still waiting is not needed
        temporary_api.discard_waiting()
        return lambda: None
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    bound = float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    with embedded_run_settings():
        env = {
            **os.environ,
            **SERVER_ENV,
            **get_current_settings().to_environment_variables(exclude_unset=True),
        }
    deadline = time.monotonic() + bound
    ready: list[temporary_api.TemporaryApi] = []
    failure: list[str] = []

    def boot() -> None:
        api = temporary_api.waiting() or temporary_api.spawn()
        while time.monotonic() < deadline:
            if not api.served and not api.serve(env):
                failure.append(f"exited with code {api.process.poll()} before serving")
                return
            code = api.process.poll()
            if code == 3 and not port_is_free(api.port):
                api = temporary_api.spawn()  # another process took the port meanwhile
                continue
            if code is not None:  # its own error (a database it cannot open...) is above
                failure.append(f"exited with code {code}; its error is above")
                return
            if temporary_api.answers(api.url):
                ready.append(api)
                return
            time.sleep(0.1)

    thread = threading.Thread(target=boot, name="chexflow-prefect-api", daemon=True)
    thread.start()

    def wait() -> None:
        thread.join(max(0.0, deadline - time.monotonic()))
        if not ready:
            temporary_api.stop_all()
            home = get_current_settings().home
            reason = (
                f"failed to start ({failure[0]})"
                if failure
                else f"did not answer within {bound:.0f} s"
            )
            raise ChexflowError(
                f"the temporary Prefect API {reason}; check that PREFECT_HOME={home} is "
                "writable, or set PREFECT_API_URL to a running Prefect server"
            )
        _use_temporary_api(ready[0].url)

    return wait


def _use_temporary_api(url: str) -> None:
    """Point this process's Prefect settings (and its children's) at the temporary API."""
    global _temporary_url
    _temporary_url = url
    os.environ["PREFECT_API_URL"] = url
    os.environ["PREFECT_UI_URL"] = ""  # no "View at" links: the temporary API has no UI
    refresh_global_settings_context()


def is_temporary_api(url: str | None) -> bool:
    """Whether ``url`` is this command's temporary API (the embedded mode)."""
    return url is not None and url == _temporary_url
