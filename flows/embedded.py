"""The embedded mode: flows run in the CLI's process against Prefect's temporary local API
(no ``PREFECT_API_URL``). Its settings, and starting that API while the CLI still imports.

Light on purpose (Prefect's settings only): the CLI imports it before the flows.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect.settings import (
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    get_current_settings,
    temporary_settings,
)

from chexflow.errors import ChexflowError
from chexflow.procinfo import start_ticks

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
    ``SubprocessASGIServer`` singleton, so the flow's first call finds it running.

    The API process ends with this one however it ends (``kill -9`` included): a watcher
    process (``watch_api_processes``) stops it when this process is gone. Waiting is
    bounded by ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` (Prefect's own wait
    restarts an API that exits with code 3 without end: a database it cannot open hung a
    command for 8 minutes).

    Raises (from the returned callable):
        ChexflowError: the API did not come up within the bound, or failed to start.
    """
    if get_current_settings().api.url:
        return lambda: None
    # Imported here, in the calling thread: importing Prefect's modules from two threads at
    # once can meet a partially initialised module.
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    bound = float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    server = SubprocessASGIServer()
    # The API process inherits this process's environment (Prefect's Popen copies
    # os.environ), so the watcher can find it by this mark even if this process ends before
    # the reporter has told it the API's pid.
    os.environ[API_OWNER_ENV] = owner_mark()
    watcher = watch_api_processes()
    failure: list[BaseException] = []

    def start() -> None:
        # the server process takes its settings from this context
        with embedded_run_settings():
            try:
                server.start(timeout=int(bound) + 1)
            except Exception as exc:
                failure.append(exc)

    def report() -> None:
        # from the moment Prefect spawns the API, not when the CLI comes to wait for it
        reported: set[int] = set()
        while thread.is_alive():
            _report(watcher, server, reported)
            thread.join(0.05)
        _report(watcher, server, reported)

    thread = threading.Thread(target=start, name="chexflow-prefect-api", daemon=True)
    reporter = threading.Thread(target=report, name="chexflow-prefect-api-watch", daemon=True)
    started = time.monotonic()
    thread.start()
    reporter.start()

    def wait() -> None:
        thread.join(max(0.0, started + bound - time.monotonic()))
        if thread.is_alive() or failure:
            process = server.server_process
            if process is not None:  # SIGKILL (not exit code 3): Prefect stops restarting it
                with contextlib.suppress(OSError):
                    process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
            # Prefect's exit handler would log "Stopping temporary server" after the one
            # line below; the process is stopped here, and the watcher stops any API
            # restarted meanwhile when this process ends.
            atexit.unregister(server.stop)
            home = get_current_settings().home
            reason = (
                f"did not answer within {bound:.0f} s"
                if not failure
                else f"failed to start ({_first_line(failure[0])})"
            )
            raise ChexflowError(
                f"the temporary Prefect API {reason}; check that PREFECT_HOME={home} is "
                "writable, or set PREFECT_API_URL to a running Prefect server"
            )

    return wait


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _report(watcher: subprocess.Popen[bytes] | None, server: Any, reported: set[int]) -> None:
    """Tell the watcher about an API process it has not heard of (Prefect may restart it)."""
    process = getattr(server, "server_process", None)
    if watcher is None or watcher.stdin is None or process is None or process.pid in reported:
        return
    ticks = start_ticks(process.pid)
    if ticks < 0:
        return
    with contextlib.suppress(OSError, ValueError):
        watcher.stdin.write(f"{process.pid} {ticks}\n".encode())
        watcher.stdin.flush()
        reported.add(process.pid)


# Marks the temporary API's environment with its owner (``owner_mark``).
API_OWNER_ENV = "CHEXFLOW_API_OWNER"


def owner_mark() -> str:
    """``"<pid>:<start ticks>"`` of this process: unique on this machine while it lives."""
    return f"{os.getpid()}:{start_ticks(os.getpid())}"


# Reads "pid start-ticks" lines until its stdin ends, i.e. until every process holding the
# other end of the pipe is gone; adds the uvicorn processes whose environment carries the
# owner's mark (argv[1]), which covers an API spawned in the instant before the owner died,
# before its pid was reported; then stops those that are still the same processes
# (SIGTERM, SIGKILL after 5 s). Standard library only: it starts in ~20 ms.
_WATCHER = """
import os, signal, sys, time
def ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]
def marked(mark):
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if b"uvicorn" not in f.read():
                    continue
            with open(f"/proc/{name}/environ", "rb") as f:
                if mark not in f.read().split(b"\\0"):
                    continue
        except OSError:
            continue
        t = ticks(int(name))
        if t is not None:
            found[name] = t
    return found
watched = dict(line.split() for line in sys.stdin if len(line.split()) == 2)
if len(sys.argv) > 1 and sys.argv[1]:
    watched.update(marked(f"CHEXFLOW_API_OWNER={sys.argv[1]}".encode()))
alive = [p for p, t in watched.items() if ticks(int(p)) == t]
for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
    for p in alive:
        try:
            os.kill(int(p), sig)
        except OSError:
            pass
    end = time.monotonic() + wait
    while time.monotonic() < end and any(ticks(int(p)) == watched[p] for p in alive):
        time.sleep(0.05)
    alive = [p for p in alive if ticks(int(p)) == watched[p]]
"""

_watchers: list[subprocess.Popen[bytes]] = []  # held open for the life of this process


def watch_api_processes() -> subprocess.Popen[bytes] | None:
    """Start the process that stops the temporary API once this process has ended.

    ``PR_SET_PDEATHSIG`` would not do: it fires when the *thread* that started the child
    ends, and the API is started from a short-lived thread. The watcher instead waits for
    the end of a pipe only this process holds (pipes are not inherited by the API process),
    so it learns of this process's end however it ends; it runs in its own session, so a
    signal to this process group does not end it first. None where it cannot start.
    """
    try:
        watcher = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WATCHER, os.environ.get(API_OWNER_ENV, "")],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        return None
    _watchers.append(watcher)
    return watcher
