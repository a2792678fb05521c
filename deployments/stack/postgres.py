"""PostgreSQL for `--db postgres`: a private server on loopback, or the user's own by URL."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

from chexflow.errors import ChexflowError
from deployments.stack.network import HOST
from deployments.stack.processes import Service, spawn
from deployments.stack.state import StackSettings

PG_USER = "chexflow"
PG_DATABASES = ("prefect", "mlflow")


def postgres_bin() -> Path:
    """The directory of PostgreSQL's server binaries (Debian keeps them off PATH)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not candidates:
        raise ChexflowError(
            "--db postgres needs the PostgreSQL server (Debian: apt-get install postgresql), "
            "or pass --db postgresql://USER:PASSWORD@HOST:PORT"
        )
    return candidates[-1].parent


def require_psycopg() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise ChexflowError(
            "MLflow on PostgreSQL needs psycopg: pip install 'chexflow[postgres]'"
        ) from None


def _postgres_user() -> str | None:
    """Who runs the server: postgres refuses root, so root switches to `postgres`."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ChexflowError(
            "PostgreSQL refuses to run as root and there is no `postgres` user: "
            "install Debian's postgresql package or run chexflow up as another user"
        ) from None
    return "postgres"


def _check_reachable(path: Path, user: str) -> None:
    """Every parent of ``path`` must be searchable by ``user`` (pytest tmp dirs are 0700)."""
    entry = pwd.getpwnam(user)
    groups = {entry.pw_gid, *os.getgrouplist(user, entry.pw_gid)}
    for parent in [path, *path.parents]:
        if not parent.exists():
            continue
        st = parent.stat()
        if st.st_uid == entry.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            raise ChexflowError(
                f"user {user} cannot enter {parent} (mode {oct(st.st_mode & 0o777)}): "
                "choose a --workdir it can reach for --db postgres"
            )


def _chown(path: Path, user: str | None) -> None:
    if user:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def init_postgres(directory: Path) -> tuple[Path, str, str | None]:
    """initdb once under ``directory`` (data dir, password); return them and the OS user."""
    user = _postgres_user()
    directory.mkdir(parents=True, exist_ok=True)
    if user:
        _check_reachable(directory, user)
    _chown(directory, user)
    directory.chmod(0o700)
    data, password_file = directory / "data", directory / "password"
    if not password_file.exists():
        password_file.write_text(secrets.token_urlsafe(24))
        password_file.chmod(0o600)
        _chown(password_file, user)
    password = password_file.read_text().strip()
    if not (data / "PG_VERSION").exists():
        result = subprocess.run(
            [
                str(postgres_bin() / "initdb"),
                "-D",
                str(data),
                "-U",
                PG_USER,
                "-E",
                "UTF8",
                f"--pwfile={password_file}",
                "--auth=scram-sha-256",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            user=user,
            cwd=directory,
            check=False,
        )
        if result.returncode != 0:
            raise ChexflowError(f"initdb failed: {(result.stderr or result.stdout).strip()}")
    return data, password, user


def postgres_command(bin_dir: Path, data: Path, port: int) -> list[str]:
    """The server's command line: TCP on loopback only, and no Unix socket (``-k ""``)."""
    return [str(bin_dir / "postgres"), "-D", str(data), "-h", HOST, "-p", str(port), "-k", ""]


def start_postgres(settings: StackSettings, env: dict[str, str]) -> tuple[Service, str]:
    """A PostgreSQL server on loopback only (no Unix socket); returns it and its base URL."""
    directory = settings.directory / "postgres"
    data, password, user = init_postgres(directory)
    command = postgres_command(postgres_bin(), data, settings.pg_port)
    log = directory / "postgres.log"
    if user:
        log.touch(mode=0o600)
        log.chmod(0o600)
        _chown(log, user)
    service = spawn(
        "postgres",
        command,
        env,
        log,
        cwd=directory,
        user=user,
        port=settings.pg_port,
        stop_signal=signal.SIGINT,
    )
    quoted = urllib.parse.quote(password, safe="")
    return service, f"postgresql://{PG_USER}:{quoted}@{HOST}:{settings.pg_port}"


def _pg_connect(base_url: str, database: str) -> Any:
    import psycopg

    return psycopg.connect(f"{base_url}/{database}", connect_timeout=3, autocommit=True)


def postgres_ready(base_url: str, database: str = "postgres") -> bool:
    try:
        _pg_connect(base_url, database).close()
    except Exception:
        return False
    return True


def ensure_databases(base_url: str, maintenance_db: str = "postgres") -> None:
    """Create the `prefect` and `mlflow` databases when missing."""
    connection = _pg_connect(base_url, maintenance_db)
    try:
        with connection.cursor() as cursor:
            for name in PG_DATABASES:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()


def split_postgres_url(url: str) -> tuple[str, str]:
    """``postgresql://u:p@h:5432/db`` → (``postgresql://u:p@h:5432``, ``db`` or postgres)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("postgresql", "postgres") or not parsed.hostname:
        raise ChexflowError(
            f"--db {redact(url)}: expected sqlite, postgres or postgresql://USER:PASS@HOST:PORT"
        )
    base = urllib.parse.urlunsplit(("postgresql", parsed.netloc, "", "", ""))
    return base, parsed.path.lstrip("/") or "postgres"


def redact(text: str) -> str:
    """Hide passwords in ``scheme://user:password@host`` URLs."""
    parts = urllib.parse.urlsplit(text)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return text
