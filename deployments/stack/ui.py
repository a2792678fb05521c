"""`chexflow ui`: the MLflow UI of a workdir, as lean as the stack's own MLflow server.

``mlflow ui`` with its defaults starts ~15 processes (4 web workers, job runners) and
~3.6 GB; the stack's command line (one worker, job execution off, loopback) serves the
same pages in ~0.5 GB. The process replaces itself with the server (``exec``): Ctrl-C stops
it, and nothing stays behind.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from chexflow.errors import ChexflowError
from chexflow.tracking import default_tracking_uri
from deployments.stack.commands import base_env, mlflow_server_command
from deployments.stack.network import HOST, check_ports
from deployments.stack.state import StackSettings


def ui_command(workdir: Path, port: int) -> tuple[list[str], dict[str, str], str]:
    """(command line, environment, URL) of the MLflow UI over the workdir's runs.

    The store is the one the runs were written to: ``MLFLOW_TRACKING_URI`` when it names a
    database, else the workdir's SQLite file.

    Raises:
        ChexflowError: ``MLFLOW_TRACKING_URI`` names a server (it has its own UI), there is
            no store in the workdir yet, or the port is taken.
    """
    uri = default_tracking_uri(workdir)
    if uri.startswith(("http://", "https://", "databricks")):
        raise ChexflowError(
            f"MLFLOW_TRACKING_URI is a server ({uri}): open it in a browser, it has the UI"
        )
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise ChexflowError(
            f"no MLflow store in {Path(workdir).resolve()} yet: run `chexflow demo` or a "
            "sweep with this --workdir first"
        )
    check_ports({"--port": port})
    settings = StackSettings(workdir=Path(workdir), mlflow_port=port)
    # The store URI may hold a database password: in the environment, not on the command line
    # (`ps` shows that to every local user), as the stack's own server gets it.
    env = {**base_env(Path(workdir)), "MLFLOW_BACKEND_STORE_URI": uri}
    return mlflow_server_command(settings), env, f"http://{HOST}:{port}"


def exec_ui(workdir: Path, port: int, echo: Callable[[str], None] = print) -> None:
    """Say where the UI will be, then become the MLflow server (never returns)."""
    command, env, url = ui_command(workdir, port)
    echo(f"MLflow UI: {url}  (store {default_tracking_uri(workdir)}; Ctrl-C stops it)")
    sys.stdout.flush()
    os.execve(command[0], command, env)
