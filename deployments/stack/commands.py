"""The command lines and environments of the stack's servers and workers."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

from chexflow.errors import ChexflowError
from deployments.stack.network import HOST
from deployments.stack.state import StackSettings, stack_dir

OFFLINE_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}
GPU_POOL = "chexflow-gpu"
CPU_POOL = "chexflow-cpu"


def repo_root() -> Path:
    """The source checkout holding flows/ and deployments/ (workers import flows from it)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "flows" / "finetune.py").is_file():
        raise ChexflowError(
            f"{root} has no flows/: deployments and workers need a source checkout of chexflow"
        )
    return root


def venv_executable(name: str) -> str:
    """An executable installed beside this Python (the venv's `prefect`, `mlflow`)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise ChexflowError(f"`{name}` is not installed beside {sys.executable}")
    return found


def base_env(workdir: Path) -> dict[str, str]:
    """The environment of every started process: offline switches, no inherited servers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(OFFLINE_ENV)
    env["PREFECT_HOME"] = str(stack_dir(workdir) / "prefect")
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    return env


def client_env(settings: StackSettings) -> dict[str, str]:
    """What a user (and every worker) exports to use the stack."""
    return {
        "PREFECT_API_URL": f"http://{HOST}:{settings.prefect_port}/api",
        "MLFLOW_TRACKING_URI": f"http://{HOST}:{settings.mlflow_port}",
    }


def prefect_server_command(settings: StackSettings) -> list[str]:
    return [
        venv_executable("prefect"),
        "server",
        "start",
        "--host",
        HOST,
        "--port",
        str(settings.prefect_port),
    ]


def mlflow_server_command(settings: StackSettings, backend_uri: str | None = None) -> list[str]:
    """The MLflow server's command line. The stack's backend store URI, which may hold the
    PostgreSQL password, is not on it (``ps`` shows every local user the command line):
    ``up`` passes ``MLFLOW_BACKEND_STORE_URI`` in the server's environment. A
    ``backend_uri`` given here (one without a secret) goes on the command line."""
    artifacts = Path(settings.workdir).resolve() / "mlartifacts"
    store = ["--backend-store-uri", backend_uri] if backend_uri else []
    auth = ["--app-name", "basic-auth"] if settings.auth else []
    return [
        venv_executable("mlflow"),
        "server",
        "--host",
        HOST,
        "--port",
        str(settings.mlflow_port),
        "--workers",
        "1",
        *store,
        "--artifacts-destination",
        str(artifacts),
        *auth,
    ]


def worker_specs(settings: StackSettings) -> list[tuple[str, str, dict[str, str]]]:
    """(name, pool, extra env) of each worker: one GPU worker per GPU, one run at a time."""
    host = socket.gethostname().split(".")[0]
    specs = []
    gpu_count = len(settings.gpus) or settings.gpu_workers
    for i in range(gpu_count):
        extra = {"CUDA_VISIBLE_DEVICES": settings.gpus[i]} if settings.gpus else {}
        specs.append((f"{host}-gpu-{i}", GPU_POOL, extra))
    specs += [(f"{host}-cpu-{i}", CPU_POOL, {}) for i in range(settings.cpu_workers)]
    return specs


def worker_command(name: str, pool: str) -> list[str]:
    limit = ["--limit", "1"] if pool == GPU_POOL else []
    return [
        venv_executable("prefect"),
        "worker",
        "start",
        "--pool",
        pool,
        "--type",
        "process",
        "--name",
        name,
        *limit,
    ]
