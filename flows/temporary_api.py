"""The temporary Prefect API's process, from the command's side: started at the command's
start, released once the input is checked, stopped with the command however it ends.

Light on purpose (standard library only, no Prefect): the CLI calls ``prelaunch`` before
it has configured Prefect's home, so nothing here may import Prefect (its import creates
the home). ``flows.embedded`` releases the process (``TemporaryApi.serve``) and points the
command's Prefect client at it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

from chexflow.loopback import free_port
from chexflow.procinfo import start_ticks

API_PROCESS_MODULE = "flows.api_process"
# Marks the temporary API's environment with its owner (``owner_mark``).
API_OWNER_ENV = "CHEXFLOW_API_OWNER"
STOP_WAIT_S = 10.0  # a served API's graceful stop (it flushes its task-run records)


def owner_mark() -> str:
    """``"<pid>:<start ticks>"`` of this process: unique on this machine while it lives."""
    return f"{os.getpid()}:{start_ticks(os.getpid())}"


def answers(url: str, timeout_s: float = 2.0, healthy_only: bool = True) -> bool:
    """Whether the Prefect API at ``url`` (``…/api``) answers ``/health``; no proxy (loopback
    or a private network). With ``healthy_only=False`` any HTTP answer counts (a server that
    wants an auth string answers 401)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url.rstrip('/')}/health", timeout=timeout_s) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError:
        return not healthy_only
    except (OSError, ValueError):
        return False


class TemporaryApi:
    """One API process (``flows.api_process``): spawned waiting, then served or discarded.

    Attributes:
        process: the process; ``port``: where it will serve (``127.0.0.1``).
    """

    def __init__(self, watcher: subprocess.Popen[bytes] | None, mark: str) -> None:
        self.port = free_port()
        self.served = False
        # Its own session: a Ctrl-C in the terminal (SIGINT to the foreground process group)
        # reaches the command only, which still needs the API to record how its runs ended;
        # the command stops it afterwards (``stop_all``, or the watcher). The owner's mark is
        # in its environment only, not in the command's (other children do not carry it).
        self.process = subprocess.Popen(
            [sys.executable, "-m", API_PROCESS_MODULE, "--port", str(self.port)],
            stdin=subprocess.PIPE,
            env={**os.environ, API_OWNER_ENV: mark},
            start_new_session=True,
        )
        _report(watcher, self.process.pid)

    @property
    def url(self) -> str:
        """The API's base URL, ``http://127.0.0.1:<port>/api``."""
        return f"http://127.0.0.1:{self.port}/api"

    def serve(self, env: Mapping[str, str]) -> bool:
        """Send the environment to serve with; False when the process has already ended."""
        stdin = self.process.stdin
        if stdin is None or self.process.poll() is not None:
            return False
        try:
            stdin.write((json.dumps({"env": dict(env)}) + "\n").encode())
            stdin.close()
        except (OSError, ValueError):
            return False
        self.served = True
        return True

    def stop(self) -> None:
        """End the process: SIGTERM for a served API (uvicorn's graceful stop), SIGKILL
        after ``STOP_WAIT_S``; a process never served has no state and is killed."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(OSError):
            if self.served:
                self.process.terminate()
            else:
                self.process.kill()
        try:
            self.process.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)


_apis: list[TemporaryApi] = []
_watchers: list[subprocess.Popen[bytes]] = []  # held open for the life of this process
_marks: list[str] = []  # this process's owner mark, once made


def prelaunch() -> None:
    """Start the API's process now, before the command checks its input (no-op with
    ``PREFECT_API_URL`` set, or when one is waiting already).

    It imports Prefect's server meanwhile and writes nothing until ``TemporaryApi.serve``
    (``flows.api_process``); a command refused at the door leaves nothing behind. The
    process ends with this one however it ends (``kill -9`` included: ``watch_api_processes``).
    """
    if os.environ.get("PREFECT_API_URL") or waiting() is not None:
        return
    if "prefect.settings" in sys.modules:  # imported already (a test harness): ask it
        from prefect.settings import get_current_settings

        if get_current_settings().api.url:
            return
    spawn()


def spawn() -> TemporaryApi:
    """A new waiting API process (the first one also starts the watcher)."""
    if not _marks:
        # The API process carries this mark, so the watcher finds it even if this process
        # ends in the instant between the spawn and the pid's report.
        _marks.append(owner_mark())
        watcher = watch_api_processes(_marks[0])
        if watcher is not None:
            _watchers.append(watcher)
        atexit.register(stop_all)
    api = TemporaryApi(_watchers[0] if _watchers else None, _marks[0])
    _apis.append(api)
    return api


def waiting() -> TemporaryApi | None:
    """The prelaunched process still waiting to be served, if any."""
    for api in _apis:
        if not api.served and api.process.poll() is None:
            return api
    return None


def discard_waiting() -> None:
    """Stop the processes that were never served (a command refused at the door)."""
    for api in _apis:
        if not api.served:
            api.stop()
    _apis[:] = [api for api in _apis if api.served]


def pids() -> list[int]:
    """The pids of this command's API processes that are still running."""
    return [api.process.pid for api in _apis if api.process.poll() is None]


def stop_all() -> None:
    """Stop every API process this command started (at exit, after Prefect's own exit
    handlers have sent their last events and logs)."""
    for api in _apis:
        api.stop()


def _report(watcher: subprocess.Popen[bytes] | None, pid: int) -> None:
    """Tell the watcher about an API process to stop when this process ends."""
    ticks = start_ticks(pid)
    if watcher is None or watcher.stdin is None or ticks < 0:
        return
    with contextlib.suppress(OSError, ValueError):
        watcher.stdin.write(f"{pid} {ticks}\n".encode())
        watcher.stdin.flush()


# Reads "pid start-ticks" lines until its stdin ends, i.e. until every process holding the
# other end of the pipe is gone; adds the API processes whose environment carries the
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
                command = f.read()
            if b"uvicorn" not in command and b"%s" not in command:
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
""".replace("%s", API_PROCESS_MODULE)


def watch_api_processes(mark: str) -> subprocess.Popen[bytes] | None:
    """Start the process that stops the temporary API once this process has ended.

    It stops the processes whose pids it is told on its stdin, and the API processes whose
    environment carries ``CHEXFLOW_API_OWNER=<mark>`` (``owner_mark``).

    ``PR_SET_PDEATHSIG`` would not do: it fires when the *thread* that started the child
    ends, and the API may be started from a short-lived thread. The watcher instead waits
    for the end of a pipe only this process holds (pipes are not inherited by the API
    process), so it learns of this process's end however it ends; it runs in its own
    session, so a signal to this process group does not end it first. None where it
    cannot start.
    """
    try:
        return subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WATCHER, mark],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        return None
