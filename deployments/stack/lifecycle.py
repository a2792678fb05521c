"""`up`, `down` and `status`: start the stack in order, wait for readiness, stop it all."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chexflow.errors import ChexflowError
from chexflow.files import sqlite_url
from deployments.stack.commands import (
    CPU_POOL,
    GPU_POOL,
    base_env,
    client_env,
    mlflow_server_command,
    prefect_server_command,
    repo_root,
    worker_command,
    worker_specs,
)
from deployments.stack.credentials import ensure_credentials
from deployments.stack.network import (
    HOST,
    check_ports,
    http_ok,
    wait_until,
    worker_health,
    workers_online,
)
from deployments.stack.postgres import (
    ensure_databases,
    postgres_ready,
    redact,
    require_psycopg,
    split_postgres_url,
    start_postgres,
)
from deployments.stack.processes import (
    STOP_GRACE_S,
    Service,
    is_running,
    process_tree,
    reap,
    rss_mb,
    spawn,
    stop,
)
from deployments.stack.state import StackSettings, StackState, state_path, write_env_file


def require_flask_wtf() -> None:
    import importlib.util

    if importlib.util.find_spec("flask_wtf") is None:
        raise ChexflowError(
            "--auth runs MLflow's basic-auth app, which needs Flask-WTF: "
            "pip install 'chexflow[auth]'"
        )


def up(settings: StackSettings, echo: Callable[[str], None] = print) -> StackState:
    """Start the stack, wait until every part answers, and record it."""
    existing = StackState.load(state_path(settings.workdir))
    if existing:
        alive = [s for s in existing.services if is_running(s.pid, s.start_ticks)]
        if alive and len(alive) == len(existing.services):
            if existing.auth != settings.auth:
                raise ChexflowError(
                    f"the stack in {settings.directory} runs "
                    f"{'with' if existing.auth else 'without'} --auth: `chexflow down` first"
                )
            echo(f"already running in {settings.directory}")
            return existing
        if alive:
            names = ", ".join(s.name for s in alive)
            raise ChexflowError(
                f"part of a stack runs in {settings.directory} ({names}): run `chexflow down` first"
            )
    if settings.db not in ("sqlite", "postgres"):
        split_postgres_url(settings.db)  # refuses a malformed URL before anything starts
    ports = {"--prefect-port": settings.prefect_port, "--mlflow-port": settings.mlflow_port}
    if settings.db == "postgres":
        ports["--pg-port"] = settings.pg_port
    if len(set(ports.values())) != len(ports):
        raise ChexflowError(f"ports must differ: {ports}")
    check_ports(ports)
    if settings.db != "sqlite":
        require_psycopg()
    if settings.auth:
        require_flask_wtf()
    state = StackState(
        str(Path(settings.workdir).resolve()), time.time(), settings.db, auth=settings.auth
    )
    t0 = time.monotonic()
    try:
        _start_all(settings, state, echo)
    except BaseException:
        for line in down(settings.workdir):
            echo(f"  cleanup: {line}")
        raise
    state.ready_s = round(time.monotonic() - t0, 2)
    state.save(state_path(settings.workdir))
    write_env_file(settings.workdir, state.env)
    return state


def _start_all(settings: StackSettings, state: StackState, echo: Callable[[str], None]) -> None:
    directory, path = settings.directory, state_path(settings.workdir)
    directory.mkdir(parents=True, exist_ok=True)
    env = base_env(settings.workdir)
    prefect_db, mlflow_db = _databases(settings, state, env, echo)
    state.env = client_env(settings)
    api, mlflow_url = state.env["PREFECT_API_URL"], state.env["MLFLOW_TRACKING_URI"]
    mlflow_env = dict(env)
    server_env = {
        **env,
        "PREFECT_SERVER_API_PORT": str(settings.prefect_port),
        "PREFECT_UI_API_URL": api,
        "PREFECT_API_URL": api,
    }
    if settings.auth:
        creds = ensure_credentials(directory)
        state.env.update(creds.client_env())
        server_env["PREFECT_SERVER_API_AUTH_STRING"] = creds.prefect_auth_string
        server_env["PREFECT_API_AUTH_STRING"] = creds.prefect_auth_string
        mlflow_env["MLFLOW_AUTH_CONFIG_PATH"] = str(creds.ini)
        mlflow_env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = creds.flask_secret_key
        mlflow_env["MLFLOW_AUTH_ADMIN_PASSWORD"] = creds.mlflow_password
    if prefect_db:
        server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = prefect_db
    echo(f"starting prefect server and mlflow server (logs in {directory})...")
    prefect = spawn(
        "prefect-server",
        prefect_server_command(settings),
        server_env,
        directory / "prefect-server.log",
        cwd=directory,
        port=settings.prefect_port,
        url=api.removesuffix("/api"),
    )
    state.services.append(prefect)
    mlflow = spawn(
        "mlflow-server",
        mlflow_server_command(settings),
        {**mlflow_env, "MLFLOW_BACKEND_STORE_URI": mlflow_db},  # not on the command line
        directory / "mlflow-server.log",
        cwd=directory,
        port=settings.mlflow_port,
        url=mlflow_url,
    )
    state.services.append(mlflow)
    state.save(path)
    took = wait_until(
        lambda: http_ok(f"{api}/health"), [prefect], "Prefect server", settings.timeout_s
    )
    echo(f"prefect server healthy after {took:.1f} s: {prefect.url}")
    took = wait_until(
        lambda: http_ok(f"{mlflow_url}/health"), [mlflow], "MLflow server", settings.timeout_s
    )
    echo(f"mlflow server healthy {took:.1f} s later: {mlflow_url}")
    _start_workers(settings, state, env, echo)


def _databases(
    settings: StackSettings, state: StackState, env: dict[str, str], echo: Callable[[str], None]
) -> tuple[str | None, str]:
    """(Prefect database URL or None for its SQLite default, MLflow backend store URI)."""
    if settings.db == "sqlite":
        return None, sqlite_url(Path(settings.workdir) / "mlflow.db")
    if settings.db == "postgres":
        service, base = start_postgres(settings, env)
        state.services.append(service)
        state.save(state_path(settings.workdir))
        took = wait_until(lambda: postgres_ready(base), [service], "PostgreSQL", settings.timeout_s)
        echo(f"postgres ready after {took:.1f} s on {HOST}:{settings.pg_port}")
        maintenance = "postgres"
    else:
        base, maintenance = split_postgres_url(settings.db)
        if not postgres_ready(base, maintenance):
            raise ChexflowError(f"--db {redact(settings.db)}: cannot connect")
    ensure_databases(base, maintenance)
    # Explicit drivers: asyncpg for Prefect, psycopg 3 for MLflow's SQLAlchemy.
    prefect = base.replace("postgresql://", "postgresql+asyncpg://", 1)
    mlflow = base.replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{prefect}/prefect", f"{mlflow}/mlflow"


def _start_workers(
    settings: StackSettings,
    state: StackState,
    env: dict[str, str],
    echo: Callable[[str], None] = print,
) -> None:
    """One process worker per spec; the server creates a pool on its first heartbeat."""
    api = state.env["PREFECT_API_URL"]
    worker_env = {
        **env,
        **state.env,
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "CHEXFLOW_REPO": str(repo_root()),
    }
    names: dict[str, set[str]] = {}
    for name, pool, extra in worker_specs(settings):
        service = spawn(
            f"worker:{name}",
            worker_command(name, pool),
            {**worker_env, **extra},
            settings.directory / f"worker-{name}.log",
            cwd=repo_root(),
        )
        state.services.append(service)
        names.setdefault(pool, set()).add(name)
    state.save(state_path(settings.workdir))
    workers = [s for s in state.services if s.name.startswith("worker:")]
    if not workers:
        return
    pools = ", ".join(f"{len(n)} on {p}" for p, n in names.items())
    echo(f"starting process workers ({pools}), waiting for their first heartbeat...")
    auth_string = state.env.get("PREFECT_API_AUTH_STRING")
    took = wait_until(
        lambda: all(workers_online(api, p, n, auth_string) for p, n in names.items()),
        workers,
        "workers",
        settings.timeout_s,
    )
    echo(f"workers online after {took:.1f} s")


def down(workdir: Path, grace_s: float = STOP_GRACE_S) -> list[str]:
    """Stop what `up` recorded, newest first; say what happened to each service."""
    path = state_path(workdir)
    state = StackState.load(path)
    if state is None or not state.services:
        return [f"nothing to stop: no stack was started in {Path(workdir).resolve()}"]
    lines = [stop(service, grace_s) for service in reversed(state.services)]
    reap(state.services)
    path.unlink(missing_ok=True)
    return lines


def status(workdir: Path) -> dict[str, Any]:
    """What runs: each service's pid, liveness, health, port and resident memory."""
    state = StackState.load(state_path(workdir))
    if state is None:
        return {"running": False, "workdir": str(Path(workdir).resolve()), "services": []}
    rows = []
    for service in state.services:
        alive = is_running(service.pid, service.start_ticks)
        tree = process_tree(service.pid) if alive else []
        rows.append(
            {
                "name": service.name,
                "pid": service.pid,
                "alive": alive,
                "port": service.port,
                "url": service.url,
                "healthy": _healthy(service) if alive else False,
                "processes": len(tree),
                "rss_mb": round(rss_mb(tree), 1),
                "log": service.log,
            }
        )
    _add_worker_health(rows, state)
    return {
        "running": any(r["alive"] for r in rows),
        "workdir": state.workdir,
        "db": redact(state.db),
        "ready_s": state.ready_s,
        "env": state.env,
        "services": rows,
        "rss_mb": round(sum(r["rss_mb"] for r in rows), 1),
    }


def _add_worker_health(rows: list[dict[str, Any]], state: StackState) -> None:
    """Each worker row gets ``worker`` (pool, status, heartbeat) from the Prefect API, and
    ``healthy`` = the server sees it ONLINE; a worker the API does not know is unhealthy."""
    workers = [r for r in rows if r["name"].startswith("worker:")]
    api = state.env.get("PREFECT_API_URL")
    if not workers or not api:
        return
    known = worker_health(api, [GPU_POOL, CPU_POOL], state.env.get("PREFECT_API_AUTH_STRING"))
    for row in workers:
        name = row["name"].removeprefix("worker:")
        pool = GPU_POOL if "-gpu-" in name else CPU_POOL
        row["worker"] = known.get(
            name, {"pool": pool, "status": "UNKNOWN", "last_heartbeat": None,
                   "heartbeat_age_s": None}
        )  # fmt: skip
        row["healthy"] = row["alive"] and row["worker"]["status"] == "ONLINE"


def _healthy(service: Service) -> bool | None:
    if service.name == "prefect-server" and service.url:
        return http_ok(f"{service.url}/api/health")
    if service.name == "mlflow-server" and service.url:
        return http_ok(f"{service.url}/health")
    return None
