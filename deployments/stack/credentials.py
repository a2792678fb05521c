"""The `--auth` stack's generated credentials: private files, reused across restarts."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chexflow.files import sqlite_url

AUTH_USER = "admin"
# Client variables that hold credentials: written to env.sh (0600), never printed by `up`.
SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING")


@dataclass(frozen=True)
class Credentials:
    """Generated once per workdir; reused when the stack restarts (the auth DB keeps them)."""

    mlflow_password: str
    flask_secret_key: str
    prefect_auth_string: str
    ini: Path

    def client_env(self) -> dict[str, str]:
        return {
            "MLFLOW_TRACKING_USERNAME": AUTH_USER,
            "MLFLOW_TRACKING_PASSWORD": self.mlflow_password,
            "PREFECT_API_AUTH_STRING": self.prefect_auth_string,
        }


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (mode 0600 from creation on)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)


def ensure_credentials(directory: Path) -> Credentials:
    """The stack's credentials in ``<directory>/auth/`` (0700; files 0600), made on first use.

    MLflow: basic auth with user ``admin`` and a generated password, its users in
    ``auth/basic_auth.db`` (MLflow needs an absolute ``database_uri`` and a static Flask
    secret key). Prefect: ``admin:<generated>`` as the server's API auth string.
    """
    auth = directory / "auth"
    auth.mkdir(parents=True, exist_ok=True)
    auth.chmod(0o700)

    def secret(name: str, make: Callable[[], str]) -> str:
        path = auth / name
        if not path.is_file():
            write_private(path, make())
        return path.read_text().strip()

    password = secret("mlflow-admin-password", lambda: secrets.token_urlsafe(24))
    key = secret("mlflow-flask-secret-key", lambda: secrets.token_hex(32))
    prefect = secret("prefect-auth-string", lambda: f"{AUTH_USER}:{secrets.token_urlsafe(24)}")
    ini = auth / "basic_auth.ini"
    write_private(
        ini,
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        # escaped for the URL, then "%" doubled for configparser's interpolation
        f"database_uri = {sqlite_url(auth / 'basic_auth.db').replace('%', '%%')}\n"
        f"admin_username = {AUTH_USER}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
    )
    return Credentials(password, key, prefect, ini)


def redact_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with credential values replaced by ``***``."""
    return {k: "***" if k in SECRET_ENV else v for k, v in env.items()}
