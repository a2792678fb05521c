"""`chexflow deploy`, `up`, `down`, `status`: the local stack and Prefect deployments.

``register(app)`` adds the commands to the main CLI (``flows/cli.py``); both take their
shared options and error handling from ``flows/cli_common.py``. The supervisor itself is
``deployments/stack``.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from chexflow.errors import ChexflowError
from flows.cli_common import DEFAULT_WORKDIR, WorkdirOpt, configure_environment, user_errors

DbOpt = Annotated[
    str,
    typer.Option(
        "--db",
        help="sqlite, postgres (a local PostgreSQL server in the workdir), or "
        "postgresql://USER:PASSWORD@HOST:PORT (databases prefect and mlflow on it).",
    ),
]


def register(app: typer.Typer) -> None:
    """Add the stack and deployment commands to ``app``."""

    @app.command()
    @user_errors
    def deploy(
        workdir: WorkdirOpt = DEFAULT_WORKDIR,
        data: Annotated[
            Path | None, typer.Option("--data", help="Dataset of the scheduled sweep.")
        ] = None,
        kubernetes: Annotated[
            bool, typer.Option(help="Also the Kubernetes GPU pool and its deployment.")
        ] = False,
    ) -> None:
        """Create the work pools and apply the deployments to the server at PREFECT_API_URL."""
        configure_environment(workdir)
        from deployments.deploy import deploy as apply

        done = apply(workdir, data, kubernetes, echo=typer.echo)
        typer.echo(f"work pools: {', '.join(done['pools'])}")
        typer.echo(f"deployments applied to {done['api']}: {', '.join(done['deployments'])}")
        typer.echo(f"Then: trigger runs from the Prefect UI ({done['api'].removesuffix('/api')})")

    @app.command()
    @user_errors
    def up(
        workdir: WorkdirOpt = DEFAULT_WORKDIR,
        prefect_port: Annotated[int, typer.Option(help="Prefect server (API + UI).")] = 4200,
        mlflow_port: Annotated[int, typer.Option(help="MLflow server (API + UI).")] = 5000,
        gpu_workers: Annotated[
            int, typer.Option(min=0, max=64, help="Process workers on chexflow-gpu.")
        ] = 1,
        cpu_workers: Annotated[
            int, typer.Option(min=0, max=64, help="Process workers on chexflow-cpu.")
        ] = 1,
        gpus: Annotated[
            str | None,
            typer.Option(help="CUDA devices, e.g. 0,1: one GPU worker pinned to each."),
        ] = None,
        db: DbOpt = "sqlite",
        pg_port: Annotated[int, typer.Option(help="Local PostgreSQL (--db postgres).")] = 5433,
        timeout: Annotated[float, typer.Option(help="Seconds to wait for each service.")] = 180,
        auth: Annotated[
            bool,
            typer.Option(
                help="MLflow basic auth and a Prefect API auth string; generated credentials "
                "go to <workdir>/stack/env.sh (0600)."
            ),
        ] = False,
    ) -> None:
        """Start a Prefect server, an MLflow server and process workers on loopback."""
        from deployments import stack

        settings = stack.StackSettings(
            workdir=workdir,
            prefect_port=prefect_port,
            mlflow_port=mlflow_port,
            gpu_workers=gpu_workers,
            cpu_workers=cpu_workers,
            gpus=tuple(g.strip() for g in gpus.split(",") if g.strip()) if gpus else (),
            db=_check_db(db),
            pg_port=pg_port,
            timeout_s=timeout,
            auth=auth,
        )
        state = stack.up(settings, echo=typer.echo)
        _print_ready(state, workdir)

    @app.command()
    @user_errors
    def ui(
        workdir: WorkdirOpt = DEFAULT_WORKDIR,
        port: Annotated[int, typer.Option(help="Port of the MLflow UI on 127.0.0.1.")] = 5000,
    ) -> None:
        """Browse the workdir's MLflow runs: a lean MLflow server on loopback (Ctrl-C stops)."""
        from deployments.stack.ui import exec_ui

        exec_ui(workdir, port, echo=typer.echo)

    @app.command()
    @user_errors
    def down(workdir: WorkdirOpt = DEFAULT_WORKDIR) -> None:
        """Stop what `chexflow up` started in this workdir (and nothing else)."""
        from deployments import stack

        for line in stack.down(workdir):
            typer.echo(line)

    @app.command()
    @user_errors
    def status(
        workdir: WorkdirOpt = DEFAULT_WORKDIR,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
        env: Annotated[bool, typer.Option("--env", help="Only the export lines.")] = False,
    ) -> None:
        """What the stack in this workdir runs: pids, health, ports, memory."""
        from deployments import stack

        report = stack.status(workdir)
        if env:
            if not report["running"]:
                raise ChexflowError(f"no stack runs in {report['workdir']}: `chexflow up`")
            typer.echo(_exports(report["env"]))
        elif as_json:
            report = {**report, "env": stack.redact_env(report.get("env", {}))}
            typer.echo(json.dumps(report, indent=2))
        else:
            typer.echo(_format_status(report))


