"""The local stack behind `chexflow up` / `down` / `status`: services as child processes.

`up` starts, on loopback, a Prefect server, an MLflow server (SQLite or PostgreSQL
backend, artifacts under the workdir) and process workers for the `chexflow-gpu` and
`chexflow-cpu` work pools, each in its own session so that `down` can stop the whole
process tree. With ``auth`` the MLflow server runs MLflow's basic-auth app and the Prefect
server requires its API auth string; the generated credentials live in
``<workdir>/stack/auth/`` (0600) and reach clients through ``env.sh`` (0600), never a log.
What was started is recorded in ``<workdir>/stack/state.json``; `down` stops only that.
Readiness is polled (health endpoints, registered workers), never slept.

This module never imports Prefect: it runs the `prefect` and `mlflow` executables.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chexflow.errors import ChexflowError

HOST = "127.0.0.1"
GPU_POOL = "chexflow-gpu"
CPU_POOL = "chexflow-cpu"
PG_USER = "chexflow"
PG_DATABASES = ("prefect", "mlflow")
OFFLINE_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}
STOP_GRACE_S = 10.0
KILL_WAIT_S = 5.0  # how long stop() waits for the kernel to end SIGKILLed processes
AUTH_USER = "admin"
# Client variables that hold credentials: written to env.sh (0600), never printed by `up`.
SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING")


@dataclass(frozen=True)
class StackSettings:
    """What `chexflow up` starts, and where."""

    workdir: Path
    prefect_port: int = 4200
    mlflow_port: int = 5000
    gpu_workers: int = 1
    cpu_workers: int = 1
    gpus: tuple[str, ...] = ()
    db: str = "sqlite"
    pg_port: int = 5433
    timeout_s: float = 180.0
    auth: bool = False

    @property
    def directory(self) -> Path:
        return stack_dir(self.workdir)


@dataclass
class Service:
    """One started process (and its tree): how to find it again and how to stop it."""

    name: str
    pid: int
    start_ticks: int
    log: str
    port: int | None = None
    url: str | None = None
    stop_signal: int = int(signal.SIGTERM)


@dataclass
class StackState:
    """The record of a started stack, as written to ``state.json``."""

    workdir: str
    started_at: float
    db: str
    services: list[Service] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    ready_s: float | None = None
    auth: bool = False

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.chmod(0o600)  # holds database passwords
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> StackState | None:
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        raw["services"] = [Service(**s) for s in raw.get("services", [])]
        return cls(**raw)


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
        f"database_uri = sqlite:///{auth / 'basic_auth.db'}\n"
        f"admin_username = {AUTH_USER}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
    )
    return Credentials(password, key, prefect, ini)


def redact_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with credential values replaced by ``***``."""
    return {k: "***" if k in SECRET_ENV else v for k, v in env.items()}


def stack_dir(workdir: Path) -> Path:
    return Path(workdir).resolve() / "stack"


def state_path(workdir: Path) -> Path:
    return stack_dir(workdir) / "state.json"


def repo_root() -> Path:
    """The source checkout holding flows/ and deployments/ (workers import flows from it)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "flows" / "finetune.py").is_file():
        raise ChexflowError(
            f"{root} has no flows/: deployments and workers need a source checkout of chexflow"
        )
    return root


def venv_executable(name: str) -> str:
    """An executable installed beside this Python (the venv's `prefect`, `mlflow`)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise ChexflowError(f"`{name}` is not installed beside {sys.executable}")
    return found


# --- processes ---------------------------------------------------------------------------


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 = state)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int:
    """The process start time in clock ticks: with the pid, identifies one process."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else -1


def is_running(pid: int, ticks: int | None = None) -> bool:
    """Alive (not a zombie) and, when ``ticks`` is given, the same process as recorded."""
    fields = _proc_stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return ticks is None or int(fields[19]) == ticks


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, found through /proc parent links."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def rss_mb(pids: Iterable[int]) -> float:
    """Resident memory of processes, in MB (0 for those that are gone)."""
    total_kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def spawn(
    name: str,
    command: list[str],
    env: dict[str, str],
    log: Path,
    *,
    cwd: Path | None = None,
    user: str | None = None,
    port: int | None = None,
    url: str | None = None,
    stop_signal: int = signal.SIGTERM,
) -> Service:
    """Start a service in a new session (its own process group), output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n--- {time.strftime('%F %T')} {' '.join(command)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
        )
    return Service(name, proc.pid, start_ticks(proc.pid), str(log), port, url, int(stop_signal))


