"""`chexflow up` / `deploy` / `down` / `status`: unit tests, then real servers on loopback.

The slow tests start the stack as a user does (the `chexflow` executable), apply the
deployments, trigger a sweep through the Prefect API as the UI does, and check its
records in MLflow. They use PostgreSQL (the multi-worker setting) when the server
binaries and psycopg are installed, else SQLite for Prefect; MLflow is always a server.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import chromium, chromium_command, postgres_available
from typer.testing import CliRunner

from chexflow import records
from deployments import stack
from deployments.stack import commands, network, postgres, processes, state
from flows.cli import app
from flows.dispatch import QUEUED

runner = CliRunner()
CHEXFLOW = str(Path(sys.executable).parent / "chexflow")
TINY_CONFIG = {
    "data": {"image_size": 32},
    "model": {"name": "test_resnet"},
    "train": {"epochs": 1, "batch_size": 16, "bootstrap": 20},
    "analysis": {"bootstrap": 20, "kmeans_seeds": 2, "max_faithfulness_points": 300},
}
FRACTIONS = [0.25, 0.5]


# --- unit tests (no services) ---------------------------------------------------------------


def test_down_with_nothing_started_is_a_no_op(tmp_path: Path) -> None:
    result = runner.invoke(app, ["down", "--workdir", str(tmp_path)])
    assert result.exit_code == 0
    assert "nothing to stop" in result.output
    status = runner.invoke(app, ["status", "--workdir", str(tmp_path)])
    assert status.exit_code == 0 and "no stack" in status.output


def test_busy_port_is_refused_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind((network.HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = ["--prefect-port", str(network.free_port()), "--mlflow-port", str(port)]
        result = runner.invoke(app, ["up", "--workdir", str(tmp_path), *args])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0, result.output
    assert f"port {port}" in result.output and "--mlflow-port" in result.output
    assert not state.state_path(tmp_path).exists()


@pytest.mark.parametrize("db", ["mysql", "postgresql:///nohost"])
def test_bad_db_is_refused(tmp_path: Path, db: str) -> None:
    result = runner.invoke(app, ["up", "--workdir", str(tmp_path), "--db", db])
    assert result.exit_code == 2 and "--db" in result.output, result.output
    assert not state.state_path(tmp_path).exists()


def test_status_env_without_a_stack_is_an_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["status", "--env", "--workdir", str(tmp_path)])
    assert result.exit_code == 2 and "chexflow up" in result.output


def test_postgres_urls_are_split_and_redacted() -> None:
    base, db = postgres.split_postgres_url("postgresql://u:s3cret@db.internal:5432/ops")
    assert (base, db) == ("postgresql://u:s3cret@db.internal:5432", "ops")
    assert postgres.split_postgres_url("postgres://u:p@h")[1] == "postgres"
    assert "s3cret" not in postgres.redact("postgresql://u:s3cret@db:5432/x")
    assert postgres.redact("sqlite") == "sqlite"


def test_gpu_workers_are_pinned_one_per_device(tmp_path: Path) -> None:
    specs = commands.worker_specs(stack.StackSettings(tmp_path, gpus=("0", "3"), cpu_workers=1))
    gpu = [s for s in specs if s[1] == commands.GPU_POOL]
    assert [extra["CUDA_VISIBLE_DEVICES"] for _, _, extra in gpu] == ["0", "3"]
    assert sum(s[1] == commands.CPU_POOL for s in specs) == 1
    assert commands.worker_command("w", commands.GPU_POOL)[-2:] == ["--limit", "1"]


def test_stop_kills_the_whole_tree_and_falls_back_to_sigkill(tmp_path: Path) -> None:
    # A parent that ignores SIGTERM, with a child in the same group.
    script = "trap '' TERM; sleep 300 & wait"
    command = ["bash", "-c", script]
    service = processes.spawn("stubborn", command, dict(os.environ), tmp_path / "log")
    time.sleep(0.3)
    tree = processes.process_tree(service.pid)
    assert len(tree) >= 2
    ticks = {pid: processes.start_ticks(pid) for pid in tree}
    message = processes.stop(service, grace_s=1.0)
    assert "killed" in message
    # stop() returns only once the kernel has ended them (no sleep here on purpose); the start
    # ticks keep a recycled pid from counting as a survivor.
    assert not any(processes.is_running(pid, ticks[pid]) for pid in tree)
    with contextlib.suppress(ChildProcessError):  # already reaped by subprocess' cleanup
        os.waitpid(service.pid, 0)


def test_pid_reuse_is_not_mistaken_for_a_service(tmp_path: Path) -> None:
    service = processes.spawn("short", ["true"], dict(os.environ), tmp_path / "log")
    with contextlib.suppress(ChildProcessError):  # already reaped by subprocess' cleanup
        os.waitpid(service.pid, 0)
    assert not processes.is_running(service.pid, service.start_ticks)
    assert processes.stop(service).endswith("not running")


# --- real servers ---------------------------------------------------------------------------


def _cli(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return subprocess.run(
        [CHEXFLOW, *args], capture_output=True, text=True, timeout=timeout,
        env={**clean, **env}, check=False,
    )  # fmt: skip


def _exports(output: str) -> dict[str, str]:
    return dict(re.findall(r"^export (\w+)=(\S+)$", output, re.M))


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    # Not under pytest's tmp dir: its parents are 0700 and PostgreSQL runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="chexflow-stack-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def running(workdir: Path) -> Iterator[dict[str, Any]]:
    """`chexflow up` with two GPU workers and one CPU worker; `chexflow down` afterwards."""
    db = "postgres" if postgres_available() else "sqlite"
    ports = {name: network.free_port() for name in ("prefect", "mlflow", "pg")}
    args = ["up", "--workdir", str(workdir / "work"), "--gpu-workers", "2", "--db", db,
            "--prefect-port", str(ports["prefect"]), "--mlflow-port", str(ports["mlflow"]),
            "--pg-port", str(ports["pg"])]  # fmt: skip
    started = time.monotonic()
    result = _cli(*args)
    up_s = time.monotonic() - started
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        yield {"db": db, "ports": ports, "up_s": up_s, "output": result.stdout,
               "env": _exports(result.stdout), "work": workdir / "work"}  # fmt: skip
    finally:
        _cli("down", "--workdir", str(workdir / "work"))


@pytest.fixture(scope="module")
def deployed(running: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    result = _cli("deploy", "--workdir", str(running["work"]), **running["env"])
    assert result.returncode == 0, result.stdout + result.stderr
    return {**running, "deploy_s": time.monotonic() - started}


@pytest.fixture(scope="module")
def prefect_settings(running: dict[str, Any]):
    """Point this process's Prefect client at the stack (over any test harness)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return lambda: temporary_settings({PREFECT_API_URL: running["env"]["PREFECT_API_URL"]})


