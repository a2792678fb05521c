"""Apply chexflow's deployments to the Prefect server at ``PREFECT_API_URL``.

Creates the work pools when missing, then runs Prefect's own
``prefect --no-prompt deploy`` on ``deployments/prefect.yaml`` from the repository root,
with the ``CHEXFLOW_*`` variables that the file's ``{{ $VAR }}`` placeholders name.
``python -m deployments.deploy --help`` runs it without the chexflow CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from chexflow.errors import ChexflowError

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PREFECT_FILE = HERE / "prefect.yaml"
K8S_TEMPLATE = HERE / "k8s-gpu-job-template.json"
K8S_POOL = "chexflow-k8s-gpu"
DEPLOY_TIMEOUT_S = 600


@dataclass(frozen=True)
class PoolSpec:
    """A work pool that `chexflow deploy` creates when missing."""

    name: str
    type: str
    description: str
    template_file: Path | None = None


POOLS = (
    PoolSpec(
        "chexflow-gpu",
        "process",
        "Fine-tuning. Start one process worker per GPU on each GPU host, one run at a time: "
        "CUDA_VISIBLE_DEVICES=i prefect worker start -p chexflow-gpu --limit 1",
    ),
    PoolSpec(
        "chexflow-cpu",
        "process",
        "Sweeps (they wait on their fine-tunes) and comparisons: CPU hosts.",
    ),
)
K8S_POOL_SPEC = PoolSpec(
    K8S_POOL,
    "kubernetes",
    "Fine-tuning as Kubernetes jobs with one nvidia.com/gpu each (needs prefect-kubernetes "
    "on the worker).",
    K8S_TEMPLATE,
)


def load_prefect_file(path: Path = PREFECT_FILE) -> dict[str, Any]:
    """The parsed prefect.yaml."""
    return yaml.safe_load(path.read_text())


def deployment_names(kubernetes: bool, path: Path = PREFECT_FILE) -> list[str]:
    """Deployments to apply: all of them, or all but those on the Kubernetes pool."""
    return [
        d["name"]
        for d in load_prefect_file(path)["deployments"]
        if kubernetes or d["work_pool"]["name"] != K8S_POOL
    ]


def env_placeholders(path: Path = PREFECT_FILE) -> set[str]:
    """Names of the ``{{ $VAR }}`` environment placeholders in the file's values."""
    return set(re.findall(r"{{\s*\$(\w+)\s*}}", json.dumps(load_prefect_file(path))))


def template_env(workdir: Path, data_dir: Path | None) -> dict[str, str]:
    """Values of the deploy-time placeholders (CHEXFLOW_REPO is filled on each worker)."""
    workdir = Path(workdir).expanduser().resolve()
    return {
        "CHEXFLOW_WORKDIR": str(workdir),
        "CHEXFLOW_DATA_DIR": str(
            Path(data_dir).expanduser().resolve() if data_dir else default_data_dir(workdir)
        ),
    }


def default_data_dir(workdir: Path) -> Path:
    """The demo's synthetic dataset: what the paused schedule sweeps unless told otherwise."""
    return workdir / "data" / "synthetic-p3000-px64-seed0"


def base_job_template(spec: PoolSpec) -> dict[str, Any]:
    """The pool's job template: the file's, or Prefect's default for a process pool."""
    if spec.template_file:
        return json.loads(spec.template_file.read_text())
    from prefect.workers.process import ProcessWorker

    return ProcessWorker.get_default_base_job_template()


async def ensure_work_pools(specs: tuple[PoolSpec, ...]) -> list[str]:
    """Create the pools that do not exist yet; return the names of those created."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    created = []
    async with get_client() as client:
        for spec in specs:
            try:
                await client.read_work_pool(spec.name)
                continue
            except ObjectNotFound:
                pass
            pool = WorkPoolCreate(
                name=spec.name,
                type=spec.type,
                description=spec.description,
                base_job_template=base_job_template(spec),
            )
            try:
                await client.create_work_pool(pool)
                created.append(spec.name)
            except ObjectAlreadyExists:  # a worker created it meanwhile
                pass
    return created


def prefect_deploy_command(names: list[str]) -> list[str]:
    prefect = Path(sys.executable).parent / "prefect"
    command = [str(prefect) if prefect.exists() else "prefect", "--no-prompt", "deploy"]
    command += ["--prefect-file", str(PREFECT_FILE)]
    for name in names:
        command += ["--name", name]
    return command


def apply_deployments(names: list[str], env: dict[str, str]) -> str:
    """Run ``prefect deploy`` for ``names`` from the repository root; return its output."""
    try:
        result = subprocess.run(
            prefect_deploy_command(names),
            cwd=REPO,
            env={**_without_repo(os.environ), **env, "PREFECT_CLI_COLORS": "false"},
            capture_output=True,
            text=True,
            timeout=DEPLOY_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ChexflowError(f"prefect deploy did not finish in {DEPLOY_TIMEOUT_S} s") from None
    output = (result.stdout or "") + (result.stderr or "")
    if result.returncode != 0:
        lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
        raise ChexflowError(f"prefect deploy failed: {lines[-1] if lines else result.returncode}")
    return output


def _without_repo(environ: Mapping[str, str]) -> dict[str, str]:
    """Keep ``{{ $CHEXFLOW_REPO }}`` unresolved: each worker fills in its own checkout."""
    return {k: v for k, v in environ.items() if k != "CHEXFLOW_REPO"}


def _quiet(_line: str) -> None:
    return None


def deploy(
    workdir: Path = Path(".chexflow"),
    data_dir: Path | None = None,
    kubernetes: bool = False,
    echo: Callable[[str], None] = _quiet,
) -> dict[str, Any]:
    """Create the work pools and apply the deployments; return what was done.

    ``echo`` gets one line as each step starts and ends (applying takes a minute or two).
    """
    api = os.environ.get("PREFECT_API_URL")
    if not api:
        raise ChexflowError(
            "PREFECT_API_URL is not set: start a server (`chexflow up`) and export the "
            "environment it prints"
        )
    pools = (*POOLS, K8S_POOL_SPEC) if kubernetes else POOLS
    echo(f"checking work pools at {api}: {', '.join(p.name for p in pools)}")
    try:
        created = asyncio.run(ensure_work_pools(pools))
    except Exception as exc:
        if type(exc).__name__ in ("ConnectError", "HTTPStatusError", "ConnectTimeout"):
            raise ChexflowError(f"Prefect API at {api} is not reachable: {exc}") from None
        raise
    echo(f"  created: {', '.join(created)}" if created else "  all exist")
    names = deployment_names(kubernetes)
    echo(f"applying {len(names)} deployments with `prefect deploy` (a minute or two)...")
    started = time.monotonic()
    apply_deployments(names, template_env(workdir, data_dir))
    echo(f"  applied in {time.monotonic() - started:.0f} s")
    return {"api": api, "pools_created": created, "pools": [p.name for p in pools],
            "deployments": names}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(".chexflow"))
    parser.add_argument("--data", type=Path, default=None, help="Dataset of the schedule.")
    parser.add_argument("--kubernetes", action="store_true", help="Also the k8s GPU pool.")
    args = parser.parse_args(argv)
    try:
        done = deploy(args.workdir, args.data, args.kubernetes, echo=print)
    except ChexflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(done, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
