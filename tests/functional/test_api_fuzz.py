"""No input produces a 500: schemathesis against the API's own OpenAPI document.

Every operation in ``/openapi.json`` gets generated requests (bounded and
derandomized, so a run is repeatable), as an admin and as a member, at
microversion 2.1 and at the newest one served. Each
answer must be below 500, and every error must be in Nova's fault format.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from resizeflow.api.microversion import MAX_VERSION
from tests.support.apiapp import InProcessAPI, build_inprocess_api

MAX = f"{MAX_VERSION[0]}.{MAX_VERSION[1]}"

FAULTS = {
    "badRequest",
    "unauthorized",
    "forbidden",
    "itemNotFound",
    "badMethod",
    "conflictingRequest",
    "overLimit",
    "computeFault",
}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessAPI]:
    built = build_inprocess_api(Path(tmp_path_factory.mktemp("fuzz")))
    # Some servers to find, in the admin's project and another.
    for project in ("admin", "p-fuzz"):
        built.server(project)
    yield built
    built.db.dispose()


def check_response(resp: Any) -> None:
    assert resp.status_code < 500, f"{resp.status_code}: {resp.text}"
    if resp.status_code >= 400:
        body = resp.json()
        assert set(body) <= FAULTS and len(body) == 1, body
        (fault,) = body.values()
        assert fault["code"] == resp.status_code and fault["message"]


def test_the_openapi_document_lists_the_lifecycle(api: InProcessAPI) -> None:
    doc = api.client.get("/openapi.json").json()
    paths = set(doc["paths"])
    assert {
        "/v2.1/servers",
        "/v2.1/servers/detail",
        "/v2.1/servers/{server_id}",
        "/v2.1/servers/{server_id}/action",
        "/v2.1/servers/{server_id}/os-instance-actions/{request_id}",
        "/v2.1/flavors/{flavor_id}",
        "/v2.1/os-migrations",
        "/v2.1/os-hypervisors/detail",
        "/v2.1/os-services",
    } <= paths


@pytest.mark.parametrize("version", ["2.1", MAX])
@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
@pytest.mark.parametrize("token", ["admin:admin", "alice:p-fuzz"])
def test_no_input_produces_a_server_error(
    api: InProcessAPI, token: str, mode: GenerationMode, version: str
) -> None:
    """Valid requests (positive) and requests that break the schema (negative), at the
    oldest and the newest microversion (the routes read different parameters at each)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app)
    checked = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=15,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            headers = {"X-Auth-Token": token, "OpenStack-API-Version": f"compute {version}"}
            check_response(case.call(headers=headers))

        try:
            call()
        except Unsatisfiable:
            # Nothing to break: the operation takes no parameters and no body.
            assert mode is GenerationMode.NEGATIVE
            continue
        checked += 1
    assert checked >= (15 if mode is GenerationMode.POSITIVE else 10)
