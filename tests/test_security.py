"""Security: nothing is unpickled, the stack authenticates and binds to loopback, and no
secret reaches a log, an MLflow param or tag, or a Prefect parameter.

Malicious files elsewhere: init checkpoints (tests/test_models.py), image-cache packs
(tests/test_dataset.py), embeddings (tests/test_embed.py), CSV paths escaping the dataset
root (tests/test_chexpert.py, tests/test_dataset.py).
"""

from __future__ import annotations

import ast
import base64
import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import TINY, postgres_available

from chexflow import checkpoints
from chexflow.config import load_config
from chexflow.errors import ChexflowError
from deployments import stack
from deployments.stack import commands, credentials, network, postgres, state

ROOT = Path(__file__).resolve().parents[1]
CHEXFLOW = str(Path(sys.executable).parent / "chexflow")


class _Payload:
    """Unpickling this creates ``marker``: proof that a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.mkdir, (str(self.marker),)


# --- nothing is unpickled ---------------------------------------------------------------------


def _calls(path: Path) -> Iterator[tuple[str, ast.Call]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            yield ast.unparse(node.func), node


def _keyword(call: ast.Call, name: str) -> Any:
    for keyword in call.keywords:
        if keyword.arg == name and isinstance(keyword.value, ast.Constant):
            return keyword.value.value
    return "<missing>"


UNPICKLING_CALLS = {"pickle.load", "pickle.loads", "cloudpickle.loads", "joblib.load",
                    "pd.read_pickle", "yaml.load", "eval", "exec"}  # fmt: skip


def test_no_code_path_can_unpickle() -> None:
    packages = ("chexflow", "flows", "tasks", "deployments")
    sources = [path for name in packages for path in (ROOT / name).rglob("*.py")]
    unsafe = []
    for path in sources:
        for name, call in _calls(path):
            torch_pickle = name == "torch.load" and _keyword(call, "weights_only") is not True
            numpy_pickle = name == "np.load" and _keyword(call, "allow_pickle") is not False
            if torch_pickle or numpy_pickle or name in UNPICKLING_CALLS:
                unsafe.append(f"{path.relative_to(ROOT)}:{call.lineno} {name}")
    assert sources and not unsafe, unsafe


def test_a_malicious_resume_checkpoint_is_refused_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "payload": _Payload(marker)}, tmp_path / checkpoints.LAST)
    assert checkpoints.load_last(tmp_path) is None  # training starts over instead
    assert not marker.exists()


def _trained_record(storage: Path, key: str) -> Path:
    """A training-cache record exactly as the train task persists it (JSON serializer)."""
    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore
    from prefect.serializers import JSONSerializer

    from chexflow.pipeline import TrainedModel

    trained = TrainedModel(
        fingerprint="f" * 16, checkpoint_dir=str(storage), best_checkpoint="best.pt",
        last_checkpoint="last.pt", best_epoch=1, best_score=0.5, epochs_completed=1,
        resumed_from_epoch=None, history=[{"epoch": 1, "val_auroc_mean": 0.5}],
    )  # fmt: skip
    store = ResultStore(
        result_storage=LocalFileSystem(basepath=str(storage)), serializer=JSONSerializer()
    )
    store.write(key=key, obj=trained)
    return storage / key


def _tamper(record: Path, marker: Path, how: str) -> None:
    import cloudpickle

    data = json.loads(record.read_text())
    evil = base64.b64encode(cloudpickle.dumps(_Payload(marker))).decode()
    if how == "pickle serializer":
        data["metadata"]["serializer"] = {"type": "pickle", "picklelib": "cloudpickle"}
        data["result"] = evil
    elif how == "jsonlib":
        data["metadata"]["serializer"]["jsonlib"] = "pickle"
    elif how == "object decoder":
        data["metadata"]["serializer"]["object_decoder"] = "subprocess.run"
    elif how == "payload class":
        payload = json.loads(data["result"])
        payload["__class__"] = "pathlib.Path"
        data["result"] = json.dumps(payload)
    record.write_text(json.dumps(data))


def test_prefect_would_run_a_tampered_cache_record(tmp_path: Path) -> None:
    """Why the training cache is checked: Prefect trusts the serializer a record names."""
    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore

    record = _trained_record(tmp_path / "store", "k")
    marker = tmp_path / "pwned"
    _tamper(record, marker, "pickle serializer")
    store = ResultStore(result_storage=LocalFileSystem(basepath=str(tmp_path / "store")))
    with contextlib.suppress(Exception):  # whatever happens after the payload ran
        store.read("k")
    assert marker.exists(), "Prefect unpickled the record"


@pytest.mark.parametrize(
    "how", ["pickle serializer", "jsonlib", "object decoder", "payload class", "not json"]
)
def test_a_tampered_training_cache_record_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    from tasks import finetune as steps

    monkeypatch.setattr(steps, "_training_key", lambda _ctx, _params: "chexflow-train-x")
    storage = tmp_path / "prefect-results"
    record = _trained_record(storage, "chexflow-train-x")
    steps.check_training_record(storage, None, None, None)  # the genuine record passes
    marker = tmp_path / "pwned"
    if how == "not json":
        record.write_bytes(b"\x80\x04garbage")
    else:
        _tamper(record, marker, how)
    with pytest.raises(ChexflowError, match=r"was not written by chexflow.*delete the file"):
        steps.check_training_record(storage, None, None, None)
    assert not marker.exists()


@pytest.mark.slow
def test_the_flow_refuses_a_tampered_cache_record(
    prefect_api, tiny_dataset: Path, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from chexflow import pipeline
    from chexflow.tracking import default_tracking_uri
    from flows.finetune import finetune

    config = load_config(None, TINY)
    workdir = tmp_path / "work"
    prepared = pipeline.prepare_data(tiny_dataset, config.data, 0.5, 0, workdir)
    fp = pipeline.training_fingerprint(prepared, config.model, config.train, 0)
    record = _trained_record(workdir / "prefect-results", f"chexflow-train-{fp}")
    marker = tmp_path / "pwned"
    _tamper(record, marker, "pickle serializer")
    with pytest.raises(ChexflowError, match="was not written by chexflow"):
        finetune(str(tiny_dataset), 0.5, 0, config, str(workdir))
    assert not marker.exists()
    client = MlflowClient(default_tracking_uri(workdir))
    experiment = client.get_experiment_by_name("chexpert-label-fractions")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"
    assert "not written by chexflow" in run.data.tags["chexflow.failure"]


# --- servers on loopback ----------------------------------------------------------------------


def test_every_server_binds_to_loopback(tmp_path: Path) -> None:
    settings = stack.StackSettings(tmp_path, prefect_port=4200, mlflow_port=5000, auth=True)
    for command in (commands.prefect_server_command(settings),
                    commands.mlflow_server_command(settings, "sqlite:///x.db")):  # fmt: skip
        assert command[command.index("--host") + 1] == "127.0.0.1"
    assert all("//127.0.0.1:" in url for url in commands.client_env(settings).values())
    command = postgres.postgres_command(Path("/pg/bin"), tmp_path / "data", 5433)
    assert command[0] == "/pg/bin/postgres"
    assert command[command.index("-h") + 1] == "127.0.0.1"
    assert command[command.index("-k") + 1] == "", "no Unix socket either"


def test_credentials_are_generated_private_and_reused(tmp_path: Path) -> None:
    directory = state.stack_dir(tmp_path)
    first = credentials.ensure_credentials(directory)
    assert stat.S_IMODE((directory / "auth").stat().st_mode) == 0o700
    for path in (directory / "auth").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert len(first.mlflow_password) >= 12  # MLflow refuses a shorter admin password
    assert f"database_uri = sqlite:///{directory}/auth/basic_auth.db" in first.ini.read_text()
    assert credentials.ensure_credentials(directory) == first  # the auth database keeps the user
    env = state.write_env_file(tmp_path, {"A": "1", **first.client_env()})
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert set(stack.redact_env(first.client_env()).values()) == {"admin", "***"}


# --- `chexflow up --auth` -------------------------------------------------------------------


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return {**env, **commands.OFFLINE_ENV, **extra}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHEXFLOW, *args], capture_output=True, text=True, timeout=600,
                          env=env or _clean_env(), check=False)  # fmt: skip


@pytest.fixture(scope="module")
def auth_stack() -> Iterator[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="chexflow-auth-"))
    work = root / "work"
    ports = [network.free_port(), network.free_port()]
    up = _cli("up", "--auth", "--workdir", str(work), "--prefect-port", str(ports[0]),
              "--mlflow-port", str(ports[1]), "--gpu-workers", "0",
              "--cpu-workers", "1")  # fmt: skip
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        env = dict(
            line.removeprefix("export ").split("=", 1)
            for line in (work / "stack" / "env.sh").read_text().splitlines()
        )
        auth = work / "stack" / "auth"
        secrets = {
            "mlflow password": env["MLFLOW_TRACKING_PASSWORD"],
            "prefect password": env["PREFECT_API_AUTH_STRING"].split(":", 1)[1],
            "flask secret key": (auth / "mlflow-flask-secret-key").read_text().strip(),
        }
        yield {"work": work, "env": env, "ports": ports, "up": up, "secrets": secrets}
    finally:
        _cli("down", "--workdir", str(work))
        shutil.rmtree(root, ignore_errors=True)


def _status(url: str, auth: str | None = None, body: dict | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
def test_up_auth_refuses_unauthenticated_requests(auth_stack: dict[str, Any]) -> None:
    env = auth_stack["env"]
    mlflow, api = env["MLFLOW_TRACKING_URI"], env["PREFECT_API_URL"]
    user = f"admin:{env['MLFLOW_TRACKING_PASSWORD']}"
    searches = f"{mlflow}/api/2.0/mlflow/experiments/search?max_results=1"
    for url in (searches, f"{mlflow}/", f"{mlflow}/api/2.0/mlflow-artifacts/artifacts"):
        assert _status(url) == 401, url
    assert _status(searches, "admin:not-the-password") == 401
    assert _status(searches, user) == 200
    assert _status(f"{api}/flows/filter", body={}) == 401
    assert _status(f"{api}/flows/filter", "admin:not-the-password", body={}) == 401
    assert _status(f"{api}/flows/filter", env["PREFECT_API_AUTH_STRING"], body={}) == 200
    assert _status(f"{mlflow}/health") == 200 and _status(f"{api}/health") == 200
    listening = _listening_addresses()
    for port in auth_stack["ports"]:
        assert listening.get(port) == {"127.0.0.1"}, (port, listening.get(port))


def _listening_addresses() -> dict[int, set[str]]:
    """Port → local addresses of TCP sockets in LISTEN state (from /proc/net/tcp)."""
    found: dict[int, set[str]] = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A":
            address, port = local.split(":")
            ip = ".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0))
            found.setdefault(int(port, 16), set()).add(ip)
    return found


@pytest.mark.slow
def test_credentials_are_private_and_never_printed(auth_stack: dict[str, Any]) -> None:
    work = auth_stack["work"]
    directory = work / "stack"
    assert stat.S_IMODE((directory / "auth").stat().st_mode) == 0o700
    for path in [directory / "env.sh", directory / "state.json", *(directory / "auth").iterdir()]:
        if path.name != "basic_auth.db":  # password hashes, inside the 0700 directory
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    printed = [auth_stack["up"].stdout, auth_stack["up"].stderr]
    printed += [_cli("status", "--workdir", str(work)).stdout]
    printed += [_cli("status", "--json", "--workdir", str(work)).stdout]
    printed += [p.read_text(errors="replace") for p in directory.glob("*.log")]
    for name, secret in auth_stack["secrets"].items():
        assert not any(secret in text for text in printed), name
    assert "MLFLOW_TRACKING_PASSWORD" in _cli("status", "--env", "--workdir", str(work)).stdout


@pytest.mark.slow
def test_no_secret_reaches_mlflow_or_prefect_records(
    auth_stack: dict[str, Any], tiny_dataset: Path, tmp_path: Path, monkeypatch
) -> None:
    env = _clean_env(**auth_stack["env"], PREFECT_HOME=str(tmp_path / "home"))
    sets = [arg for item in TINY for arg in ("--set", item)]
    run = _cli("finetune", "--data", str(tiny_dataset), "--fraction", "0.5",
               "--workdir", str(auth_stack["work"]), *sets, env=env)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", auth_stack["env"]["MLFLOW_TRACKING_PASSWORD"])
    records = _mlflow_records(auth_stack["env"]) + _prefect_parameters(auth_stack["env"])
    text = json.dumps(records) + run.stdout + run.stderr
    assert '"model.name": "test_resnet"' in text and '"fraction": 0.5' in text, "scanned"
    for name, secret in auth_stack["secrets"].items():
        assert secret not in text, name


def _mlflow_records(env: dict[str, str]) -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])  # credentials from the environment
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments)
    versions = client.search_model_versions()
    assert runs and versions
    records: list[Any] = []
    for r in runs:
        records += [r.info.run_name, r.data.params, r.data.tags]
    return records + [v.tags for v in versions]


def _prefect_parameters(env: dict[str, str]) -> list[Any]:
    request = urllib.request.Request(
        f"{env['PREFECT_API_URL']}/flow_runs/filter",
        json.dumps({}).encode(),
        {
            "Content-Type": "application/json",
            "Authorization": "Basic "
            + base64.b64encode(env["PREFECT_API_AUTH_STRING"].encode()).decode(),
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        flow_runs = json.loads(response.read())
    assert flow_runs
    return [[r["name"], r["parameters"], r.get("tags")] for r in flow_runs]


@pytest.mark.slow
@pytest.mark.skipif(not postgres_available(), reason="no PostgreSQL server binaries")
def test_the_postgres_password_is_on_no_command_line_and_in_no_log() -> None:
    # Before: `up --db postgres` put the password on the MLflow server's command line (ps
    # shows it to every local user) and in stack/mlflow-server.log, mode 0644.
    from deployments.stack.processes import process_tree

    root = Path(tempfile.mkdtemp(prefix="chexflow-secret-"))
    root.chmod(0o755)  # PostgreSQL runs as `postgres`: pytest's 0700 tmp dirs would stop it
    work = root / "work"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    ports = [str(network.free_port()) for _ in range(3)]
    up = [CHEXFLOW, "up", "--workdir", str(work), "--db", "postgres", "--gpu-workers", "0",
          "--prefect-port", ports[0], "--mlflow-port", ports[1], "--pg-port", ports[2]]  # fmt: skip
    try:
        result = subprocess.run(up, capture_output=True, text=True, timeout=600, env=clean)
        assert result.returncode == 0, result.stdout + result.stderr
        password = (state.stack_dir(work) / "postgres" / "password").read_text().strip()
        assert len(password) >= 24
        record = state.StackState.load(state.state_path(work))
        assert record is not None and record.services
        pids = [pid for service in record.services for pid in process_tree(service.pid)]
        for pid in pids:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                assert password not in cmdline, f"pid {pid}: {cmdline[:200]}"
        logs = list(state.stack_dir(work).rglob("*.log"))
        assert any(p.name == "mlflow-server.log" for p in logs)
        for log in logs:
            assert password not in log.read_text(errors="replace"), log
            assert stat.S_IMODE(log.stat().st_mode) == 0o600, log
        assert password not in result.stdout + result.stderr
    finally:
        subprocess.run([CHEXFLOW, "down", "--workdir", str(work)], capture_output=True,
                       timeout=300, env=clean, check=False)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)
