"""What every `chexflow` command shares: options, the environment, one-line user errors."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from chexflow.environment import apply_environment_defaults
from chexflow.errors import ChexflowError
from chexflow.files import sqlite_url

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_WORKDIR = Path(".chexflow")
WorkdirOpt = Annotated[
    Path, typer.Option("--workdir", help="Where chexflow keeps MLflow, caches and outputs.")
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML config file.")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config key: section.key=value.")
]


def configure_environment(workdir: Path) -> None:
    """Offline switches and MLflow client defaults, and a Prefect home inside the workdir
    unless a server (``PREFECT_API_URL``) or a home is configured."""
    apply_environment_defaults()
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    if "PREFECT_API_URL" not in os.environ and "PREFECT_HOME" not in os.environ:
        home = (workdir / "prefect").resolve()
        os.environ["PREFECT_HOME"] = str(home)
        # Prefect builds its default URL with an f-string: a "?", "#" or "%20" in the path
        # would put the database elsewhere. An escaped URL keeps it in the workdir.
        if not any(f"PREFECT_{p}_DATABASE_CONNECTION_URL" in os.environ for p in ("SERVER", "API")):
            url = sqlite_url(home / "prefect.db", "sqlite+aiosqlite")
            os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = url


def _is_flow_parameter_error(exc: Exception) -> bool:
    """A flow refused its parameters (Prefect's ``ParameterTypeError``). Prefect is imported
    only here: a flow raised the error, so it is loaded already."""
    from prefect.exceptions import ParameterTypeError

    return isinstance(exc, ParameterTypeError)


def _discard_waiting_api() -> None:
    """A refused command stops the API process it started for nothing (it wrote nothing)."""
    from flows.temporary_api import discard_waiting

    discard_waiting()


def user_errors(func: F) -> F:
    """Turn ChexflowError (and invalid flow parameters) into one line on stderr and exit 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ChexflowError as exc:
            _discard_waiting_api()
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except Exception as exc:
            if _is_flow_parameter_error(exc):
                typer.echo(f"error: {str(exc).splitlines()[0]}", err=True)
                raise typer.Exit(2) from None
            raise

    return wrapper  # type: ignore[return-value]


def parse_list(text: str, kind: type, option: str) -> list[Any]:
    """``"0.01,0.1"`` → ``[0.01, 0.1]`` with a one-line error naming the option."""
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ChexflowError(
            f"{option} {text!r}: expected comma-separated {kind.__name__}s"
        ) from None
    if not values:
        raise ChexflowError(f"{option} is empty")
    return values
