"""Process identity from ``/proc``: a pid plus its start time names one process.

A pid alone is reused by the kernel; ``/proc/<pid>/stat`` also gives the start time in
clock ticks, so a recorded ``(pid, ticks)`` never matches an unrelated later process. A
zombie counts as gone. Used by the tracking layer (which process owns a run) and by the
local stack in ``deployments/stack`` (which services it started).
"""

from __future__ import annotations

from pathlib import Path


def proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (index 0 = state), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int:
    """The process start time in clock ticks (-1 when ``pid`` does not exist)."""
    fields = proc_stat(pid)
    return int(fields[19]) if fields else -1


def is_running(pid: int, ticks: int | None = None) -> bool:
    """Alive (not a zombie) and, when ``ticks`` is given, the same process as recorded."""
    fields = proc_stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return ticks is None or int(fields[19]) == ticks
