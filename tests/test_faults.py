"""Faults survived: a killed training, an MLflow outage, concurrent sweeps, a bad workdir.

Each test injects the fault for real: SIGKILL of a `chexflow finetune` process, an MLflow
server killed and restarted while a flow logs to it, two `chexflow sweep` processes against
one stack at once, a workdir that cannot be written or has no room. `-s` prints timings.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import TINY
from mlflow import MlflowClient
from typer.testing import CliRunner

from chexflow import pipeline
from chexflow.config import load_config
from deployments import stack
from deployments.stack import commands, network, processes
from flows.cli import app
from flows.temporary_api import API_PROCESS_MODULE

CHEXFLOW = str(Path(sys.executable).parent / "chexflow")
EPOCHS = 4
CONTRACT_ARTIFACTS = (
    "embeddings/features.npy",
    "embeddings/index.csv",
    "embeddings/meta.json",
    "plots/tsne.png",
    "metrics/cluster_metrics.json",
    "metrics/evaluation.json",
    "checkpoints/best.pt",
    "config.yaml",
    "data/patients.txt",
)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return {**env, **commands.OFFLINE_ENV, **extra}


def _finetune_args(data: Path, workdir: Path, epochs: int = EPOCHS) -> list[str]:
    sets = [arg for item in [*TINY, f"train.epochs={epochs}"] for arg in ("--set", item)]
    return [CHEXFLOW, "finetune", "--data", str(data), "--fraction", "0.5",
            "--workdir", str(workdir), *sets]  # fmt: skip


def _artifacts(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def _finetune_runs(client: MlflowClient) -> list[Any]:
    experiment = client.get_experiment_by_name("chexpert-label-fractions")
    return client.search_runs(
        [experiment.experiment_id],
        "tags.`chexflow.kind` = 'finetune'",
        order_by=["attributes.start_time ASC"],
    )


@pytest.fixture(scope="module")
def api_url(prefect_api) -> str:
    """The session's test Prefect API, for flows run in subprocesses (no server per process)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


# --- a worker killed in the middle of training ---------------------------------------------


