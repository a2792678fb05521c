"""A new workdir's databases start from templates of migrated, empty ones.

Every new workdir gets a new Prefect home (``flows.cli_common.configure_environment``) and
a new MLflow SQLite database, and both are created by running every schema migration, one
SQLite transaction (and disk sync) after another. On the project's 2-core machine a new
MLflow database took 22-25 s of wall clock for 2.4 s of CPU, and a copy of one 0.9 s; the
temporary Prefect API started in 7.3 s on a new home against 2.9 s on a used one
(bench/bench_orchestration.py, bench/bench_commands.py). So the migrated, empty databases
are kept as templates in the user's cache, one per library version, and new workdirs
start from copies: the libraries then find nothing to migrate.

- Prefect: the first new home's database, right after the temporary API answered
  (migrated, block types registered, no runs), becomes the template.
- MLflow: a separate process creates an empty database in the cache (its default
  experiment removed, so MLflow recreates it with this workdir's location).

Anything that goes wrong here only costs the time it was meant to save: the libraries
then migrate as before. ``MLFLOW_TRACKING_URI`` and non-SQLite Prefect databases are left
alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import urllib.parse
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

_PREFECT_SQLITE = "sqlite+aiosqlite:///"
_PREFECT_DB = "prefect.db"
_PREFECT_MEMO = "memo_store.toml"  # Prefect's record of the block types it registered
_MLFLOW_DB = "mlflow.db"

# Run by ``python -c`` in the cache directory: a new MLflow database without the default
# experiment (MLflow creates it again, with the location of the workdir that opens it).
_CREATE_MLFLOW_TEMPLATE = """
import sqlite3, sys
from mlflow import MlflowClient
MlflowClient(f"sqlite:///{sys.argv[1]}").search_experiments()
with sqlite3.connect(sys.argv[1]) as con:
    con.execute("DELETE FROM experiment_tags WHERE experiment_id = 0")
    con.execute("DELETE FROM experiments WHERE experiment_id = 0")
"""


def template_dir() -> Path:
    """``$XDG_CACHE_HOME/chexflow/templates`` (``~/.cache/chexflow/templates``)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "chexflow" / "templates"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:  # pragma: no cover - both are dependencies
        return "unknown"


def _nothing() -> None:
    return None


def _copy(template: Path, database: Path) -> bool:
    with contextlib.suppress(OSError):
        database.parent.mkdir(parents=True, exist_ok=True)
        partial = database.with_name(f"{database.name}.{os.getpid()}")
        shutil.copyfile(template, partial)
        partial.replace(database)
        return True
    return False


def _backup(database: Path, template: Path) -> None:
    """A consistent copy (SQLite's backup API: the owner may be writing), renamed into
    place, so concurrent commands never read half a template."""
    template.parent.mkdir(parents=True, exist_ok=True)
    partial = template.with_name(f"{template.name}.{os.getpid()}")
    source, copy = sqlite3.connect(database), sqlite3.connect(partial)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    partial.replace(template)


def prefect_database() -> Path | None:
    """The temporary API's SQLite file, or None when another database is configured."""
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url
    text = url.get_secret_value() if url is not None else ""
    if not text.startswith(_PREFECT_SQLITE):
        return None
    return Path(urllib.parse.unquote(text.removeprefix(_PREFECT_SQLITE)))  # files.sqlite_url


def seed_prefect_home() -> Callable[[], None]:
    """Before the temporary API starts: copy the template into a new home.

    Returns what to call once the API answers: when a new home found no template, it
    keeps this home's database (still without runs) as the template."""
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:  # a server: no temporary API, no home database
        return _nothing
    database = prefect_database()
    if database is None or database.exists():
        return _nothing
    folder = template_dir() / f"prefect-{_version('prefect')}"
    if (folder / _PREFECT_DB).is_file():
        if _copy(folder / _PREFECT_DB, database) and (folder / _PREFECT_MEMO).is_file():
            _copy(folder / _PREFECT_MEMO, database.parent / _PREFECT_MEMO)
        return _nothing

    def keep() -> None:
        with contextlib.suppress(OSError, sqlite3.Error):
            _backup(database, folder / _PREFECT_DB)
            if (database.parent / _PREFECT_MEMO).is_file():
                _copy(database.parent / _PREFECT_MEMO, folder / _PREFECT_MEMO)

    return keep


def seed_mlflow_database(workdir: Path) -> Callable[[], None]:
    """Give a new workdir's MLflow database a head start; return what to wait for.

    With a template: copied now (the returned wait does nothing). Without one: a separate
    process creates it in the cache while the command goes on, and the returned wait
    copies it into the workdir. Nothing happens with ``MLFLOW_TRACKING_URI`` set or an
    existing database."""
    database = Path(workdir).resolve() / _MLFLOW_DB
    if os.environ.get("MLFLOW_TRACKING_URI") or database.exists():
        return _nothing
    template = template_dir() / f"mlflow-{_version('mlflow')}.db"
    if template.is_file():
        _copy(template, database)
        return _nothing
    partial = template.with_name(f"{template.name}.{os.getpid()}.new")
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(
            [sys.executable, "-c", _CREATE_MLFLOW_TEMPLATE, str(partial)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        return _nothing

    def wait() -> None:
        if process.wait() == 0 and partial.is_file():
            with contextlib.suppress(OSError):
                partial.replace(template)
        if template.is_file() and not database.exists():
            _copy(template, database)

    return wait