def stop(service: Service, grace_s: float = STOP_GRACE_S) -> str:
    """Signal a service's process tree, then SIGKILL what is left after ``grace_s``."""
    if not is_running(service.pid, service.start_ticks):
        return f"{service.name}: not running"
    tree = process_tree(service.pid)
    ticks = {pid: start_ticks(pid) for pid in tree}
    _signal_all(tree, service.stop_signal, pgid=service.pid)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not any(is_running(pid, ticks[pid]) for pid in tree):
            return f"{service.name}: stopped (pid {service.pid})"
        time.sleep(0.1)
    left = [pid for pid in tree if is_running(pid, ticks[pid])]
    _signal_all(left, signal.SIGKILL, pgid=service.pid)
    # SIGKILL is delivered asynchronously: wait until the kernel has ended every process, so
    # that a caller who starts the stack again right away finds its ports and files free.
    deadline = time.monotonic() + KILL_WAIT_S
    while any(is_running(pid, ticks[pid]) for pid in left) and time.monotonic() < deadline:
        time.sleep(0.02)
    survivors = [pid for pid in left if is_running(pid, ticks[pid])]
    if survivors:
        return f"{service.name}: pids {survivors} still alive {KILL_WAIT_S:.0f} s after SIGKILL"
    return f"{service.name}: killed after {grace_s:.0f} s (pid {service.pid})"


