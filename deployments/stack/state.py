"""What `chexflow up` is asked to start (settings) and what it started (``state.json``)."""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chexflow.files import atomic_write_text
from deployments.stack.credentials import write_private
from deployments.stack.processes import Service


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
        # mode 600: it holds database passwords
        atomic_write_text(path, json.dumps(asdict(self), indent=2), mode=0o600)

    @classmethod
    def load(cls, path: Path) -> StackState | None:
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        raw["services"] = [Service(**s) for s in raw.get("services", [])]
        return cls(**raw)


def stack_dir(workdir: Path) -> Path:
    return Path(workdir).resolve() / "stack"


def state_path(workdir: Path) -> Path:
    return stack_dir(workdir) / "state.json"


def write_env_file(workdir: Path, env: dict[str, str]) -> Path:
    """``<workdir>/stack/env.sh`` (0600): ``source`` it to point clients at the stack."""
    path = stack_dir(workdir) / "env.sh"
    write_private(path, "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
    return path
