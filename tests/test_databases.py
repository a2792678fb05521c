"""New workdirs start from templates of migrated, empty Prefect and MLflow databases."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.databases import seed_mlflow_database

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PREFECT_API_DATABASE_CONNECTION_URL", raising=False)


def _database_with(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE migrated (value TEXT)")
        con.execute("INSERT INTO migrated VALUES (?)", (value,))
    (path.parent / "memo_store.toml").write_text("block_auto_registration = 'x'\n")


def _value(path: Path) -> str:
    with sqlite3.connect(path) as con:
        return con.execute("SELECT value FROM migrated").fetchone()[0]


# Prefect reads PREFECT_HOME when it is imported: each home gets a process of its own.
_SEED_HOME = """
import sqlite3, sys
from pathlib import Path
from flows.databases import prefect_database, seed_prefect_home
database = prefect_database()
assert database == Path(sys.argv[1]) / "prefect.db", database
keep = seed_prefect_home()
if not database.exists():  # what the temporary API does to a new home
    with sqlite3.connect(database) as con:
        con.execute("CREATE TABLE migrated (value TEXT)")
        con.execute("INSERT INTO migrated VALUES (?)", (sys.argv[2],))
    (database.parent / "memo_store.toml").write_text("registered = 1\\n")
keep()
"""


def _seed_home(home: Path, value: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(home), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _SEED_HOME, str(home), value],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_first_new_prefect_home_keeps_a_template_that_the_next_copies(tmp_path: Path) -> None:
    _seed_home(tmp_path / "first", "migrated once")
    _seed_home(tmp_path / "second", "migrated again")  # finds the template: copies it
    assert _value(tmp_path / "second" / "prefect.db") == "migrated once"
    assert (tmp_path / "second" / "memo_store.toml").is_file()
    _database_with(tmp_path / "used" / "prefect.db", "its own runs")
    _seed_home(tmp_path / "used", "unused")  # a used home keeps its database
    assert _value(tmp_path / "used" / "prefect.db") == "its own runs"


@pytest.mark.slow  # creates MLflow databases: ~25 s of disk syncs on the 2-core machine
def test_new_mlflow_databases_start_from_an_empty_template(tmp_path: Path) -> None:
    seed_mlflow_database(tmp_path / "first")()  # creates the template in another process
    seed_mlflow_database(tmp_path / "second")()  # copies it
    for name in ("first", "second"):
        client = MlflowClient(f"sqlite:///{tmp_path / name / 'mlflow.db'}")
        (default,) = client.search_experiments()  # MLflow recreated its default experiment
        assert default.experiment_id == "0"
        created = client.create_experiment(f"exp-{name}", (tmp_path / name / "art").as_uri())
        run = client.create_run(created)
        client.log_metric(run.info.run_id, "m", 1.0)
        assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}
    # runs of a workdir never reach the template or another workdir
    seed_mlflow_database(tmp_path / "third")()
    third = MlflowClient(f"sqlite:///{tmp_path / 'third' / 'mlflow.db'}")
    assert [e.name for e in third.search_experiments()] == ["Default"]