def _signal_all(pids: list[int], sig: int, pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _reap(services: Iterable[Service]) -> None:
    """Collect exit statuses of our own children so they do not linger as zombies."""
    for service in services:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(service.pid, os.WNOHANG)


# --- ports and health ----------------------------------------------------------------------


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on ``host:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    """A port the OS considers free now (for tests and ad-hoc stacks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def check_ports(ports: dict[str, int]) -> None:
    """Refuse, in one line, a port that is already taken."""
    for option, port in ports.items():
        if not 0 < port < 65536:
            raise ChexflowError(f"{option} {port}: not a TCP port")
        if not port_is_free(port):
            raise ChexflowError(
                f"port {port} on {HOST} is busy (another server?): stop it or pass {option}"
            )


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def post_json(
    url: str, body: dict[str, Any], timeout_s: float = 5.0, auth_string: str | None = None
) -> Any:
    headers = {"Content-Type": "application/json"}
    if auth_string:
        headers["Authorization"] = "Basic " + base64.b64encode(auth_string.encode()).decode()
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read() or b"null")


def wait_until(
    ready: Callable[[], bool], services: list[Service], what: str, timeout_s: float
) -> float:
    """Poll ``ready`` until true; fail early, with the log's tail, if a service died."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if ready():
            return time.monotonic() - start
        for service in services:
            if not is_running(service.pid, service.start_ticks):
                raise ChexflowError(
                    f"{service.name} exited while starting: {_log_tail(service.log)} "
                    f"(log: {service.log})"
                )
        time.sleep(0.25)
    raise ChexflowError(f"{what} not ready after {timeout_s:.0f} s (logs: {services[0].log})")


def _log_tail(log: str) -> str:
    try:
        lines = [ln.strip() for ln in Path(log).read_text(errors="replace").splitlines()]
    except OSError:
        return "no log"
    lines = [ln for ln in lines if ln and not ln.startswith("---")]
    return lines[-1][:300] if lines else "no output"


def workers_online(
    api_url: str, pool: str, names: set[str], auth_string: str | None = None
) -> bool:
    """Whether every named worker of ``pool`` has sent a heartbeat to the Prefect API."""
    try:
        found = post_json(
            f"{api_url}/work_pools/{pool}/workers/filter", {}, auth_string=auth_string
        )
    except (urllib.error.URLError, OSError, ValueError):
        return False
    online = {w["name"] for w in found or [] if w.get("status", "ONLINE") == "ONLINE"}
    return names <= online


# --- PostgreSQL ----------------------------------------------------------------------------


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


def _require_psycopg() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise ChexflowError(
            "MLflow on PostgreSQL needs psycopg: pip install 'chexflow[postgres]'"
        ) from None


def _require_flask_wtf() -> None:
    import importlib.util

    if importlib.util.find_spec("flask_wtf") is None:
        raise ChexflowError(
            "--auth runs MLflow's basic-auth app, which needs Flask-WTF: "
            "pip install 'chexflow[auth]'"
        )


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


def start_postgres(settings: StackSettings, env: dict[str, str]) -> tuple[Service, str]:
    """A PostgreSQL server on loopback only (no Unix socket); returns it and its base URL."""
    directory = settings.directory / "postgres"
    data, password, user = init_postgres(directory)
    command = [
        str(postgres_bin() / "postgres"),
        "-D",
        str(data),
        "-h",
        HOST,
        "-p",
        str(settings.pg_port),
        "-k",
        "",
    ]
    log = directory / "postgres.log"
    if user:
        log.touch()
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


# --- the stack -----------------------------------------------------------------------------


def base_env(workdir: Path) -> dict[str, str]:
    """The environment of every started process: offline switches, no inherited servers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(OFFLINE_ENV)
    env["PREFECT_HOME"] = str(stack_dir(workdir) / "prefect")
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    return env


def client_env(settings: StackSettings) -> dict[str, str]:
    """What a user (and every worker) exports to use the stack."""
    return {
        "PREFECT_API_URL": f"http://{HOST}:{settings.prefect_port}/api",
        "MLFLOW_TRACKING_URI": f"http://{HOST}:{settings.mlflow_port}",
    }


def prefect_server_command(settings: StackSettings) -> list[str]:
    return [
        venv_executable("prefect"),
        "server",
        "start",
        "--host",
        HOST,
        "--port",
        str(settings.prefect_port),
    ]


def mlflow_server_command(settings: StackSettings, backend_uri: str) -> list[str]:
    artifacts = Path(settings.workdir).resolve() / "mlartifacts"
    auth = ["--app-name", "basic-auth"] if settings.auth else []
    return [
        venv_executable("mlflow"),
        "server",
        "--host",
        HOST,
        "--port",
        str(settings.mlflow_port),
        "--workers",
        "1",
        "--backend-store-uri",
        backend_uri,
        "--artifacts-destination",
        str(artifacts),
        *auth,
    ]


def worker_specs(settings: StackSettings) -> list[tuple[str, str, dict[str, str]]]:
    """(name, pool, extra env) of each worker: one GPU worker per GPU, one run at a time."""
    host = socket.gethostname().split(".")[0]
    specs = []
    gpu_count = len(settings.gpus) or settings.gpu_workers
    for i in range(gpu_count):
        extra = {"CUDA_VISIBLE_DEVICES": settings.gpus[i]} if settings.gpus else {}
        specs.append((f"{host}-gpu-{i}", GPU_POOL, extra))
    specs += [(f"{host}-cpu-{i}", CPU_POOL, {}) for i in range(settings.cpu_workers)]
    return specs


def worker_command(name: str, pool: str) -> list[str]:
    limit = ["--limit", "1"] if pool == GPU_POOL else []
    return [
        venv_executable("prefect"),
        "worker",
        "start",
        "--pool",
        pool,
        "--type",
        "process",
        "--name",
        name,
        *limit,
    ]


def up(settings: StackSettings, echo: Callable[[str], None] = print) -> StackState:
    """Start the stack, wait until every part answers, and record it."""
    existing = StackState.load(state_path(settings.workdir))
    if existing:
        alive = [s for s in existing.services if is_running(s.pid, s.start_ticks)]
        if alive and len(alive) == len(existing.services):
            if existing.auth != settings.auth:
                raise ChexflowError(
                    f"the stack in {settings.directory} runs "
                    f"{'with' if existing.auth else 'without'} --auth: `chexflow down` first"
                )
            echo(f"already running in {settings.directory}")
            return existing
        if alive:
            names = ", ".join(s.name for s in alive)
            raise ChexflowError(
                f"part of a stack runs in {settings.directory} ({names}): run `chexflow down` first"
            )
    if settings.db not in ("sqlite", "postgres"):
        split_postgres_url(settings.db)  # refuses a malformed URL before anything starts
    ports = {"--prefect-port": settings.prefect_port, "--mlflow-port": settings.mlflow_port}
    if settings.db == "postgres":
        ports["--pg-port"] = settings.pg_port
    if len(set(ports.values())) != len(ports):
        raise ChexflowError(f"ports must differ: {ports}")
    check_ports(ports)
    if settings.db != "sqlite":
        _require_psycopg()
    if settings.auth:
        _require_flask_wtf()
    state = StackState(
        str(Path(settings.workdir).resolve()), time.time(), settings.db, auth=settings.auth
    )
    t0 = time.monotonic()
    try:
        _start_all(settings, state, echo)
    except BaseException:
        for line in down(settings.workdir):
            echo(f"  cleanup: {line}")
        raise
    state.ready_s = round(time.monotonic() - t0, 2)
    state.save(state_path(settings.workdir))
    write_env_file(settings.workdir, state.env)
    return state


def _start_all(settings: StackSettings, state: StackState, echo: Callable[[str], None]) -> None:
    directory, path = settings.directory, state_path(settings.workdir)
    directory.mkdir(parents=True, exist_ok=True)
    env = base_env(settings.workdir)
    prefect_db, mlflow_db = _databases(settings, state, env, echo)
    state.env = client_env(settings)
    api, mlflow_url = state.env["PREFECT_API_URL"], state.env["MLFLOW_TRACKING_URI"]
    mlflow_env = dict(env)
    server_env = {
        **env,
        "PREFECT_SERVER_API_PORT": str(settings.prefect_port),
        "PREFECT_UI_API_URL": api,
        "PREFECT_API_URL": api,
    }
    if settings.auth:
        creds = ensure_credentials(directory)
        state.env.update(creds.client_env())
        server_env["PREFECT_SERVER_API_AUTH_STRING"] = creds.prefect_auth_string
        server_env["PREFECT_API_AUTH_STRING"] = creds.prefect_auth_string
        mlflow_env["MLFLOW_AUTH_CONFIG_PATH"] = str(creds.ini)
        mlflow_env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = creds.flask_secret_key
        mlflow_env["MLFLOW_AUTH_ADMIN_PASSWORD"] = creds.mlflow_password
    if prefect_db:
        server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = prefect_db
    prefect = spawn(
        "prefect-server",
        prefect_server_command(settings),
        server_env,
        directory / "prefect-server.log",
        cwd=directory,
        port=settings.prefect_port,
        url=api.removesuffix("/api"),
    )
    state.services.append(prefect)
    mlflow = spawn(
        "mlflow-server",
        mlflow_server_command(settings, mlflow_db),
        mlflow_env,
        directory / "mlflow-server.log",
        cwd=directory,
        port=settings.mlflow_port,
        url=mlflow_url,
    )
    state.services.append(mlflow)
    state.save(path)
    took = wait_until(
        lambda: http_ok(f"{api}/health"), [prefect], "Prefect server", settings.timeout_s
    )
    echo(f"prefect server healthy after {took:.1f} s: {prefect.url}")
    took = wait_until(
        lambda: http_ok(f"{mlflow_url}/health"), [mlflow], "MLflow server", settings.timeout_s
    )
    echo(f"mlflow server healthy {took:.1f} s later: {mlflow_url}")
    _start_workers(settings, state, env)


def _databases(
    settings: StackSettings, state: StackState, env: dict[str, str], echo: Callable[[str], None]
) -> tuple[str | None, str]:
    """(Prefect database URL or None for its SQLite default, MLflow backend store URI)."""
    if settings.db == "sqlite":
        return None, f"sqlite:///{Path(settings.workdir).resolve() / 'mlflow.db'}"
    if settings.db == "postgres":
        service, base = start_postgres(settings, env)
        state.services.append(service)
        state.save(state_path(settings.workdir))
        took = wait_until(lambda: postgres_ready(base), [service], "PostgreSQL", settings.timeout_s)
        echo(f"postgres ready after {took:.1f} s on {HOST}:{settings.pg_port}")
        maintenance = "postgres"
    else:
        base, maintenance = split_postgres_url(settings.db)
        if not postgres_ready(base, maintenance):
            raise ChexflowError(f"--db {redact(settings.db)}: cannot connect")
    ensure_databases(base, maintenance)
    # Explicit drivers: asyncpg for Prefect, psycopg 3 for MLflow's SQLAlchemy.
    prefect = base.replace("postgresql://", "postgresql+asyncpg://", 1)
    mlflow = base.replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{prefect}/prefect", f"{mlflow}/mlflow"


def _start_workers(settings: StackSettings, state: StackState, env: dict[str, str]) -> None:
    """One process worker per spec; the server creates a pool on its first heartbeat."""
    api = state.env["PREFECT_API_URL"]
    worker_env = {
        **env,
        **state.env,
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "CHEXFLOW_REPO": str(repo_root()),
    }
    names: dict[str, set[str]] = {}
    for name, pool, extra in worker_specs(settings):
        service = spawn(
            f"worker:{name}",
            worker_command(name, pool),
            {**worker_env, **extra},
            settings.directory / f"worker-{name}.log",
            cwd=repo_root(),
        )
        state.services.append(service)
        names.setdefault(pool, set()).add(name)
    state.save(state_path(settings.workdir))
    workers = [s for s in state.services if s.name.startswith("worker:")]
    auth_string = state.env.get("PREFECT_API_AUTH_STRING")
    wait_until(
        lambda: all(workers_online(api, p, n, auth_string) for p, n in names.items()),
        workers,
        "workers",
        settings.timeout_s,
    )


def write_env_file(workdir: Path, env: dict[str, str]) -> Path:
    """``<workdir>/stack/env.sh`` (0600): ``source`` it to point clients at the stack."""
    path = stack_dir(workdir) / "env.sh"
    write_private(path, "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
    return path


def down(workdir: Path, grace_s: float = STOP_GRACE_S) -> list[str]:
    """Stop what `up` recorded, newest first; say what happened to each service."""
    path = state_path(workdir)
    state = StackState.load(path)
    if state is None or not state.services:
        return [f"nothing to stop: no stack was started in {Path(workdir).resolve()}"]
    lines = [stop(service, grace_s) for service in reversed(state.services)]
    _reap(state.services)
    path.unlink(missing_ok=True)
    return lines


def status(workdir: Path) -> dict[str, Any]:
    """What runs: each service's pid, liveness, health, port and resident memory."""
    state = StackState.load(state_path(workdir))
    if state is None:
        return {"running": False, "workdir": str(Path(workdir).resolve()), "services": []}
    rows = []
    for service in state.services:
        alive = is_running(service.pid, service.start_ticks)
        tree = process_tree(service.pid) if alive else []
        rows.append(
            {
                "name": service.name,
                "pid": service.pid,
                "alive": alive,
                "port": service.port,
                "url": service.url,
                "healthy": _healthy(service) if alive else False,
                "processes": len(tree),
                "rss_mb": round(rss_mb(tree), 1),
                "log": service.log,
            }
        )
    return {
        "running": any(r["alive"] for r in rows),
        "workdir": state.workdir,
        "db": redact(state.db),
        "ready_s": state.ready_s,
        "env": state.env,
        "services": rows,
        "rss_mb": round(sum(r["rss_mb"] for r in rows), 1),
    }


def _healthy(service: Service) -> bool | None:
    if service.name == "prefect-server" and service.url:
        return http_ok(f"{service.url}/api/health")
    if service.name == "mlflow-server" and service.url:
        return http_ok(f"{service.url}/health")
    return None