def _check_db(db: str) -> str:
    if db in ("sqlite", "postgres") or db.startswith(("postgresql://", "postgres://")):
        return db
    raise ChexflowError(f"--db {db!r}: expected sqlite, postgres or postgresql://...")


def _exports(env: dict[str, str], secrets: bool = True) -> str:
    """``export`` lines; without ``secrets`` the credentials are left out (never printed)."""
    from deployments.stack.credentials import SECRET_ENV

    return "\n".join(
        f"export {key}={shlex.quote(value)}"
        for key, value in env.items()
        if secrets or key not in SECRET_ENV
    )


def _print_ready(state: Any, workdir: Path) -> None:
    from deployments.stack.credentials import SECRET_ENV
    from deployments.stack.state import stack_dir

    urls = {s.name: s.url for s in state.services if s.url}
    typer.echo(f"ready in {state.ready_s} s" if state.ready_s else "running")
    typer.echo(f"  Prefect UI: {urls.get('prefect-server')}")
    typer.echo(f"  MLflow UI:  {urls.get('mlflow-server')}")
    typer.echo(f"  logs, pids: {stack_dir(workdir)}")
    typer.echo("Point clients at the stack (or `source` the env.sh beside the logs):")
    typer.echo(_exports(state.env, secrets=False))
    if any(key in state.env for key in SECRET_ENV):
        env_file = stack_dir(workdir) / "env.sh"
        typer.echo(f"Credentials are not printed: `source {env_file}` (mode 600) for them.")
    where = f"--workdir {shlex.quote(str(workdir))}"
    typer.echo("Next:")
    typer.echo(f"  chexflow deploy {where}    # then trigger runs from the Prefect UI")
    typer.echo(f"  chexflow status {where}    # services and worker heartbeats")
    typer.echo(f"  chexflow down {where}      # stop everything")


def _heartbeat(worker: dict[str, Any]) -> str:
    age = worker.get("heartbeat_age_s")
    return "no heartbeat" if age is None else f"last heartbeat {age:.0f} s ago"


def _format_status(report: dict[str, Any]) -> str:
    if not report["services"]:
        return f"no stack was started in {report['workdir']}"
    lines = [f"stack in {report['workdir']} (db {report['db']}):"]
    for row in report["services"]:
        health = {True: "healthy", False: "unhealthy", None: ""}[row["healthy"]]
        if "worker" in row:  # what the Prefect API says of the worker
            health = row["worker"]["status"].lower()
        state = f"pid {row['pid']}, {row['rss_mb']:.0f} MB" if row["alive"] else "not running"
        where = f" {row['url']}" if row["url"] else ""
        lines.append(f"  {row['name']:<24} {state:<24} {health:<9}{where}")
        if "worker" in row:
            lines[-1] += f" {row['worker']['pool']}, {_heartbeat(row['worker'])}"
    lines.append(f"  total resident memory: {report['rss_mb']:.0f} MB")
    if report["running"]:
        lines.append(_exports(report["env"], secrets=False))
    return "\n".join(lines)
