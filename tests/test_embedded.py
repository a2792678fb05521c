"""The embedded mode (no Prefect server configured): its settings, and that nothing it
speeds up is lost from the record."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TINY

ROOT = Path(__file__).resolve().parents[1]
CHEXFLOW = str(Path(sys.executable).parent / "chexflow")

_SHOW_SETTINGS = """
import json
from prefect.settings import get_current_settings
from flows.embedded import embedded_run_settings

with embedded_run_settings():
    settings = get_current_settings()
    recorder = settings.server.services.task_run_recorder
    env = settings.to_environment_variables(exclude_unset=True)
    print(json.dumps({
        "heartbeat": settings.flows.heartbeat_frequency,
        "batch_size": recorder.batch_size,
        "read_batch_size": recorder.read_batch_size,
        "server_env_batch_size": env.get("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE"),
    }))
"""


def _offline_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(
        MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false"
    )
    # A cold home migrates first; the CLI allows 180 s for that (Prefect's default is 20 s,
    # which a loaded 2-core machine outlasts, and the start is now bounded: flows/embedded.py).
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _embedded_settings(**extra: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _SHOW_SETTINGS],
        env=_offline_env(**extra),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_embedded_settings_batch_task_run_records_for_the_temporary_api() -> None:
    shown = _embedded_settings()
    assert shown["heartbeat"] is None
    assert shown["batch_size"] == shown["read_batch_size"] == 200
    # what the temporary API's subprocess is started with
    assert shown["server_env_batch_size"] == "200"


def test_a_users_recorder_setting_wins_over_the_embedded_default() -> None:
    shown = _embedded_settings(PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE="7")
    assert shown["batch_size"] == 7
    assert shown["read_batch_size"] == 200


def test_with_a_server_configured_nothing_changes() -> None:
    shown = _embedded_settings(PREFECT_API_URL="http://127.0.0.1:9/api")
    assert shown["heartbeat"] is not None
    assert shown["batch_size"] == 1  # Prefect's default


@pytest.mark.slow
def test_an_embedded_run_records_every_task_run_it_logged(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    """Batched task-run records are all written by the time the command returns."""
    work = tmp_path / "work"
    sets = [arg for item in TINY for arg in ("--set", item)]
    command = [CHEXFLOW, "finetune", "--data", str(tiny_dataset), "--fraction", "0.5"]
    done = subprocess.run(
        [*command, "--workdir", str(work), *sets],
        env=_offline_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    logged = re.findall(r"Task run '([^']+)' - Finished in state Completed", output)
    assert len(logged) >= 8, output[-3000:]
    database = work / "prefect" / "prefect.db"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT name FROM task_run WHERE state_type = 'COMPLETED'")
        recorded = [name for (name,) in rows]
    assert sorted(recorded) == sorted(logged)


_EARLY_START = """
import json
import os
import sys
import time
from pathlib import Path
from flows import temporary_api

temporary_api.prelaunch()  # the command's start: before its PREFECT_HOME exists
(pid,) = temporary_api.pids()
deadline = time.monotonic() + 150
while time.monotonic() < deadline:  # until it has imported and waits on its stdin
    if Path(f"/proc/{pid}/wchan").read_text().endswith("pipe_read"):
        break
    time.sleep(0.1)
waited = Path(f"/proc/{pid}/wchan").read_text().endswith("pipe_read")
home = Path(os.environ["PREFECT_HOME"])
home_before_serving = home.exists()

from prefect import flow
from prefect.settings import get_current_settings
from flows.embedded import embedded_run_settings, start_temporary_api

started = start_temporary_api()
started()
import httpx
served = httpx.get(os.environ["PREFECT_API_URL"] + "/admin/settings").json()
recorder = served["server"]["services"]["task_run_recorder"]

@flow
def which_api() -> str:
    from prefect.client.orchestration import get_client
    with get_client(sync_client=True) as client:
        return str(client.api_url)

with embedded_run_settings():
    used = which_api()
    heartbeat = get_current_settings().flows.heartbeat_frequency
print(json.dumps({
    "waited": waited,
    "home_before_serving": home_before_serving,
    "database": (home / "prefect.db").is_file(),
    "api_url": os.environ["PREFECT_API_URL"],
    "used": used,
    "heartbeat": heartbeat,
    "batched": recorder["batch_size"] == 200,
    "served_home": served["home"],
    "server_imported": "prefect.server.api.server" in sys.modules,
    "processes": len(temporary_api.pids()),
}))
"""


@pytest.mark.slow
def test_the_early_api_is_the_one_the_flows_use(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _EARLY_START],
        env=_offline_env(PREFECT_HOME=str(tmp_path / "prefect")),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    shown = json.loads(done.stdout.strip().splitlines()[-1])
    # The process started before the home existed and created nothing there until served.
    assert shown["waited"] and shown["home_before_serving"] is False and shown["database"]
    assert shown["used"].rstrip("/") == shown["api_url"].rstrip("/")
    # the API serves with the environment it was given when released, not the one it
    # was started with: the embedded settings, and the command's home
    assert shown["batched"] and shown["served_home"] == str(tmp_path / "prefect")
    assert shown["heartbeat"] is None  # still the embedded mode
    # The command never imported Prefect's server (~4 s): its API process did.
    assert shown["server_imported"] is False
    assert shown["processes"] == 1


@pytest.mark.parametrize("command_word", ["flows.api_process", "uvicorn"])
def test_the_watcher_stops_an_api_whose_pid_it_never_heard_of(
    tmp_path: Path, command_word: str
) -> None:
    # Before: the watcher knew the API only by the pid the CLI's reporter thread sent it, so
    # a command killed in the instant between the API's spawn and that report left the API
    # running (tests/test_faults.py's kill -9 / -15 on a loaded CI machine).
    import time

    from flows.temporary_api import API_OWNER_ENV, watch_api_processes

    mark = f"test-{os.getpid()}-{time.monotonic_ns()}"
    # stands in for the API: its module in its command line, the owner's mark in its env
    api = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", command_word],
        env={**os.environ, API_OWNER_ENV: mark},
    )
    bystander = subprocess.Popen(  # an API of someone else: left alone
        [sys.executable, "-c", "import time; time.sleep(120)", command_word],
        env={**os.environ, API_OWNER_ENV: "someone-else"},
    )
    try:
        watcher = watch_api_processes(mark)
        assert watcher is not None and watcher.stdin is not None
        watcher.stdin.close()  # the owner ends without reporting a pid
        assert watcher.wait(timeout=60) == 0
        assert api.wait(timeout=10) == -15  # SIGTERM
        assert bystander.poll() is None
    finally:
        for process in (api, bystander):
            process.kill()
            process.wait()