@pytest.mark.slow
def test_killed_training_resumes_from_its_checkpoint_to_the_same_result(
    api_url: str, tiny_dataset: Path, tmp_path: Path
) -> None:
    env = _clean_env(PREFECT_API_URL=api_url, PREFECT_HOME=str(tmp_path / "prefect-home"))
    calm, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    started = time.monotonic()
    baseline = subprocess.Popen(
        _finetune_args(tiny_dataset, calm), env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    victim = subprocess.Popen(
        _finetune_args(tiny_dataset, killed), env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        meta = _wait_for_first_checkpoint(killed, victim)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
    assert victim.returncode == -signal.SIGKILL
    assert 1 <= meta["epoch"] < EPOCHS and not meta["finished"], meta
    client = MlflowClient(f"sqlite:///{killed / 'mlflow.db'}")
    (orphan,) = _finetune_runs(client)
    assert orphan.info.status == "RUNNING"  # nobody closed it: the process was killed

    rerun = subprocess.run(
        _finetune_args(tiny_dataset, killed), env=env, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    output, _ = baseline.communicate(timeout=600)
    assert baseline.returncode == 0, output[-3000:]
    took = time.monotonic() - started

    first, second = _finetune_runs(client)
    assert first.info.run_id == orphan.info.run_id
    assert first.info.status == "KILLED"
    assert first.data.tags["chexflow.failure"].startswith("abandoned: process")
    assert second.info.status == "FINISHED"
    assert second.data.tags["chexflow.previous_attempts"] == first.info.run_id
    fingerprint = second.data.tags["chexflow.training_fingerprint"]
    assert first.data.tags["chexflow.training_fingerprint"] == fingerprint
    resumed = int(second.data.tags["chexflow.resumed_from_epoch"])
    assert meta["epoch"] <= resumed < EPOCHS
    assert set(CONTRACT_ARTIFACTS) <= _artifacts(client, second.info.run_id)
    steps = [m.step for m in client.get_metric_history(second.info.run_id, "epoch/val_loss")]
    assert set(steps) == set(range(1, EPOCHS + 1)), "the full history is in the resumed run"

    (reference,) = _finetune_runs(MlflowClient(f"sqlite:///{calm / 'mlflow.db'}"))
    assert reference.data.tags["chexflow.training_fingerprint"] == fingerprint
    for key in ("val_auroc_mean", "silhouette", "davies_bouldin", "best_epoch"):
        assert second.data.metrics[key] == reference.data.metrics[key], key
    _assert_same_weights(killed / "checkpoints" / fingerprint, calm / "checkpoints" / fingerprint)
    print(f"\nkilled at epoch {meta['epoch']}/{EPOCHS}, resumed from epoch {resumed}; "
          f"uninterrupted + killed + rerun: {took:.1f} s")  # fmt: skip


def _wait_for_first_checkpoint(workdir: Path, process: subprocess.Popen) -> dict[str, Any]:
    """Poll until an epoch's checkpoint is complete (its .json is written after the .pt)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        for meta in (workdir / "checkpoints").glob("*/last.json"):
            return json.loads(meta.read_text())
        assert process.poll() is None, "the training ended before its first checkpoint"
        time.sleep(0.02)
    raise AssertionError("no checkpoint after 300 s")


def _assert_same_weights(left: Path, right: Path) -> None:
    for name in ("best.pt", "last.pt"):
        a = torch.load(left / name, map_location="cpu", weights_only=True)
        b = torch.load(right / name, map_location="cpu", weights_only=True)
        a, b = a.get("model", a), b.get("model", b)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_only_runs_of_dead_processes_here_are_closed_as_abandoned(tmp_path: Path) -> None:
    from chexflow.tracking import close_abandoned_runs, make_tracker, process_tags

    tracker = make_tracker("chexpert-label-fractions", tmp_path)
    mine = process_tags()
    pid, ticks = mine["chexflow.process"].split(":")
    dead = {**mine, "chexflow.process": f"{pid}:{int(ticks) - 1}"}  # a reused pid: not it
    owners = {
        "alive": mine,
        "dead": dead,
        "other-host": {**dead, "chexflow.host": "elsewhere"},
        "other-namespace": {**dead, "chexflow.pid_namespace": "another-container"},
    }
    ids = {name: tracker.start_run("finetune", name, tags) for name, tags in owners.items()}
    assert close_abandoned_runs(tracker) == [ids["dead"]]
    status = {n: tracker.client.get_run(i).info.status for n, i in ids.items()}
    assert status == {"alive": "RUNNING", "dead": "KILLED", "other-host": "RUNNING",
                      "other-namespace": "RUNNING"}  # fmt: skip
    failure = tracker.client.get_run(ids["dead"]).data.tags["chexflow.failure"]
    assert failure.startswith(f"abandoned: process {pid} ")


# --- the MLflow server unreachable while a flow logs ----------------------------------------


class _Outage:
    """Kill the MLflow server (SIGKILL, mid-request); start it again ``down_s`` later."""

    def __init__(self, settings: stack.StackSettings, backend: str, log: Path, down_s: float):
        self.command = commands.mlflow_server_command(settings, backend)
        self.env = commands.base_env(settings.workdir)
        self.log, self.down_s, self.port = log, down_s, settings.mlflow_port
        self.service = self.start()
        self.fired = threading.Event()
        self.restarted = threading.Event()
        self.killed_at = self.healthy_at = 0.0

    def start(self) -> processes.Service:
        service = processes.spawn("mlflow-server", self.command, self.env, self.log)
        url = f"http://{network.HOST}:{self.port}/health"
        network.wait_until(lambda: network.http_ok(url), [service], "MLflow server", 120)
        return service

    def trigger(self) -> None:
        if self.fired.is_set():
            return
        self.fired.set()
        os.killpg(self.service.pid, signal.SIGKILL)
        os.waitpid(self.service.pid, 0)
        self.killed_at = time.monotonic()
        threading.Thread(target=self._come_back, daemon=True).start()

    def _come_back(self) -> None:
        time.sleep(self.down_s)
        while not network.port_is_free(self.port):
            time.sleep(0.1)
        self.service = self.start()
        self.healthy_at = time.monotonic()
        self.restarted.set()

    def stop(self) -> None:
        if self.fired.is_set():
            self.restarted.wait(timeout=120)
        processes.stop(self.service, grace_s=5)
        processes.reap([self.service])


@pytest.fixture
def mlflow_outage(tmp_path: Path) -> Iterator[_Outage]:
    port = network.free_port()
    settings = stack.StackSettings(tmp_path / "server", mlflow_port=port)
    backend = f"sqlite:///{tmp_path / 'server' / 'mlflow.db'}"
    (tmp_path / "server").mkdir()
    outage = _Outage(settings, backend, tmp_path / "mlflow-server.log", down_s=10.0)
    yield outage
    outage.stop()


@pytest.mark.slow
def test_mlflow_outage_during_logging_loses_no_metric_or_artifact(
    prefect_api, tiny_dataset: Path, tmp_path: Path, mlflow_outage: _Outage, monkeypatch
) -> None:
    from chexflow.tracking import Tracker
    from flows.finetune import finetune

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://{network.HOST}:{mlflow_outage.port}")
    # Each request gives up after ~5 s (not ~12 s): the outage reaches the task retries.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    original = Tracker.log_metric_objects

    def flush_then_outage(self: Tracker, run_id: str, items: list) -> None:
        if any(m.key.startswith("epoch/") and m.step == 3 for m in items):  # the last epoch
            mlflow_outage.trigger()
        original(self, run_id, items)

    monkeypatch.setattr(Tracker, "log_metric_objects", flush_then_outage)
    config = load_config(None, [*TINY, "train.epochs=3"])
    started = time.monotonic()
    state = finetune(str(tiny_dataset), 0.5, 0, config, str(tmp_path / "work"), return_state=True)
    took = time.monotonic() - started
    assert state.is_completed(), state
    result = state.result()
    assert mlflow_outage.fired.is_set() and mlflow_outage.restarted.wait(timeout=60)

    client = MlflowClient(f"http://{network.HOST}:{mlflow_outage.port}")
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    steps_per_epoch = -(-int(run.data.params["n_train_images"]) // 16)  # batch size 16
    losses = client.get_metric_history(run.info.run_id, "train_loss_step")
    assert {m.step for m in losses} == set(range(1, 3 * steps_per_epoch + 1))
    for key in ("epoch/val_auroc_mean", "epoch/train_loss"):
        assert {m.step for m in client.get_metric_history(run.info.run_id, key)} == {1, 2, 3}
    assert {"val_auroc_mean", "silhouette", "davies_bouldin", "best_epoch"} <= set(run.data.metrics)
    assert set(CONTRACT_ARTIFACTS) <= _artifacts(client, run.info.run_id)
    version = client.get_model_version("chexpert-finetune", result.model_version)
    assert version.run_id == run.info.run_id
    retried = _retried_tasks(state.state_details.flow_run_id)
    assert retried, "the outage was bridged by Prefect task retries"
    down = mlflow_outage.healthy_at - mlflow_outage.killed_at
    print(f"\nMLflow down {down:.1f} s (SIGKILL, restarted after 10 s); retried tasks "
          f"{sorted(retried)}; flow {took:.1f} s")  # fmt: skip


def _retried_tasks(flow_run_id: Any) -> dict[str, int]:
    import asyncio

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )

    return {t.name: t.run_count for t in asyncio.run(read()) if t.run_count > 1}


# --- two sweeps at once against one stack ---------------------------------------------------


@pytest.fixture(scope="module")
def plain_stack() -> Iterator[dict[str, Any]]:
    """`chexflow up` without workers: the sweeps run in their own processes, as from a CLI."""
    root = Path(tempfile.mkdtemp(prefix="chexflow-faults-"))
    work = root / "work"
    ports = [network.free_port(), network.free_port()]
    args = ["up", "--workdir", str(work), "--prefect-port", str(ports[0]),
            "--mlflow-port", str(ports[1]), "--gpu-workers", "0", "--cpu-workers", "0"]  # fmt: skip
    result = subprocess.run([CHEXFLOW, *args], capture_output=True, text=True, timeout=300,
                            env=_clean_env(), check=False)  # fmt: skip
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        env = dict(
            line.removeprefix("export ").split("=", 1)
            for line in (work / "stack" / "env.sh").read_text().splitlines()
        )
        yield {"work": work, "env": env}
    finally:
        subprocess.run([CHEXFLOW, "down", "--workdir", str(work)], capture_output=True,
                       env=_clean_env(), timeout=120, check=False)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_sweeps_at_once_complete_without_locks_or_mixing(
    plain_stack: dict[str, Any], tiny_dataset: Path
) -> None:
    work, env = plain_stack["work"], _clean_env(**plain_stack["env"])
    sets = [arg for item in [*TINY, "train.epochs=1"] for arg in ("--set", item)]
    seeds = {"a": "0", "b": "1"}
    started = time.monotonic()
    processes = {}
    for name, seed in seeds.items():
        command = [CHEXFLOW, "sweep", "--data", str(tiny_dataset), "--fractions", "0.25,0.5",
                   "--seeds", seed, "--workdir", str(work), *sets]  # fmt: skip
        processes[name] = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    outputs = {name: p.communicate(timeout=900)[0] for name, p in processes.items()}
    took = time.monotonic() - started
    for name, process in processes.items():
        assert process.returncode == 0, outputs[name][-4000:]
    logs = "".join(p.read_text() for p in (work / "stack").glob("*.log"))
    assert "database is locked" not in "".join(outputs.values()) + logs

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("chexpert-label-fractions")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert all(r.info.status == "FINISHED" for r in runs), [
        (r.info.run_name, r.info.status) for r in runs
    ]
    sweeps = [r for r in runs if r.data.tags.get("chexflow.kind") == "sweep"]
    assert sorted(r.data.tags["chexflow.seeds"] for r in sweeps) == sorted(seeds.values())
    for sweep in sweeps:
        seed, sweep_id = sweep.data.tags["chexflow.seeds"], sweep.info.run_id
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep_id]
        finetunes = [r for r in children if r.data.tags["chexflow.kind"] == "finetune"]
        assert sorted(float(r.data.tags["chexflow.fraction"]) for r in finetunes) == [0.25, 0.5]
        assert {r.data.tags["chexflow.seed"] for r in finetunes} == {seed}
        assert all(r.data.tags["chexflow.sweep_id"] == sweep_id for r in finetunes)
        (comparison,) = [r for r in children if r.data.tags["chexflow.kind"] == "comparison"]
        compared = set(comparison.data.tags["chexflow.compared_runs"].split(","))
        own = {r.info.run_id for r in children if r.data.tags["chexflow.kind"] != "comparison"}
        assert {r.info.run_id for r in finetunes} <= compared <= own
    _assert_flow_runs_completed(env)
    print(f"\ntwo 2-fraction sweeps at once on one stack (SQLite): {took:.1f} s")


def _assert_flow_runs_completed(env: dict[str, str]) -> None:
    import asyncio

    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def read():
        async with get_client() as client:
            return await client.read_flow_runs()

    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
        flow_runs = asyncio.run(read())
    assert flow_runs and all(r.state and r.state.is_completed() for r in flow_runs), [
        (r.name, r.state_name) for r in flow_runs
    ]


# --- a workdir that cannot be written, or is full --------------------------------------------

runner = CliRunner()


def test_an_unwritable_workdir_is_refused_before_anything_starts(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    workdir = blocker / "work"  # as root, chmod would not stop writes; a file in the path does
    sets = [arg for item in TINY for arg in ("--set", item)]
    for command in (
        ["finetune", "--data", str(tiny_dataset), "--fraction", "0.5"],
        ["sweep", "--data", str(tiny_dataset), "--fractions", "0.5"],
    ):
        result = runner.invoke(app, [*command, "--workdir", str(workdir), *sets])
        assert result.exit_code == 2, result.output
        (line,) = result.output.strip().splitlines()
        assert "not writable" in line and str(workdir) in line
    assert blocker.read_text() == "not a directory"


def test_a_full_disk_is_refused_before_anything_starts(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=10 * 2**20))
    sets = [arg for item in TINY for arg in ("--set", item)]
    work = tmp_path / "work"
    args = ["finetune", "--data", str(tiny_dataset), "--fraction", "0.5", "--workdir", str(work)]
    result = runner.invoke(app, [*args, *sets])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "10 MiB free" in line and "--workdir" in line
    assert not (work / "mlflow.db").exists() and not (work / "prefect").exists()


@pytest.mark.slow
def test_the_flow_sizes_the_image_cache_before_its_mlflow_run_starts(
    prefect_api, tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chexflow.errors import ChexflowError
    from flows.finetune import finetune

    usage = shutil.disk_usage(tmp_path)
    room = pipeline.MIN_FREE_BYTES + 1000  # enough for the margin, not for 32 px images
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=room))
    config = load_config(None, [*TINY, "train.epochs=1"])
    with pytest.raises(ChexflowError, match=r"MiB free, a run needs about"):
        finetune(str(tiny_dataset), 0.5, 0, config, str(tmp_path / "work"))
    assert not (tmp_path / "work" / "mlflow.db").exists(), "no MLflow run was started"
    assert not (tmp_path / "work" / "checkpoints").exists()


# --- issue 16 §4: the temporary Prefect API ends with its command --------------------------


def _is_api(argv: list[bytes]) -> bool:
    """The temporary Prefect API's process (``flows.api_process``, or Prefect's uvicorn)."""
    return API_PROCESS_MODULE.encode() in argv or b"uvicorn" in argv


def _api_children(pid: int) -> list[tuple[int, int]]:
    """(pid, port) of the temporary Prefect API processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == pid and _is_api(argv):
            found.append((int(entry.name), int(argv[argv.index(b"--port") + 1])))
    return found


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_command_leaves_no_prefect_api_behind(
    tiny_dataset: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    # Before: the API (uvicorn, ~230 MB and a port) ran on under PID 1 after kill -9 / -15.
    env = _clean_env(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180")
    command = subprocess.Popen(
        _finetune_args(tiny_dataset, tmp_path / "work", epochs=50), env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not (api := _api_children(command.pid)) and time.monotonic() < deadline:
            assert command.poll() is None, "the command ended before its API started"
            time.sleep(0.2)
        ((api_pid, port),) = api
        command.send_signal(sig)
        command.wait(timeout=60)
        deadline = time.monotonic() + 20
        while not (_gone(api_pid) and _port_free(port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(api_pid), f"the temporary API (pid {api_pid}) outlived its command"
        assert _port_free(port)
    finally:
        if command.poll() is None:
            command.kill()


@pytest.mark.slow
def test_ctrl_c_in_the_terminal_ends_a_running_command_promptly(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    # Before: the API's process shared the command's process group, so a terminal's Ctrl-C
    # (SIGINT to the whole group) ended it too; the command then retried its last API calls
    # against a dead API: exit 1 after 22-231 s and 400-500 lines of tracebacks.
    command = subprocess.Popen(
        _finetune_args(tiny_dataset, tmp_path / "work", epochs=50), env=_clean_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []
    assert command.stdout is not None
    for line in command.stdout:  # until its fine-tune run trains
        lines.append(line)
        if "MLflow run" in line:
            break
    time.sleep(2)
    os.killpg(command.pid, signal.SIGINT)  # what the terminal sends: the whole group
    started = time.monotonic()
    rest, _ = command.communicate(timeout=120)
    output = "".join(lines) + rest
    assert command.returncode == 130, output[-3000:]
    assert time.monotonic() - started < 60, output[-3000:]
    assert "Connection refused" not in output and "Error logging to API" not in output
    assert _apis_started_for(f"CHEXFLOW_API_OWNER={command.pid}:") == []


def test_a_refused_command_stops_the_api_process_it_started(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    # The API's process starts with the command, before its input is checked
    # (flows.temporary_api): a refused command must stop it and leave no file behind.
    work = tmp_path / "work"
    command = subprocess.Popen(
        [*_finetune_args(tiny_dataset, work), "--set", "model.name=no_such_model"],
        env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen: set[int] = set()
    while command.poll() is None:
        seen.update(_apis_started_for(f"CHEXFLOW_API_OWNER={command.pid}:"))
        time.sleep(0.05)
    out, err = command.communicate()
    assert command.returncode == 2, out + err
    assert "model.name" in err.strip().splitlines()[-1]
    assert seen, "the API process was started with the command"
    # gone when the command is (it was still importing Prefect's server: ~5 s)
    assert _apis_started_for(f"CHEXFLOW_API_OWNER={command.pid}:") == []
    assert not work.exists()


@pytest.mark.slow
def test_an_api_that_does_not_come_up_stops_the_command_in_one_line(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    # Before: an API that exited with code 3 at start-up (a database it could not open)
    # was restarted without end: with %20 in the workdir the command hung for 8 minutes;
    # then it was restarted until the bound (an unwritable PREFECT_HOME: 200 s, 18 starts
    # and 3,729 lines of tracebacks, ending "did not answer within 180 s"). Now only a port
    # taken meanwhile starts another; this failure ends the command at once.
    # A database under a regular file: no one can create its folder (a missing folder is
    # created when the home's database is seeded from the template, flows/databases.py).
    (tmp_path / "a-file").write_text("not a folder")
    env = _clean_env(
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="15",
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{tmp_path}/a-file/x.db",
    )
    started = time.monotonic()
    result = subprocess.run(
        _finetune_args(tiny_dataset, tmp_path / "work"), env=env, capture_output=True,
        text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert time.monotonic() - started < 120
    # (the lines before it are the API process's own start-up error, on the shared stderr)
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(
        "error: the temporary Prefect API failed to start (exited with code 3; its error is above)"
    ), line
    assert result.stderr.count("Application startup failed") == 1, "the API was started once"
    time.sleep(2)  # the watcher's SIGTERM
    assert _apis_started_for(str(tmp_path)) == []


def _apis_started_for(marker: str) -> list[int]:
    """API processes whose environment mentions ``marker`` (whoever their parent is now)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            api = _is_api(argv) and not _gone(int(entry.name))
            if api and marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


# --- issue 16 §6: retry only what can succeed on retry ------------------------------------------


def _failed_on(call: Any) -> Any:
    from prefect.states import Failed

    try:
        call()
    except Exception as exc:
        return Failed(data=exc)
    raise AssertionError("expected the call to fail")


def test_validation_errors_fail_at_once_transient_faults_are_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Before: tracking.registered_model=radiology/chexpert was refused by MLflow at
    # registration, retried 3 times (14 s) as if transient, then failed with tracebacks.
    import socket
    import sqlite3

    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS
    from mlflow.utils.validation import _validate_model_name

    from chexflow.errors import ChexflowError
    from tasks.tracking import RETRY, retry_transient_only

    assert RETRY["retry_condition_fn"] is retry_transient_only
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]  # nothing listens once the socket is closed
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    unreachable = MlflowClient(f"http://127.0.0.1:{closed_port}")

    def exists() -> None:
        raise MlflowException("experiment 'x' already exists", RESOURCE_ALREADY_EXISTS)

    def locked() -> None:
        raise sqlite3.OperationalError("database is locked")

    def user_error() -> None:
        raise ChexflowError("data.image_size: too small")

    def http_error(status: int) -> Any:
        import httpx

        request = httpx.Request("POST", "http://127.0.0.1/api/flow_runs/")
        response = httpx.Response(status, request=request)
        return lambda: response.raise_for_status()

    never = {
        "invalid model name": lambda: _validate_model_name("radiology/chexpert"),
        "already exists": exists,
        "user error": user_error,
        "HTTP 409": http_error(409),
        "HTTP 422": http_error(422),
        "a bug": lambda: {}["missing"],
    }
    retried = {
        "connection refused": lambda: unreachable.get_experiment_by_name("x"),
        "database locked": locked,
        "HTTP 503": http_error(503),
        "socket": lambda: socket.create_connection(("127.0.0.1", closed_port), timeout=5),
    }
    for name, call in never.items():
        assert not retry_transient_only(None, None, _failed_on(call)), name
    for name, call in retried.items():
        assert retry_transient_only(None, None, _failed_on(call)), name


# --- issue 16 §2 and §4: run identity from content; checkpoints verified where read -------------


def _invert_jpegs(root: Path) -> None:
    import numpy as np
    from PIL import Image

    for path in root.rglob("*.jpg"):
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"))
        Image.fromarray(255 - pixels).save(path, quality=95)


@pytest.fixture(scope="module")
def trained_workdir(
    prefect_api, tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Any]:
    """One finished 2-epoch fine-tune (the runs below reuse or replace its training)."""
    from flows.finetune import finetune

    workdir = tmp_path_factory.mktemp("trained")
    config = load_config(None, [*TINY, "train.epochs=2", "tracking.register_models=false"])
    result = finetune(str(tiny_dataset), 0.5, 0, config, str(workdir))
    return workdir, result


def _run(workdir: Path, run_id: str) -> Any:
    return MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}").get_run(run_id)


@pytest.mark.slow
def test_each_epoch_metric_is_logged_once(trained_workdir) -> None:
    # Before: every epoch/* value was logged twice, live and again from the history.
    workdir, result = trained_workdir
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    for key in ("epoch/val_loss", "epoch/train_loss", "epoch/val_auroc_mean"):
        steps = [m.step for m in client.get_metric_history(result.run_id, key)]
        assert sorted(steps) == [1, 2], (key, steps)


@pytest.mark.slow
def test_inverted_images_are_another_training_and_another_evaluation_set(
    trained_workdir, tiny_dataset: Path, tmp_path: Path
) -> None:
    # Before: same training_fingerprint, reused_training=true, and compare accepted both
    # runs as scored on one evaluation set (the digest hashed paths only).
    from chexflow.errors import ChexflowError
    from flows.compare import compare
    from flows.finetune import finetune

    workdir, first = trained_workdir
    data = tmp_path / "CheXpert-v1.0-small"
    shutil.copytree(tiny_dataset, data)
    _invert_jpegs(data)
    config = load_config(None, [*TINY, "train.epochs=2", "tracking.register_models=false"])
    second = finetune(str(data), 0.5, 0, config, str(workdir))
    assert second.reused_training is False
    tags = [_run(workdir, r).data.tags for r in (first.run_id, second.run_id)]
    fingerprints = {t["chexflow.training_fingerprint"] for t in tags}
    assert len(fingerprints) == 2 and len({t["chexflow.eval_digest"] for t in tags}) == 2
    with pytest.raises(ChexflowError, match="different evaluation sets"):
        compare(run_ids=[first.run_id, second.run_id], config=config, workdir=str(workdir))


@pytest.mark.slow
def test_a_copied_workdir_reads_its_own_checkpoints_and_a_damaged_one_is_retrained(
    trained_workdir, tiny_dataset: Path, tmp_path: Path
) -> None:
    # Before: the training cache stored absolute paths (a copy read the original's
    # checkpoints), and a damaged best.pt was reused on every rerun and crashed evaluation
    # with a raw RuntimeError.
    from flows.finetune import finetune

    workdir, first = trained_workdir
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    config = load_config(None, [*TINY, "train.epochs=2", "tracking.register_models=false"])
    fingerprint = _run(workdir, first.run_id).data.tags["chexflow.training_fingerprint"]
    original = workdir / "checkpoints" / fingerprint / "best.pt"
    kept = original.read_bytes()
    original.write_bytes(b"damaged")  # the copy must not read this file
    try:
        reused = finetune(str(tiny_dataset), 0.5, 0, config, str(copy))
    finally:
        original.write_bytes(kept)
    assert reused.reused_training is True
    assert Path(reused.output_dir).is_relative_to(copy)

    damaged = copy / "checkpoints" / fingerprint / "best.pt"
    damaged.write_bytes(damaged.read_bytes()[:-100])
    again = finetune(str(tiny_dataset), 0.5, 0, config, str(copy))
    assert again.reused_training is False
    assert _run(copy, again.run_id).info.status == "FINISHED"
    from chexflow.checkpoints import digest_problem

    assert digest_problem(damaged) is None, "retrained: best.pt matches its digest again"


@pytest.mark.slow
def test_force_trains_from_scratch(trained_workdir, tiny_dataset: Path) -> None:
    # Before: --force (whose help says it retrains) resumed from last.pt in 0.25 s.
    from flows.finetune import finetune

    workdir, _first = trained_workdir
    config = load_config(None, [*TINY, "train.epochs=2", "tracking.register_models=false"])
    forced = finetune(str(tiny_dataset), 0.5, 0, config, str(workdir), force=True)
    tags = _run(workdir, forced.run_id).data.tags
    assert forced.reused_training is False
    assert tags.get("chexflow.resumed_from_epoch") in (None, "", "none"), tags


@pytest.mark.slow
def test_a_workdir_with_url_characters_keeps_every_database_inside(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    # Before: with "?" in the path Prefect and MLflow shared one SQLite file outside the
    # workdir; with "%20" the temporary API restarted 14 times and the command hung.
    parent = tmp_path / "a?b%20c#d e"
    workdir = parent / "work"
    env = _clean_env(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180")
    result = subprocess.run(
        _finetune_args(tiny_dataset, workdir, epochs=1), env=env, capture_output=True,
        text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in parent.iterdir()) == ["work"]
    # MLflow (3.x) creates the parent of the SQLite path as the URL spells it, escaped, and
    # puts nothing there: no database, no artifact lies outside the workdir.
    outside = [p for p in tmp_path.rglob("*") if not p.is_relative_to(parent)]
    assert [p for p in outside if not p.is_dir()] == []
    assert (workdir / "mlflow.db").is_file() and (workdir / "prefect" / "prefect.db").is_file()
    run_id = json.loads(result.stdout[result.stdout.index("{") :])["run_id"]
    from chexflow.tracking import default_tracking_uri

    client = MlflowClient(default_tracking_uri(workdir))
    assert client.get_run(run_id).info.status == "FINISHED"
    assert list((workdir / "mlartifacts").rglob("best.pt")), "artifacts inside the workdir"


@pytest.mark.parametrize("name", ["a?b", "a%20b", "a#b", "a b", "100%", "plain"])
def test_sqlite_urls_name_the_file_whatever_the_path_holds(tmp_path: Path, name: str) -> None:
    from sqlalchemy.engine import make_url

    from chexflow.files import sqlite_url
    from chexflow.tracking import default_tracking_uri

    path = tmp_path / name / "mlflow.db"
    for url in (sqlite_url(path), sqlite_url(path, "sqlite+aiosqlite")):
        parsed = make_url(url)
        assert parsed.database == str(path) and not parsed.query, url
    assert make_url(default_tracking_uri(tmp_path / name)).database == str(path)


@pytest.mark.slow
def test_a_disk_full_mid_training_fails_the_run_in_one_line(
    prefect_api, tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: the run stayed RUNNING and the command printed 2,836 lines of tracebacks.
    import errno

    from chexflow import checkpoints

    real_save = checkpoints.atomic_torch_save
    writes: list[Path] = []

    def fill_up(obj: Any, path: Path) -> str:
        writes.append(path)
        if len(writes) > 2:  # epoch 1's last.pt and best.pt are written; epoch 2 meets ENOSPC
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(obj, path)

    monkeypatch.setattr(checkpoints, "atomic_torch_save", fill_up)
    workdir = tmp_path / "work"
    sets = [arg for item in [*TINY, "train.epochs=3"] for arg in ("--set", item)]
    args = ["finetune", "--data", str(tiny_dataset), "--fraction", "0.5", "--workdir", str(workdir)]
    result = runner.invoke(app, [*args, *sets])
    assert result.exit_code == 2, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: no space left on the device of "), line
    assert "rerun to resume" in line and "Traceback" not in result.output
    (run,) = _finetune_runs(MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}"))
    assert run.info.status == "FAILED"
    assert run.data.tags["chexflow.failure"] == line.removeprefix("error: ")
    assert len(writes) == 3, "not retried"
