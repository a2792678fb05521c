"""Every deployment's parameter schema carries every bound, and the server enforces it.

The deployments of ``deployments/prefect.yaml`` are created on a real temporary Prefect
server with the schema ``prefect deploy`` computes and ``enforce_parameter_schema``; bad
values are then submitted through ``create_flow_run_from_deployment``, the call the UI's
run form makes. A value the flow would refuse only after a worker started it (the sweep's
``fractions: [1.5]`` did) must be refused here, before any run exists.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from deployments import deploy as dep

DEPLOYMENTS = {d["name"]: d for d in dep.load_prefect_file()["deployments"]}
GOOD_CONFIG: dict[str, Any] = {"train": {"epochs": 1}}

# Values each flow refuses, grouped by deployment; every one must be refused by the server.
BAD_CONFIGS: list[dict[str, Any]] = [
    {"train": {"epochs": 0}},
    {"train": {"lr": 0}},
    {"data": {"image_size": 8}},
    {"data": {"label_policy": {"Nodule": "ones"}}},
    {"analysis": {"tsne_seeds": [-1]}},
    {"analysis": {"tsne_seeds": [0, 0]}},
    {"analysis": {"perplexities": [0]}},
    {"analysis": {"perplexities": [30.0, 30.0]}},
    {"analysis": {"fdr": 1}},
    {"unknown_section": {}},
]
BAD: dict[str, list[dict[str, Any]]] = {
    "finetune": [
        {"fraction": 1.5},
        {"fraction": 0},
        {"seed": -1},
        *({"fraction": 0.1, "config": c} for c in BAD_CONFIGS),
    ],
    "sweep": [
        {"fractions": [1.5]},
        {"fractions": [0]},
        {"fractions": []},
        {"fractions": [0.1, 0.1]},
        {"seeds": [-1]},
        {"seeds": [0, 0]},
        {"dispatch_to": "cloud"},
        *({"config": c} for c in BAD_CONFIGS),
    ],
    "compare": [*({"run_ids": ["a"], "config": c} for c in BAD_CONFIGS)],
}
GOOD: dict[str, dict[str, Any]] = {
    "finetune": {"data_dir": "/d", "fraction": 0.1, "seed": 0, "config": GOOD_CONFIG},
    "sweep": {"data_dir": "/d", "fractions": [0.01, 1.0], "seeds": [0, 1]},
    "compare": {"run_ids": ["a", "b"], "config": GOOD_CONFIG},
}


def _flow_of(entrypoint: str):
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(str(dep.REPO / entrypoint))


def _schema(name: str) -> dict[str, Any]:
    """The parameter schema `prefect deploy` sends for this deployment."""
    from prefect.utilities.callables import parameter_schema

    return parameter_schema(_flow_of(DEPLOYMENTS[name]["entrypoint"])).model_dump()


@pytest.fixture(scope="module")
def deployed(prefect_api) -> dict[str, Any]:
    """Each prefect.yaml deployment on the test server: name → deployment id."""
    from prefect import get_client

    async def create() -> dict[str, Any]:
        ids = {}
        async with get_client() as client:
            for name, spec in DEPLOYMENTS.items():
                flow = _flow_of(spec["entrypoint"])
                flow_id = await client.create_flow(flow)
                ids[name] = await client.create_deployment(
                    flow_id,
                    f"schema-{name}",
                    parameter_openapi_schema=_schema(name),
                    enforce_parameter_schema=spec["enforce_parameter_schema"],
                    parameters={"workdir": "/w"},
                    paused=True,
                )
        return ids

    return asyncio.run(create())


def _submit(deployment_id: Any, parameters: dict[str, Any]) -> str:
    """Create a flow run as the UI's form does; the HTTP status, or 'created'."""
    from prefect import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    async def go() -> str:
        async with get_client() as client:
            try:
                await client.create_flow_run_from_deployment(deployment_id, parameters=parameters)
            except PrefectHTTPStatusError as exc:
                return str(exc.response.status_code)
        return "created"

    return asyncio.run(go())


def _flow_kind(name: str) -> str:
    return DEPLOYMENTS[name]["entrypoint"].rsplit(":", 1)[1]


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_the_server_refuses_every_bad_value_before_a_run_exists(
    deployed: dict[str, Any], name: str
) -> None:
    kind = _flow_kind(name)
    base = GOOD[kind]
    assert _submit(deployed[name], base) == "created"  # the good values pass
    accepted = []
    for bad in BAD[kind]:
        status = _submit(deployed[name], {**base, **bad})
        if status != "409":
            accepted.append((bad, status))
    assert not accepted, f"{name}: accepted by the server: {accepted}"


def test_sweep_fraction_items_carry_the_unit_interval() -> None:
    fractions = _schema("chexflow-sweep")["properties"]["fractions"]
    assert fractions["items"]["exclusiveMinimum"] == 0
    assert fractions["items"]["maximum"] == 1
    assert fractions["uniqueItems"] is True and fractions["minItems"] == 1


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_form_help_text_has_no_angle_brackets(name: str) -> None:
    # The Prefect UI renders descriptions as HTML: "<workdir>/cache" showed as "/cache".
    text = json.dumps(_schema(name))
    assert "<" not in text and ">" not in text, name
