"""Loopback ports and readiness: free ports, health endpoints, registered Prefect workers."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chexflow.errors import ChexflowError
from chexflow.loopback import HOST, port_is_free
from chexflow.loopback import free_port as free_port  # the stack's callers and tests use it here
from deployments.stack.processes import Service, is_running


def check_ports(ports: dict[str, int]) -> None:
    """Refuse, in one line, a port that is already taken."""
    for option, port in ports.items():
        if not 0 < port < 65536:
            raise ChexflowError(f"{option} {port}: not a TCP port")
        if not port_is_free(port):
            raise ChexflowError(
                f"port {port} on {HOST} is busy (another server?): stop it or pass {option}"
            )


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def post_json(
    url: str, body: dict[str, Any], timeout_s: float = 5.0, auth_string: str | None = None
) -> Any:
    headers = {"Content-Type": "application/json"}
    if auth_string:
        headers["Authorization"] = "Basic " + base64.b64encode(auth_string.encode()).decode()
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read() or b"null")


def wait_until(
    ready: Callable[[], bool], services: list[Service], what: str, timeout_s: float
) -> float:
    """Poll ``ready`` until true; fail early, with the log's tail, if a service died."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if ready():
            return time.monotonic() - start
        for service in services:
            if not is_running(service.pid, service.start_ticks):
                raise ChexflowError(
                    f"{service.name} exited while starting: {_log_tail(service.log)} "
                    f"(log: {service.log})"
                )
        time.sleep(0.25)
    raise ChexflowError(f"{what} not ready after {timeout_s:.0f} s (logs: {services[0].log})")


def _log_tail(log: str) -> str:
    try:
        lines = [ln.strip() for ln in Path(log).read_text(errors="replace").splitlines()]
    except OSError:
        return "no log"
    lines = [ln for ln in lines if ln and not ln.startswith("---")]
    return lines[-1][:300] if lines else "no output"


def workers_online(
    api_url: str, pool: str, names: set[str], auth_string: str | None = None
) -> bool:
    """Whether every named worker of ``pool`` has sent a heartbeat to the Prefect API."""
    try:
        found = post_json(
            f"{api_url}/work_pools/{pool}/workers/filter", {}, auth_string=auth_string
        )
    except (urllib.error.URLError, OSError, ValueError):
        return False
    online = {w["name"] for w in found or [] if w.get("status", "ONLINE") == "ONLINE"}
    return names <= online


def worker_health(
    api_url: str, pools: list[str], auth_string: str | None = None
) -> dict[str, dict[str, Any]]:
    """What the Prefect API knows of each worker of ``pools``, by worker name.

    Each entry: ``pool``, ``status`` (``ONLINE``/``OFFLINE``, the server's verdict from the
    heartbeats), ``last_heartbeat`` (ISO time) and ``heartbeat_age_s``. Empty when the API
    does not answer (the server's own row says so).
    """
    out: dict[str, dict[str, Any]] = {}
    now = datetime.now(UTC)
    for pool in pools:
        try:
            found = post_json(
                f"{api_url}/work_pools/{pool}/workers/filter", {}, auth_string=auth_string
            )
        except (urllib.error.URLError, OSError, ValueError):
            continue
        for worker in found or []:
            beat = worker.get("last_heartbeat_time")
            age = None
            if beat:
                age = max(0.0, (now - datetime.fromisoformat(beat)).total_seconds())
            out[worker["name"]] = {
                "pool": pool,
                "status": worker.get("status") or "UNKNOWN",
                "last_heartbeat": beat,
                "heartbeat_age_s": None if age is None else round(age, 1),
            }
    return out