@pytest.fixture(scope="module")
def swept(
    deployed: dict[str, Any], prefect_settings, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A two-fraction sweep triggered through the API, as the UI does; waited for."""
    from prefect.deployments import run_deployment

    from chexflow.data.synthetic import write_synthetic

    data = write_synthetic(
        tmp_path_factory.mktemp("data") / "CheXpert-v1.0-small",
        patients=240, image_size=32, seed=0, progress=False,
    )  # fmt: skip
    parameters = {"data_dir": str(data), "fractions": FRACTIONS, "seeds": [0],
                  "config": TINY_CONFIG, "workdir": str(deployed["work"])}  # fmt: skip
    started = time.monotonic()
    with prefect_settings():
        run = run_deployment(
            "sweep/chexflow-sweep", parameters=parameters, timeout=480, poll_interval=1
        )
    return {**deployed, "sweep": run, "sweep_s": time.monotonic() - started}


def _read(prefect_settings, call):
    import asyncio

    from prefect import get_client

    async def go():
        async with get_client() as client:
            return await call(client)

    with prefect_settings():
        return asyncio.run(go())


@pytest.mark.slow
def test_up_prints_urls_env_and_everything_is_healthy(running: dict[str, Any]) -> None:
    env, ports = running["env"], running["ports"]
    assert env["PREFECT_API_URL"] == f"http://127.0.0.1:{ports['prefect']}/api"
    assert env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{ports['mlflow']}"
    assert f"Prefect UI: http://127.0.0.1:{ports['prefect']}" in running["output"]
    assert f"MLflow UI:  http://127.0.0.1:{ports['mlflow']}" in running["output"]
    result = _cli("status", "--json", "--workdir", str(running["work"]))
    report = json.loads(result.stdout)
    names = {row["name"]: row for row in report["services"]}
    assert all(row["alive"] for row in report["services"]), report
    assert names["prefect-server"]["healthy"] and names["mlflow-server"]["healthy"]
    assert sum(n.startswith("worker:") and "-gpu-" in n for n in names) == 2
    assert ("postgres" in names) == (running["db"] == "postgres")
    assert (running["work"] / "stack" / "env.sh").read_text().count("export") == 2
    print(f"\nup ({running['db']}, cold): {running['up_s']:.1f} s; "
          f"resident memory {report['rss_mb']:.0f} MB: "
          + ", ".join(f"{n} {r['rss_mb']:.0f}" for n, r in names.items()))  # fmt: skip


@pytest.mark.slow
def test_deploy_registers_deployments_pools_and_a_paused_schedule(
    deployed: dict[str, Any], prefect_settings
) -> None:
    async def read(client):
        pools = {p.name: p for p in await client.read_work_pools()}
        sweep = await client.read_deployment_by_name("sweep/chexflow-sweep")
        finetune = await client.read_deployment_by_name("finetune/chexflow-finetune")
        return pools, sweep, finetune

    pools, sweep, finetune = _read(prefect_settings, read)
    assert {"chexflow-gpu", "chexflow-cpu"} <= set(pools)
    assert pools["chexflow-gpu"].type == "process"
    assert finetune.work_pool_name == "chexflow-gpu" and sweep.work_pool_name == "chexflow-cpu"
    assert sweep.enforce_parameter_schema
    assert "config" in sweep.parameter_openapi_schema["properties"]
    (schedule,) = sweep.schedules
    assert schedule.active is False and schedule.schedule.cron == "0 3 * * 1"
    assert schedule.parameters["data_dir"]
    assert sweep.pull_steps[0]["prefect.deployments.steps.set_working_directory"] == {
        "directory": "{{ $CHEXFLOW_REPO }}"
    }
    print(f"\ndeploy: {deployed['deploy_s']:.1f} s")


@pytest.mark.slow
def test_invalid_parameters_are_rejected_by_the_server(
    deployed: dict[str, Any], prefect_settings
) -> None:
    from prefect.exceptions import PrefectHTTPStatusError

    async def create(client):
        sweep = await client.read_deployment_by_name("sweep/chexflow-sweep")
        return await client.create_flow_run_from_deployment(
            sweep.id, parameters={"data_dir": "/d", "fractions": "many"}
        )

    with pytest.raises(PrefectHTTPStatusError, match="409"):
        _read(prefect_settings, create)


@pytest.mark.slow
def test_sweep_fans_out_to_gpu_workers_concurrently_then_compares(
    swept: dict[str, Any], prefect_settings
) -> None:
    from mlflow import MlflowClient
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    run = swept["sweep"]
    assert run.state.is_completed(), run.state

    async def children(client):
        finetune = await client.read_deployment_by_name("finetune/chexflow-finetune")
        return await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[finetune.id]))
        )

    kids = _read(prefect_settings, children)
    assert len(kids) == len(FRACTIONS)
    assert all(k.state.is_completed() and k.work_pool_name == "chexflow-gpu" for k in kids)
    # Named for what they do, and waiting as a queue: "Queued" first, never "Late".
    assert sorted(k.name for k in kids) == [records.finetune_run_name(f, 0) for f in FRACTIONS]

    async def histories(client):
        return [[s.name for s in await client.read_flow_run_states(k.id)] for k in kids]

    for history in _read(prefect_settings, histories):
        assert history[0] == QUEUED and "Late" not in history, history
    # Two GPU workers ran the two fractions at the same time.
    (a, b) = sorted(kids, key=lambda k: k.start_time)
    assert b.start_time < a.end_time, "the fine-tunes did not overlap"
    workers = {_worker_of(swept["work"], k.id) for k in kids}
    assert len(workers) == 2 and all("-gpu-" in w for w in workers), workers

    client = MlflowClient(swept["env"]["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("chexpert-label-fractions")
    runs = client.search_runs([experiment.experiment_id])
    by_kind: dict[str, list] = {}
    for r in runs:
        by_kind.setdefault(r.data.tags.get("chexflow.kind"), []).append(r)
    (sweep_run,) = by_kind["sweep"]
    finetunes = by_kind["finetune"]
    assert sorted(float(r.data.tags["chexflow.fraction"]) for r in finetunes) == FRACTIONS
    for r in finetunes:
        assert r.info.status == "FINISHED"
        assert r.data.tags["mlflow.parentRunId"] == sweep_run.info.run_id
        assert r.data.tags["prefect.flow_run_id"] in {str(k.id) for k in kids}
    versions = client.search_model_versions("name='chexpert-finetune'")
    assert {v.run_id for v in versions} == {r.info.run_id for r in finetunes}
    (comparison,) = by_kind["comparison"]
    assert comparison.info.status == "FINISHED"
    files = {f.path for f in client.list_artifacts(comparison.info.run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/comparison.json"} <= files
    overlap = (a.end_time - b.start_time).total_seconds()
    print(f"\nsweep of {len(FRACTIONS)} fractions, trigger→completed: {swept['sweep_s']:.1f} s; "
          f"fine-tunes overlapped {overlap:.1f} s on {sorted(workers)}")  # fmt: skip


def _worker_of(work: Path, flow_run_id: Any) -> str:
    for log in (work / "stack").glob("worker-*.log"):
        match = re.search(rf"Worker '([^']+)' submitting flow run '{flow_run_id}'", log.read_text())
        if match:
            return match.group(1)
    return "?"


@pytest.mark.slow
def test_small_flow_run_latency_through_a_worker(swept: dict[str, Any], prefect_settings) -> None:
    from mlflow import MlflowClient
    from prefect.deployments import run_deployment

    client = MlflowClient(swept["env"]["MLFLOW_TRACKING_URI"])
    ids = [
        r.info.run_id
        for r in client.search_runs(
            [client.get_experiment_by_name("chexpert-label-fractions").experiment_id],
            "tags.`chexflow.kind` = 'finetune'",
        )
    ]
    started = time.monotonic()
    with prefect_settings():
        run = run_deployment(
            "compare/chexflow-compare",
            parameters={"run_ids": ids, "workdir": str(swept["work"])},
            timeout=240,
            poll_interval=0.5,
        )
    took = time.monotonic() - started
    assert run.state.is_completed(), run.state
    queued = (run.start_time - run.created).total_seconds() if run.start_time else float("nan")
    print(f"\ncompare deployment trigger→completed: {took:.1f} s (created→running {queued:.1f} s)")


@pytest.mark.slow
def test_ui_pages_render_in_headless_chromium(swept: dict[str, Any], tmp_path: Path) -> None:
    browser = chromium()
    if not browser:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    prefect_ui = swept["env"]["PREFECT_API_URL"].removesuffix("/api")
    pages = {
        "prefect-deployments": (f"{prefect_ui}/deployments", "chexflow-sweep"),
        "mlflow-experiments": (f"{swept['env']['MLFLOW_TRACKING_URI']}/#/experiments",
                               "chexpert-label-fractions"),
    }  # fmt: skip
    for name, (url, expected) in pages.items():
        profile = tmp_path / f"profile-{name}"
        shot = tmp_path / f"{name}.png"
        page = ("--virtual-time-budget=20000", "--window-size=1280,800")
        dom = subprocess.run(
            chromium_command(browser, profile, *page, "--dump-dom", url),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        subprocess.run(
            chromium_command(browser, profile, *page, f"--screenshot={shot}", url),
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        assert shot.exists() and shot.stat().st_size > 10_000, name
        assert expected in dom.stdout, f"{name}: {expected!r} not rendered (screenshot {shot})"
        assert "can't connect" not in dom.stdout.lower(), name
    print(f"\nUI screenshots: {tmp_path}")


@pytest.mark.slow
def test_up_cold_and_warm_on_sqlite_then_down_frees_everything(tmp_path: Path) -> None:
    work = tmp_path / "work"
    ports = [network.free_port(), network.free_port()]
    args = ["up", "--workdir", str(work), "--prefect-port", str(ports[0]),
            "--mlflow-port", str(ports[1]), "--gpu-workers", "0", "--cpu-workers", "0"]  # fmt: skip
    timings = []
    for _ in ("cold", "warm"):
        started = time.monotonic()
        result = _cli(*args)
        timings.append(time.monotonic() - started)
        assert result.returncode == 0, result.stdout + result.stderr
        recorded = stack.StackState.load(state.state_path(work))
        assert recorded is not None
        pids = [pid for s in recorded.services for pid in processes.process_tree(s.pid)]
        again = _cli(*args)
        assert again.returncode == 0 and "already running" in again.stdout
        down = _cli("down", "--workdir", str(work))
        assert down.returncode == 0 and "stopped" in down.stdout, down.stdout
        _assert_gone(pids, ports)
    print(f"\nup (sqlite, no workers): cold {timings[0]:.1f} s, warm {timings[1]:.1f} s")


def _assert_gone(pids: list[int], ports: list[int]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
        any(processes.is_running(p) for p in pids) or not all(map(network.port_is_free, ports))
    ):
        time.sleep(0.2)
    assert not [p for p in pids if processes.is_running(p)]
    assert all(network.port_is_free(p) for p in ports)


@pytest.mark.slow
def test_down_stops_every_process_and_frees_the_ports(
    running: dict[str, Any], swept: dict[str, Any]
) -> None:
    # Runs last in this module (pytest keeps file order); the fixture's down is then a no-op.
    recorded = stack.StackState.load(state.state_path(running["work"]))
    assert recorded is not None
    pids = [pid for s in recorded.services for pid in processes.process_tree(s.pid)]
    result = _cli("down", "--workdir", str(running["work"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("stopped") + result.stdout.count("killed") == len(recorded.services)
    _assert_gone(pids, list(running["ports"].values()))
    assert not state.state_path(running["work"]).exists()
