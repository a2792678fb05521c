"""Environment defaults of a chexflow process, applied by its entry point (never on import).

The entry points are the ``chexflow`` command (``flows/cli.py``) and the flows package a
Prefect worker imports (``flows/__init__.py``). A variable the user already set wins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

ENVIRONMENT_DEFAULTS: Mapping[str, str] = {
    # offline: no usage reports from MLflow or Prefect
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # MLflow's HTTP client retries 7 times with exponential backoff (~4 min) before a call
    # fails. Three retries (~12 s) let a short outage pass unnoticed and hand a longer one
    # to the Prefect task retries, which the UI shows; a hung server fails a call after 60 s.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    # One tqdm bar per artifact download/upload interleaves with Prefect's task log lines
    # and says nothing for the few small files a run moves.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def apply_environment_defaults() -> None:
    """Set each of ``ENVIRONMENT_DEFAULTS`` that the environment does not set already."""
    for key, value in ENVIRONMENT_DEFAULTS.items():
        os.environ.setdefault(key, value)
