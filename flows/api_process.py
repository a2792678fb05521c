"""The temporary Prefect API's process, started before its command has checked its input.

    python -m flows.api_process --port PORT      (started by ``flows.embedded``)

Importing Prefect's server takes ~5 s of CPU on an idle core (FastAPI, SQLAlchemy, the
API's models: docs/BENCHMARKS.md, section 9). This process does it while the command checks
its input, in a ``PREFECT_HOME`` that cannot be created, so it writes nothing. It then
reads one JSON line from stdin, ``{"env": {...}}``: the environment Prefect's
``SubprocessASGIServer`` would give the API (the workdir's home and database, the
embedded-mode settings), and serves Prefect's API app with uvicorn on ``127.0.0.1:PORT``, as
that server's ``uvicorn --factory prefect.server.api.server:create_app`` does. A closed
stdin (the command was refused, or has ended) ends it with code 0 before it has touched a
file. Exit code 3 is uvicorn's start-up failure: the command starts another on a new port
if the port was taken meanwhile, and reports the failure otherwise. It runs in its own
session, so a Ctrl-C in the terminal does not reach it; the command stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

# A home whose parent does not exist: Prefect's import tries to create the home (one
# mkdir, no parents) and only warns when it cannot.
_NOWHERE = Path(tempfile.gettempdir()) / f"chexflow-api-{os.getpid()}-absent" / "home"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.api_process")
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    os.environ["PREFECT_HOME"] = str(_NOWHERE)
    warnings.filterwarnings("ignore", message="Failed to create the Prefect home directory")
    import prefect.server.api.server  # noqa: F401 - the slow part, done while the CLI checks
    import uvicorn
    from prefect.context import refresh_global_settings_context

    line = sys.stdin.readline()
    if not line.strip():
        return 0  # the command ended or was refused: nothing was started
    order = json.loads(line)
    os.environ.clear()
    os.environ.update(order["env"])
    refresh_global_settings_context()  # the settings of the environment just received
    uvicorn.run(
        "prefect.server.api.server:create_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        log_level="error",
        lifespan="on",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
