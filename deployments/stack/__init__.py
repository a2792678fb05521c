"""The local stack behind `chexflow up` / `down` / `status`: services as child processes.

`up` starts, on loopback, a Prefect server, an MLflow server (SQLite or PostgreSQL
backend, artifacts under the workdir) and process workers for the `chexflow-gpu` and
`chexflow-cpu` work pools, each in its own session so that `down` can stop the whole
process tree. With ``auth`` the MLflow server runs MLflow's basic-auth app and the Prefect
server requires its API auth string; the generated credentials live in
``<workdir>/stack/auth/`` (0600) and reach clients through ``env.sh`` (0600), never a log.
What was started is recorded in ``<workdir>/stack/state.json``; `down` stops only that.
Readiness is polled (health endpoints, registered workers), never slept.

Modules: ``lifecycle`` (up/down/status), ``commands`` (server and worker command lines),
``state`` (settings and state.json), ``processes`` (spawn/stop process trees), ``network``
(ports, health), ``postgres``, ``credentials``. None imports Prefect: the stack runs the
`prefect` and `mlflow` executables.
"""

from deployments.stack.credentials import redact_env
from deployments.stack.lifecycle import down, status, up
from deployments.stack.state import StackSettings, StackState

__all__ = ["StackSettings", "StackState", "down", "redact_env", "status", "up"]
