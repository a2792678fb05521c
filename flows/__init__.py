"""Prefect flows: orchestration only; the work is in the chexflow library.

This package is the application's entry point for Prefect workers (they import
``flows/<name>.py``), so it sets the process's environment defaults here, before any
flow module imports MLflow.
"""

from chexflow.environment import apply_environment_defaults

apply_environment_defaults()
