"""Services as child processes: start one in its own session, find its tree, stop all of it.

Liveness comes from ``/proc/<pid>/stat``: a zombie counts as gone, and the start time in
clock ticks tells a recorded service from an unrelated process that reused its pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from chexflow.procinfo import is_running, proc_stat, start_ticks

STOP_GRACE_S = 10.0
KILL_WAIT_S = 5.0  # how long stop() waits for the kernel to end SIGKILLed processes


@dataclass
class Service:
    """One started process (and its tree): how to find it again and how to stop it."""

    name: str
    pid: int
    start_ticks: int
    log: str
    port: int | None = None
    url: str | None = None
    stop_signal: int = int(signal.SIGTERM)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, found through /proc parent links."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = proc_stat(int(entry.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def rss_mb(pids: Iterable[int]) -> float:
    """Resident memory of processes, in MB (0 for those that are gone)."""
    total_kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def spawn(
    name: str,
    command: list[str],
    env: dict[str, str],
    log: Path,
    *,
    cwd: Path | None = None,
    user: str | None = None,
    port: int | None = None,
    url: str | None = None,
    stop_signal: int = signal.SIGTERM,
) -> Service:
    """Start a service in a new session (its own process group), output to ``log``.

    The log is private (0600): a server may print its configuration or a database URL.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(descriptor, 0o600)  # a log created before, or by another umask
    with open(descriptor, "ab") as out:
        out.write(f"\n--- {time.strftime('%F %T')} {' '.join(command)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
        )
    return Service(name, proc.pid, start_ticks(proc.pid), str(log), port, url, int(stop_signal))


def stop(service: Service, grace_s: float = STOP_GRACE_S) -> str:
    """Signal a service's process tree, then SIGKILL what is left after ``grace_s``."""
    if not is_running(service.pid, service.start_ticks):
        return f"{service.name}: not running"
    tree = process_tree(service.pid)
    ticks = {pid: start_ticks(pid) for pid in tree}
    _signal_all(tree, service.stop_signal, pgid=service.pid)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not any(is_running(pid, ticks[pid]) for pid in tree):
            return f"{service.name}: stopped (pid {service.pid})"
        time.sleep(0.1)
    left = [pid for pid in tree if is_running(pid, ticks[pid])]
    _signal_all(left, signal.SIGKILL, pgid=service.pid)
    # SIGKILL is delivered asynchronously: wait until the kernel has ended every process, so
    # that a caller who starts the stack again right away finds its ports and files free.
    deadline = time.monotonic() + KILL_WAIT_S
    while any(is_running(pid, ticks[pid]) for pid in left) and time.monotonic() < deadline:
        time.sleep(0.02)
    survivors = [pid for pid in left if is_running(pid, ticks[pid])]
    if survivors:
        return f"{service.name}: pids {survivors} still alive {KILL_WAIT_S:.0f} s after SIGKILL"
    return f"{service.name}: killed after {grace_s:.0f} s (pid {service.pid})"


def _signal_all(pids: list[int], sig: int, pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def reap(services: Iterable[Service]) -> None:
    """Collect exit statuses of our own children so they do not linger as zombies."""
    for service in services:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(service.pid, os.WNOHANG)
