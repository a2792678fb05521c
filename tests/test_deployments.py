"""deployments/: prefect.yaml, the work-pool templates and `chexflow deploy` (no server)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from typer.testing import CliRunner

from deployments import deploy as dep
from flows.cli import app

runner = CliRunner()
DEPLOYMENTS = dep.load_prefect_file()["deployments"]
BY_NAME = {d["name"]: d for d in DEPLOYMENTS}


def _templated(value: Any, env: dict[str, str]) -> Any:
    """What `prefect deploy` makes of ``{{ $VAR }}`` placeholders (read from os.environ)."""
    from prefect.utilities.templating import apply_values

    with mock.patch.dict(os.environ, env):
        return apply_values(value, {}, remove_notset=False)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return dep.template_env(tmp_path_factory.mktemp("work"), None)


def _load_flow(entrypoint: str):
    from prefect.flows import load_flow_from_entrypoint

    path, _, _ = entrypoint.partition(":")
    assert (dep.REPO / path).is_file(), entrypoint
    return load_flow_from_entrypoint(str(dep.REPO / entrypoint))


def test_expected_deployments_pools_and_metadata() -> None:
    assert set(BY_NAME) == {
        "chexflow-finetune",
        "chexflow-sweep",
        "chexflow-compare",
        "chexflow-finetune-k8s",
    }
    pools = {d["name"]: d["work_pool"]["name"] for d in DEPLOYMENTS}
    assert pools["chexflow-finetune"] == "chexflow-gpu"
    assert pools["chexflow-sweep"] == pools["chexflow-compare"] == "chexflow-cpu"
    assert pools["chexflow-finetune-k8s"] == dep.K8S_POOL
    known = {p.name for p in (*dep.POOLS, dep.K8S_POOL_SPEC)}
    for deployment in DEPLOYMENTS:
        assert deployment["enforce_parameter_schema"] is True
        assert deployment["description"].strip()
        assert "chexflow" in deployment["tags"]
        assert deployment["work_pool"]["name"] in known


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_entrypoint_exists_and_parameters_validate(name: str, env: dict[str, str]) -> None:
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    deployment = BY_NAME[name]
    flow = _load_flow(deployment["entrypoint"])
    assert flow.name == deployment["entrypoint"].rsplit(":", 1)[1]
    schema = parameter_schema(flow).model_dump()
    parameters = _templated(deployment.get("parameters") or {}, env)
    assert set(parameters) <= set(schema["properties"])
    errors = validate(parameters, schema, ignore_required=True)
    assert not errors, errors
    for schedule in deployment.get("schedules") or []:
        # A scheduled run gets the deployment's parameters plus the schedule's: complete.
        merged = {**parameters, **_templated(schedule.get("parameters") or {}, env)}
        flow.validate_parameters(merged)


def test_sweep_schedule_is_paused_cron_and_dispatches_to_the_gpu_deployment() -> None:
    sweep = BY_NAME["chexflow-sweep"]
    (schedule,) = sweep["schedules"]
    assert schedule["active"] is False
    assert len(schedule["cron"].split()) == 5
    target = sweep["parameters"]["deployment"]
    flow_name, deployment_name = target.split("/")
    assert BY_NAME[deployment_name]["entrypoint"].endswith(f":{flow_name}")
    assert BY_NAME[deployment_name]["work_pool"]["name"] == "chexflow-gpu"
    assert sweep["parameters"]["dispatch_to"] == "deployment"


def test_bad_parameters_fail_the_schema() -> None:
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    schema = parameter_schema(_load_flow(BY_NAME["chexflow-sweep"]["entrypoint"])).model_dump()
    assert validate({"data_dir": "/d", "fractions": "lots"}, schema)
    assert validate({"data_dir": "/d", "config": {"train": {"epochs": "x"}}}, schema)


def test_placeholders_are_all_provided(env: dict[str, str]) -> None:
    # CHEXFLOW_REPO stays a placeholder: each worker resolves it to its own checkout.
    assert dep.env_placeholders() == set(env) | {"CHEXFLOW_REPO"}
    assert "CHEXFLOW_REPO" not in env
    (pull,) = dep.load_prefect_file()["pull"]
    directory = pull["prefect.deployments.steps.set_working_directory"]["directory"]
    assert _templated(directory, {"CHEXFLOW_REPO": str(dep.REPO)}) == str(dep.REPO)


def test_deploy_names_skip_kubernetes_unless_asked() -> None:
    assert "chexflow-finetune-k8s" not in dep.deployment_names(kubernetes=False)
    assert "chexflow-finetune-k8s" in dep.deployment_names(kubernetes=True)
    command = dep.prefect_deploy_command(dep.deployment_names(kubernetes=False))
    assert command[1:3] == ["--no-prompt", "deploy"]
    assert str(dep.PREFECT_FILE) in command


def test_kubernetes_template_requests_one_gpu() -> None:
    template = json.loads(dep.K8S_TEMPLATE.read_text())
    assert set(template) == {"job_configuration", "variables"}
    manifest = _resolve_manifest(template)
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"] == template["variables"]["properties"]["image"]["default"]
    assert container["env"]["MLFLOW_TRACKING_URI"].startswith("http")
    assert manifest["spec"]["backoffLimit"] == 0


def _resolve_manifest(template: dict[str, Any]) -> dict[str, Any]:
    """The job manifest with every variable at its default, as a worker would render it."""
    from prefect.utilities.templating import apply_values

    defaults = {
        key: spec["default"]
        for key, spec in template["variables"]["properties"].items()
        if "default" in spec
    }
    return apply_values(template["job_configuration"]["job_manifest"], defaults)


def test_dockerfile_matches_the_kubernetes_deployment() -> None:
    dockerfile = (dep.HERE / "Dockerfile").read_text()
    pull = BY_NAME["chexflow-finetune-k8s"]["pull"][0]
    directory = pull["prefect.deployments.steps.set_working_directory"]["directory"]
    assert f"CHEXFLOW_REPO={directory}" in dockerfile
    assert re.search(rf"^WORKDIR {re.escape(directory)}$", dockerfile, re.M)
    assert "pip install" in dockerfile


def test_deploy_without_api_url_is_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = runner.invoke(app, ["deploy", "--workdir", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "PREFECT_API_URL" in lines[0], result.output
    assert "Traceback" not in result.output
