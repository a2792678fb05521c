"""The commands around the UIs: `chexflow ui`, what `up` prints next, worker health in `status`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deployments.stack import lifecycle, network
from deployments.stack.processes import Service
from deployments.stack.state import StackState
from deployments.stack.ui import ui_command
from flows import cli_stack
from flows.cli import app

runner = CliRunner()


def test_ui_is_the_stacks_lean_mlflow_server_over_the_workdir(tmp_path: Path) -> None:
    (tmp_path / "mlflow.db").touch()
    port = network.free_port()
    command, env, url = ui_command(tmp_path, port)
    assert command[1] == "server" and Path(command[0]).name == "mlflow"
    assert command[command.index("--workers") + 1] == "1"
    assert command[command.index("--host") + 1] == "127.0.0.1" and url.startswith("http://127.")
    assert command[command.index("--port") + 1] == str(port)
    assert "--backend-store-uri" not in command  # in the environment (it may hold a password)
    assert env["MLFLOW_BACKEND_STORE_URI"] == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [(None, "no MLflow store"), ("http://mlflow.internal:5000", "open it in a browser")],
)
def test_ui_without_a_store_to_serve_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str | None, expected: str
) -> None:
    if uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result = runner.invoke(app, ["ui", "--workdir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and expected in result.output


def test_up_prints_its_next_commands_with_the_same_workdir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "my work"
    state = StackState(str(work), 0.0, "sqlite", ready_s=12.0)
    state.services = [
        Service("prefect-server", 1, 0, "", port=4200, url="http://127.0.0.1:4200"),
        Service("mlflow-server", 2, 0, "", port=5000, url="http://127.0.0.1:5000"),
    ]
    cli_stack._print_ready(state, work)
    out = capsys.readouterr().out
    for command in ("deploy", "status", "down"):
        assert f"chexflow {command} --workdir '{work}'" in out, out


def test_status_names_each_worker_health_and_heartbeat() -> None:
    row = {"name": "worker:h-gpu-0", "pid": 3, "alive": True, "healthy": True, "url": None,
           "rss_mb": 200.0, "worker": {"pool": "chexflow-gpu", "status": "ONLINE",
                                       "heartbeat_age_s": 4.2}}  # fmt: skip
    gone = {"pool": "chexflow-cpu", "status": "OFFLINE", "heartbeat_age_s": None}
    offline = {**row, "name": "worker:h-cpu-0", "healthy": False, "worker": gone}
    text = cli_stack._format_status(
        {"workdir": "/w", "db": "sqlite", "services": [row, offline], "rss_mb": 400.0,
         "running": False}
    )  # fmt: skip
    gpu, cpu = text.splitlines()[1:3]
    assert "online" in gpu and "chexflow-gpu, last heartbeat 4 s ago" in gpu
    assert "offline" in cpu and "no heartbeat" in cpu


def test_worker_health_reads_the_prefect_api(prefect_api) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL

    async def beat() -> None:
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name="chexflow-gpu", type="process"))
            await client.send_worker_heartbeat("chexflow-gpu", "host-gpu-0")

    asyncio.run(beat())
    health = network.worker_health(PREFECT_API_URL.value(), ["chexflow-gpu", "chexflow-cpu"])
    assert health["host-gpu-0"]["status"] == "ONLINE"
    assert health["host-gpu-0"]["pool"] == "chexflow-gpu"
    assert 0 <= health["host-gpu-0"]["heartbeat_age_s"] < 120
    rows = [{"name": "worker:host-gpu-0", "alive": True}, {"name": "worker:host-cpu-0",
                                                         "alive": True}]  # fmt: skip
    state = StackState("/w", 0.0, "sqlite", env={"PREFECT_API_URL": PREFECT_API_URL.value()})
    lifecycle._add_worker_health(rows, state)
    assert rows[0]["healthy"] is True and rows[0]["worker"]["status"] == "ONLINE"
    assert rows[1]["healthy"] is False and rows[1]["worker"]["status"] == "UNKNOWN"
