"""The REST API's contract with clients, in process: versions, auth, policy, errors, shapes.

No worker runs here; servers are rows in the state each test needs.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from resizeflow.api.microversion import MAX_VERSION
from resizeflow.db.models import Instance, InstanceAction, Migration
from resizeflow.states import MigrationStatus, TaskState, VmState
from tests.support.apiapp import InProcessAPI, build_inprocess_api, headers

MAX = f"{MAX_VERSION[0]}.{MAX_VERSION[1]}"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessAPI]:
    built = build_inprocess_api(Path(tmp_path_factory.mktemp("api")))
    yield built
    built.db.dispose()


def fault(resp: object, code: int, name: str) -> str:
    assert resp.status_code == code, resp.text  # type: ignore[attr-defined]
    body = resp.json()  # type: ignore[attr-defined]
    assert list(body) == [name], body
    assert body[name]["code"] == code
    return str(body[name]["message"])


# -- discovery and microversions ---------------------------------------------------
def test_version_discovery_needs_no_token(api: InProcessAPI) -> None:
    root = api.client.get("/")
    assert root.status_code == 200
    # As Nova lists them: the deprecated v2.0 first, then v2.1.
    legacy, doc = root.json()["versions"]
    assert (legacy["id"], legacy["status"]) == ("v2.0", "DEPRECATED")
    assert (doc["id"], doc["min_version"], doc["version"]) == ("v2.1", "2.1", MAX)
    for path in ("/v2.1/", "/v2.1"):
        one = api.client.get(path).json()["version"]
        assert one["version"] == MAX and one["status"] == "CURRENT"
        assert one["links"][0]["href"].endswith("/v2.1/")


def test_metrics_are_served_without_a_token(api: InProcessAPI) -> None:
    resp = api.client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert "/metrics" not in api.client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    ("hdrs", "chosen"),
    [
        ({}, "2.1"),
        ({"OpenStack-API-Version": "compute 2.9"}, "2.9"),
        ({"OpenStack-API-Version": "volume 3.0, compute 2.30"}, "2.30"),
        ({"OpenStack-API-Version": "compute latest"}, MAX),
        ({"X-OpenStack-Nova-API-Version": "2.20"}, "2.20"),
        # The new header wins over the legacy one.
        ({"OpenStack-API-Version": "compute 2.5", "X-OpenStack-Nova-API-Version": "2.20"}, "2.5"),
    ],
)
def test_the_chosen_version_is_echoed(api: InProcessAPI, hdrs: dict[str, str], chosen: str) -> None:
    resp = api.client.get("/v2.1/flavors", headers={"X-Auth-Token": "a:b", **hdrs})
    assert resp.status_code == 200
    assert resp.headers["OpenStack-API-Version"] == f"compute {chosen}"
    assert resp.headers["X-OpenStack-Nova-API-Version"] == chosen
    assert "OpenStack-API-Version" in resp.headers["Vary"]
    assert resp.headers["X-OpenStack-Request-Id"].startswith("req-")


@pytest.mark.parametrize("version", ["2.97", "2.100", "3.0", "2.0", "1.1"])
def test_an_unsupported_version_is_406(api: InProcessAPI, version: str) -> None:
    resp = api.client.get("/v2.1/flavors", headers=headers("a:b", version))
    message = fault(resp, 406, "computeFault")
    assert message == (
        f"Version {version} is not supported by the API. Minimum is 2.1 and maximum is {MAX}."
    )


def test_a_malformed_version_is_400(api: InProcessAPI) -> None:
    resp = api.client.get("/v2.1/flavors", headers=headers("a:b", "two"))
    assert "API Version String two is of invalid format" in fault(resp, 400, "badRequest")


def test_server_shape_follows_the_microversion(api: InProcessAPI) -> None:
    uid = api.server("p-shape")
    old = api.request(
        "GET", f"/v2.1/servers/{uid}", "u:p-shape", headers=headers("u:p-shape", "2.1")
    )
    new = api.request("GET", f"/v2.1/servers/{uid}", "u:p-shape")
    old_s, new_s = old.json()["server"], new.json()["server"]
    assert old_s["flavor"]["id"] == "1" and "links" in old_s["flavor"]
    assert "locked" not in old_s and "tags" not in old_s
    assert new_s["flavor"] == {
        "vcpus": 1,
        "ram": 512,
        "disk": 1,
        "ephemeral": 0,
        "swap": 0,
        "original_name": "m1.tiny",
        "extra_specs": {},
    }
    assert new_s["locked"] is False and new_s["tags"] == []
    assert (new_s["status"], new_s["OS-EXT-STS:vm_state"]) == ("ACTIVE", "active")
    assert new_s["OS-EXT-STS:task_state"] is None and new_s["OS-EXT-STS:power_state"] == 1
    # Only admins see where a server runs.
    assert "OS-EXT-SRV-ATTR:host" not in new_s
    admin = api.request("GET", f"/v2.1/servers/{uid}").json()["server"]
    assert admin["OS-EXT-SRV-ATTR:host"] == "hostA"
    assert admin["OS-EXT-SRV-ATTR:hypervisor_hostname"] == "hostA"


@pytest.mark.parametrize(
    ("vm", "task", "status"),
    [
        (VmState.ACTIVE, TaskState.RESIZE_PREP, "RESIZE"),
        (VmState.RESIZED, None, "VERIFY_RESIZE"),
        (VmState.RESIZED, TaskState.RESIZE_REVERTING, "REVERT_RESIZE"),
        (VmState.STOPPED, None, "SHUTOFF"),
        (VmState.ERROR, None, "ERROR"),
    ],
)
def test_status_is_derived_as_nova_does(
    api: InProcessAPI, vm: VmState, task: TaskState | None, status: str
) -> None:
    uid = api.server("p-status", vm, task)
    body = api.request("GET", f"/v2.1/servers/{uid}").json()["server"]
    assert body["status"] == status
    assert body["OS-EXT-STS:task_state"] == (task.value if task else None)


# -- authentication and visibility -----------------------------------------------------
def test_a_missing_token_is_401(api: InProcessAPI) -> None:
    resp = api.client.get("/v2.1/servers")
    assert fault(resp, 401, "unauthorized")


def test_another_projects_server_is_404(api: InProcessAPI) -> None:
    uid = api.server("p-owner")
    for method, path, body in (
        ("GET", f"/v2.1/servers/{uid}", None),
        ("POST", f"/v2.1/servers/{uid}/action", {"os-stop": None}),
        ("DELETE", f"/v2.1/servers/{uid}", None),
        ("GET", f"/v2.1/servers/{uid}/os-instance-actions", None),
    ):
        resp = api.request(method, path, "mallory:p-other", json=body)
        assert fault(resp, 404, "itemNotFound") == f"Instance {uid} could not be found."
    listed = api.request("GET", "/v2.1/servers", "mallory:p-other").json()["servers"]
    assert uid not in {s["id"] for s in listed}
    assert api.request("GET", f"/v2.1/servers/{uid}", "bob:p-owner").status_code == 200


@pytest.mark.parametrize(
    "server_id",
    ["nope", "1", "6f1c1e52-8d5b-4d52-9a3e-2f0f4c1b7a10", "x" * 300],
    ids=["word", "integer", "unknown-uuid", "too-long"],
)
def test_unknown_or_malformed_server_ids_are_404(api: InProcessAPI, server_id: str) -> None:
    for method, path in (("GET", ""), ("DELETE", ""), ("POST", "/action")):
        body = {"confirmResize": None} if path else None
        resp = api.request(method, f"/v2.1/servers/{server_id}{path}", json=body)
        assert fault(resp, 404, "itemNotFound") == f"Instance {server_id} could not be found."


def test_list_filters_by_status(api: InProcessAPI) -> None:
    active, stopped = api.server("p-st"), api.server("p-st", VmState.STOPPED)
    token = "u:p-st"

    def listed(query: str, version: str = "latest") -> list[str]:
        hdrs = headers(token, version)
        resp = api.request("GET", f"/v2.1/servers/detail?{query}", token, headers=hdrs)
        assert resp.status_code == 200, resp.text
        return [s["id"] for s in resp.json()["servers"]]

    assert listed("status=SHUTOFF") == [stopped]
    assert listed("status=active") == [active]
    assert listed("status=PAUSED") == []
    assert listed("status=bogus", "2.37") == []
    resp = api.request("GET", "/v2.1/servers?status=bogus", token)
    assert fault(resp, 400, "badRequest") == "Invalid status value"


def test_list_order_is_novas_created_second_then_uuid(api: InProcessAPI) -> None:
    """Newest first by the whole second of creation; within one second, by uuid ascending
    (Nova's created_at has no fraction, and its lister appends uuid ascending)."""
    ids = [api.server("p-order") for _ in range(4)]
    base = dt.datetime(2026, 1, 2, 3, 4, 5)
    # Created in this order: ids[0] and ids[1] in one second, ids[2] and ids[3] in the next.
    created = {
        ids[0]: base.replace(microsecond=100000),
        ids[1]: base.replace(microsecond=900000),
        ids[2]: base + dt.timedelta(seconds=1, microseconds=800000),
        ids[3]: base + dt.timedelta(seconds=1, microseconds=200000),
    }
    with api.db.transaction() as s:
        for uid, when in created.items():
            s.get(Instance, uid).created_at = when  # type: ignore[union-attr]
    expected = [*sorted(ids[2:]), *sorted(ids[:2])]
    for path in ("/v2.1/servers", "/v2.1/servers/detail"):
        listed = api.request("GET", path, "alice:p-order").json()["servers"]
        assert [s["id"] for s in listed] == expected
    # Pages follow the same order.
    first = api.request("GET", "/v2.1/servers?limit=3", "alice:p-order").json()["servers"]
    rest = api.request("GET", f"/v2.1/servers?marker={first[-1]['id']}", "alice:p-order").json()[
        "servers"
    ]
    assert [s["id"] for s in first + rest] == expected


def test_only_admins_list_every_project(api: InProcessAPI) -> None:
    mine, theirs = api.server("p-list-a"), api.server("p-list-b")
    resp = api.request("GET", "/v2.1/servers?all_tenants=1", "alice:p-list-a")
    assert "all_tenants" in fault(resp, 403, "forbidden")
    every = api.request("GET", "/v2.1/servers/detail?all_tenants=True").json()["servers"]
    assert {mine, theirs} <= {s["id"] for s in every}
    own = api.request("GET", "/v2.1/servers/detail", "alice:p-list-a").json()["servers"]
    assert [s["id"] for s in own] == [mine]


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/v2.1/os-migrations", "GET"),
        ("/v2.1/os-hypervisors/detail", "GET"),
        ("/v2.1/os-services", "GET"),
        ("/v2.1/os-aggregates", "GET"),
        ("/v2.1/flavors/1", "DELETE"),
    ],
)
def test_admin_resources_are_forbidden_to_members(
    api: InProcessAPI, path: str, method: str
) -> None:
    resp = api.request(method, path, "alice:p-member")
    # Nova names its own rule: os_compute_api:...
    assert fault(resp, 403, "forbidden").startswith("Policy doesn't allow os_compute_api:")


def test_forcing_a_host_is_admin_only(api: InProcessAPI) -> None:
    body = {"server": {"name": "x", "flavorRef": "1", "networks": "none"}}
    body["server"]["availability_zone"] = "nova:hostB"
    resp = api.request("POST", "/v2.1/servers", "alice:p-force", json=body)
    assert fault(resp, 403, "forbidden") == (
        "Policy doesn't allow os_compute_api:servers:create:forced_host to be performed."
    )
    resp = api.request("POST", "/v2.1/servers", json=body)
    assert resp.status_code == 202
    uid = resp.json()["server"]["id"]
    assert resp.headers["Location"].endswith(f"/v2.1/servers/{uid}")
    shown = api.request("GET", f"/v2.1/servers/{uid}").json()["server"]
    assert (shown["status"], shown["OS-EXT-SRV-ATTR:host"]) == ("BUILD", "hostB")


# -- request validation -------------------------------------------------------------------
def test_malformed_json_is_400(api: InProcessAPI) -> None:
    resp = api.request(
        "POST",
        "/v2.1/servers",
        content=b'{"server": ',
        headers={"Content-Type": "application/json"},
    )
    assert fault(resp, 400, "badRequest") == "Malformed request body"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"server": {"flavorRef": "1", "networks": "none"}},
            "Invalid input for field/attribute server. Value: {'flavorRef': '1', "
            "'networks': 'none'}. 'name' is a required property",
        ),
        (
            {"server": {"name": "x", "networks": "none"}},
            "Invalid input for field/attribute server. Value: {'name': 'x', "
            "'networks': 'none'}. 'flavorRef' is a required property",
        ),
        (
            {"server": {"name": "", "flavorRef": "1", "networks": "none"}},
            "Invalid input for field/attribute name. Value: . '' should be non-empty",
        ),
        (
            {"server": {"name": "x", "flavorRef": "1", "networks": "some"}},
            "Invalid input for field/attribute networks",
        ),
        (
            {"server": {"name": "x", "flavorRef": "1", "networks": "none", "bogus": 1}},
            "Invalid input for field/attribute server. Value: {'name': 'x', 'flavorRef': '1', "
            "'networks': 'none', 'bogus': 1}. Additional properties are not allowed "
            "('bogus' was unexpected)",
        ),
        (
            {"server": {"name": "x", "flavorRef": "1", "networks": "none", "metadata": {"k": 1}}},
            "Invalid input for field/attribute k. Value: 1. 1 is not of type 'string'",
        ),
        (
            {"server": {"name": "x", "flavorRef": "1", "networks": "none", "max_count": 2}},
            "Invalid input for field/attribute max_count",
        ),
        ({"server": {"name": "x", "flavorRef": "1"}}, "Invalid input for field/attribute server"),
        ({"servers": {}}, "'server' is a required property"),
        # Fields a later microversion added are unexpected before it.
        (
            {"server": {"name": "x", "flavorRef": "1", "networks": "none", "hostname": "h"}},
            "Invalid input for field/attribute server. Value: {'name': 'x', 'flavorRef': '1', "
            "'networks': 'none', 'hostname': 'h'}. Additional properties are not allowed "
            "('hostname' was unexpected)",
        ),
    ],
)
def test_boot_schema_violations_say_what_nova_says(
    api: InProcessAPI, body: dict[str, object], message: str
) -> None:
    hdrs = headers(version="2.89")
    found = fault(api.request("POST", "/v2.1/servers", json=body, headers=hdrs), 400, "badRequest")
    assert found.startswith(message), found


def test_boot_fields_follow_the_microversion(api: InProcessAPI) -> None:
    body = {"server": {"name": "x", "flavorRef": "1", "description": "d"}}
    found = fault(
        api.request("POST", "/v2.1/servers", json=body, headers=headers(version="2.18")),
        400,
        "badRequest",
    )
    assert found.endswith("Additional properties are not allowed ('description' was unexpected)")
    resp = api.request("POST", "/v2.1/servers", json=body, headers=headers(version="2.19"))
    assert resp.status_code == 202, resp.text
    shown = api.request("GET", f"/v2.1/servers/{resp.json()['server']['id']}").json()
    assert shown["server"]["description"] == "d"
    # 'auto' and 'none' are 2.37's; before, networks is a list.
    body = {"server": {"name": "x", "flavorRef": "1", "networks": "none"}}
    found = fault(
        api.request("POST", "/v2.1/servers", json=body, headers=headers(version="2.36")),
        400,
        "badRequest",
    )
    assert found.startswith("Invalid input for field/attribute networks. Value: none.")


def test_boot_with_an_unknown_flavor_or_zone_is_400(api: InProcessAPI) -> None:
    body = {"server": {"name": "x", "flavorRef": "999", "networks": "none"}}
    assert fault(api.request("POST", "/v2.1/servers", json=body), 400, "badRequest") == (
        "Flavor 999 could not be found."
    )
    body = {
        "server": {"name": "x", "flavorRef": "1", "networks": "none", "availability_zone": "az9"}
    }
    assert "availability zone" in fault(
        api.request("POST", "/v2.1/servers", json=body), 400, "badRequest"
    )
    body["server"]["availability_zone"] = "nova:nohost"
    assert fault(api.request("POST", "/v2.1/servers", json=body), 400, "badRequest") == (
        "Compute host nohost could not be found."
    )


def test_networks_may_be_omitted_before_2_37(api: InProcessAPI) -> None:
    body = {"server": {"name": "old-client", "flavorRef": 1}}
    resp = api.request("POST", "/v2.1/servers", json=body, headers=headers(version="2.36"))
    assert resp.status_code == 202, resp.text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"fly": None}, "There is no such action: fly"),
        # Nova's action_peek: an action body has exactly one key.
        ({}, "Malformed request body"),
        ({"os-stop": None, "os-start": None}, "Malformed request body"),
        (
            {"resize": {}},
            "Invalid input for field/attribute resize. Value: {}. "
            "'flavorRef' is a required property",
        ),
        ({"resize": None}, "Invalid input for field/attribute resize"),
        (
            {"resize": {"flavorRef": "2", "x": 1}},
            "Invalid input for field/attribute resize. Value: {'flavorRef': '2', 'x': 1}. "
            "Additional properties are not allowed ('x' was unexpected)",
        ),
        ({"resize": {"flavorRef": ""}}, "Invalid input for field/attribute flavorRef"),
        ([1, 2], "Malformed request body"),
    ],
)
def test_bad_action_bodies_are_400(api: InProcessAPI, body: object, message: str) -> None:
    uid = api.server("p-actions")
    resp = api.request("POST", f"/v2.1/servers/{uid}/action", json=body)
    assert fault(resp, 400, "badRequest").startswith(message)


@pytest.mark.parametrize(
    "body",
    [
        # Nova has no request schema for these: any value is accepted (tempest sends {}).
        {"os-stop": {}},
        {"os-stop": {"force": True}},
        {"lock": {}},
        {"lock": "anything"},
    ],
)
def test_action_bodies_nova_accepts_are_accepted(api: InProcessAPI, body: object) -> None:
    uid = api.server("p-accept")
    resp = api.request(
        "POST", f"/v2.1/servers/{uid}/action", json=body, headers=headers(version="2.72")
    )
    assert resp.status_code == 202, resp.text


def test_lock_reason_is_checked_and_shown_from_2_73(api: InProcessAPI) -> None:
    uid = api.server("p-reason")
    path = f"/v2.1/servers/{uid}/action"
    resp = api.request("POST", path, json={"lock": "x"}, headers=headers(version="2.73"))
    assert fault(resp, 400, "badRequest").startswith("Invalid input for field/attribute lock")
    resp = api.request("POST", path, json={"lock": {"locked_reason": "x" * 256}})
    assert fault(resp, 400, "badRequest").startswith(
        "Invalid input for field/attribute locked_reason"
    )
    resp = api.request("POST", path, json={"lock": {"locked_reason": "audit"}})
    assert resp.status_code == 202, resp.text
    shown = api.request("GET", f"/v2.1/servers/{uid}").json()["server"]
    assert (shown["locked"], shown["locked_reason"]) == (True, "audit")
    assert "locked_reason" not in shown["metadata"]
    old = api.request("GET", f"/v2.1/servers/{uid}", headers=headers(version="2.72"))
    assert "locked_reason" not in old.json()["server"]
    assert api.request("POST", path, json={"unlock": {}}).status_code == 202
    shown = api.request("GET", f"/v2.1/servers/{uid}").json()["server"]
    assert (shown["locked"], shown["locked_reason"]) == (False, None)


def test_a_body_over_one_mib_is_413(api: InProcessAPI) -> None:
    big = json.dumps({"server": {"name": "x" * (1024 * 1024), "flavorRef": "1"}})
    resp = api.request(
        "POST", "/v2.1/servers", content=big, headers={"Content-Type": "application/json"}
    )
    assert fault(resp, 413, "overLimit") == "Request Entity Too Large"

    def chunks() -> Iterator[bytes]:
        # No Content-Length: the limit holds for a streamed body too.
        for _ in range(20):
            yield b"x" * 65536

    resp = api.request("POST", "/v2.1/servers", content=chunks())
    assert fault(resp, 413, "overLimit") == "Request Entity Too Large"


# -- state errors, with Nova's messages -----------------------------------------------------
def test_confirm_or_revert_of_an_active_server_is_409(api: InProcessAPI) -> None:
    uid = api.server("p-409")
    for action in ("confirmResize", "revertResize"):
        resp = api.request("POST", f"/v2.1/servers/{uid}/action", json={action: None})
        assert fault(resp, 409, "conflictingRequest") == (
            f"Cannot '{action}' instance {uid} while it is in vm_state active"
        )


def test_confirm_without_a_finished_migration_is_400(api: InProcessAPI) -> None:
    uid = api.server("p-400", VmState.RESIZED)
    resp = api.request("POST", f"/v2.1/servers/{uid}/action", json={"confirmResize": None})
    assert fault(resp, 400, "badRequest") == "Instance has not been resized."


def test_a_server_with_a_task_cannot_be_resized_but_can_be_deleted(api: InProcessAPI) -> None:
    uid = api.server("p-task", VmState.ACTIVE, TaskState.POWERING_OFF)
    resp = api.request("POST", f"/v2.1/servers/{uid}/action", json={"resize": {"flavorRef": "2"}})
    assert fault(resp, 409, "conflictingRequest") == (
        f"Cannot 'resize' instance {uid} while it is in task_state powering-off"
    )
    # Nova accepts a delete in any task_state; the stop in flight then does nothing.
    resp = api.request("DELETE", f"/v2.1/servers/{uid}")
    assert resp.status_code == 204, resp.text
    shown = api.request("GET", f"/v2.1/servers/{uid}").json()["server"]
    assert shown["OS-EXT-STS:task_state"] == "deleting"


def test_a_locked_server_refuses_its_owner(api: InProcessAPI) -> None:
    uid = api.server("p-lock")
    assert (
        api.request("POST", f"/v2.1/servers/{uid}/action", json={"lock": None}).status_code == 202
    )
    resp = api.request(
        "POST", f"/v2.1/servers/{uid}/action", "alice:p-lock", json={"os-stop": None}
    )
    assert fault(resp, 409, "conflictingRequest") == f"Instance {uid} is locked"
    # An admin's lock is lifted by an admin only.
    resp = api.request("POST", f"/v2.1/servers/{uid}/action", "alice:p-lock", json={"unlock": None})
    assert fault(resp, 403, "forbidden")
    shown = api.request("GET", f"/v2.1/servers/{uid}", "alice:p-lock").json()["server"]
    assert shown["locked"] is True
    assert (
        api.request("POST", f"/v2.1/servers/{uid}/action", json={"unlock": None}).status_code == 202
    )
    assert api.request("GET", f"/v2.1/servers/{uid}").json()["server"]["locked"] is False


def test_resize_errors(api: InProcessAPI) -> None:
    uid = api.server("p-resize")
    for ref, message in (
        ("1", "When resizing, instances must change flavor!"),
        ("404", "Flavor 404 could not be found."),
    ):
        resp = api.request(
            "POST", f"/v2.1/servers/{uid}/action", json={"resize": {"flavorRef": ref}}
        )
        assert fault(resp, 400, "badRequest") == message


def test_a_resize_is_accepted_and_recorded(api: InProcessAPI) -> None:
    uid = api.server("p-accept")
    resp = api.request(
        "POST", f"/v2.1/servers/{uid}/action", "alice:p-accept", json={"resize": {"flavorRef": "2"}}
    )
    assert resp.status_code == 202 and resp.content == b""
    request_id = resp.headers["X-OpenStack-Request-Id"]
    shown = api.request("GET", f"/v2.1/servers/{uid}").json()["server"]
    assert (shown["status"], shown["OS-EXT-STS:task_state"]) == ("RESIZE", "resize_prep")
    actions = api.request("GET", f"/v2.1/servers/{uid}/os-instance-actions", "alice:p-accept")
    (action,) = actions.json()["instanceActions"]
    assert (action["action"], action["request_id"], action["user_id"]) == (
        "resize",
        request_id,
        "alice",
    )
    one = api.request("GET", f"/v2.1/servers/{uid}/os-instance-actions/{request_id}")
    # Scheduled (Nova's conductor's events, newest first); no worker has run a step.
    events = [(e["event"], e["result"]) for e in one.json()["instanceAction"]["events"]]
    assert events == [("cold_migrate", "Success"), ("conductor_migrate_server", "Success")]
    # Before 2.51 members do not see events, as in Nova's default policy; from
    # 2.51 everyone does, without the traceback.
    path = f"/v2.1/servers/{uid}/os-instance-actions/{request_id}"
    member = api.request("GET", path, "alice:p-accept", headers=headers("alice:p-accept", "2.50"))
    assert "events" not in member.json()["instanceAction"]
    member = api.request("GET", path, "alice:p-accept", headers=headers("alice:p-accept", "2.51"))
    assert [e["event"] for e in member.json()["instanceAction"]["events"]] == [
        "cold_migrate",
        "conductor_migrate_server",
    ]
    missing = api.request("GET", f"/v2.1/servers/{uid}/os-instance-actions/req-nope")
    assert fault(missing, 404, "itemNotFound") == "Action req-nope not found"
    migs = api.request("GET", f"/v2.1/os-migrations?instance_uuid={uid}").json()["migrations"]
    assert [(m["status"], m["migration_type"], m["source_compute"]) for m in migs] == [
        ("pre-migrating", "resize", "hostA")
    ]
    with api.db.snapshot() as s:
        assert s.scalar(select(Migration.status).where(Migration.instance_uuid == uid)) == (
            MigrationStatus.PRE_MIGRATING
        )
        assert (
            s.scalar(select(InstanceAction.request_id).where(InstanceAction.instance_uuid == uid))
            == request_id
        )


def test_migration_filters(api: InProcessAPI) -> None:
    uid = api.server("p-migfilter")
    api.request("POST", f"/v2.1/servers/{uid}/action", json={"resize": {"flavorRef": "3"}})

    def ids(query: str) -> set[str]:
        migs = api.request("GET", f"/v2.1/os-migrations?{query}").json()["migrations"]
        return {m["instance_uuid"] for m in migs}

    assert ids(f"instance_uuid={uid}") == {uid}
    assert uid in ids("status=pre-migrating") and uid not in ids("status=finished")
    assert uid in ids("source_compute=hostA") and uid not in ids("source_compute=hostB")
    assert uid in ids("migration_type=resize") and uid not in ids("migration_type=live-migration")


# -- flavors ---------------------------------------------------------------------------------
def test_flavors_list_show_create_delete(api: InProcessAPI) -> None:
    names = [f["name"] for f in api.request("GET", "/v2.1/flavors", "a:b").json()["flavors"]]
    assert names[:5] == ["m1.tiny", "m1.small", "m1.medium", "m1.large", "m1.xlarge"]
    small = api.request("GET", "/v2.1/flavors/2", "a:b").json()["flavor"]
    assert (small["ram"], small["vcpus"], small["disk"]) == (2048, 1, 20)
    body = {"flavor": {"name": "c1.api", "ram": 1024, "vcpus": 2, "disk": 10, "id": "c1api"}}
    assert fault(api.request("POST", "/v2.1/flavors", "a:b", json=body), 403, "forbidden")
    made = api.request("POST", "/v2.1/flavors", json=body)
    assert made.status_code == 200 and made.json()["flavor"]["id"] == "c1api"
    assert fault(api.request("POST", "/v2.1/flavors", json=body), 409, "conflictingRequest") == (
        "Flavor with name c1.api already exists."
    )
    detail = api.request("GET", "/v2.1/flavors/detail", "a:b").json()["flavors"]
    assert {"c1.api"} <= {f["name"] for f in detail}
    assert api.request("DELETE", "/v2.1/flavors/c1api").status_code == 202
    assert fault(api.request("GET", "/v2.1/flavors/c1api", "a:b"), 404, "itemNotFound") == (
        "Flavor c1api could not be found."
    )
    bad = {"flavor": {"name": "c2", "ram": "lots", "vcpus": 1, "disk": 1}}
    assert fault(api.request("POST", "/v2.1/flavors", json=bad), 400, "badRequest").startswith(
        "Invalid input for field/attribute ram. Value: lots. 'lots' is not of type 'integer'"
    )


def test_unknown_routes_and_methods_use_nova_faults(api: InProcessAPI) -> None:
    assert fault(api.request("GET", "/v2.1/nothing-here"), 404, "itemNotFound")
    assert fault(api.request("PUT", "/v2.1/flavors"), 405, "badMethod")


def test_project_id_in_the_path_is_accepted(api: InProcessAPI) -> None:
    uid = api.server("p-path")
    resp = api.request("GET", f"/v2.1/p-path/servers/{uid}", "u:p-path")
    assert resp.json()["server"]["id"] == uid


def test_hypervisors_and_services(api: InProcessAPI) -> None:
    hyps = api.request("GET", "/v2.1/os-hypervisors/detail").json()["hypervisors"]
    assert {h["hypervisor_hostname"] for h in hyps} >= {"hostA", "hostB"}
    brief = api.request("GET", "/v2.1/os-hypervisors").json()["hypervisors"]
    assert set(brief[0]) == {"id", "hypervisor_hostname", "state", "status"}
    # 2.53: hypervisors are named by uuid; 2.88 took the usage fields out.
    uuid.UUID(hyps[0]["id"])
    one = api.request("GET", f"/v2.1/os-hypervisors/{hyps[0]['id']}").json()["hypervisor"]
    assert "vcpus" not in one and one["uptime"] is None
    at_2_87 = headers(version="2.87")
    one = api.request("GET", f"/v2.1/os-hypervisors/{hyps[0]['id']}", headers=at_2_87).json()[
        "hypervisor"
    ]
    assert (one["vcpus"], one["cpu_info"]) == (8, {}) and "uptime" not in one
    assert fault(api.request("GET", "/v2.1/os-hypervisors/999"), 400, "badRequest") == (
        "Invalid uuid 999"
    )
    old = api.request("GET", "/v2.1/os-hypervisors/detail", headers=headers(version="2.52"))
    first = old.json()["hypervisors"][0]
    assert isinstance(first["id"], int) and first["cpu_info"] == {}
    old = api.request("GET", "/v2.1/os-hypervisors/detail", headers=headers(version="2.27"))
    assert old.json()["hypervisors"][0]["cpu_info"] == "{}"  # a JSON string before 2.28
    resp = api.request("GET", "/v2.1/os-hypervisors/999", headers=headers(version="2.52"))
    assert fault(resp, 404, "itemNotFound")
    assert api.request("GET", "/v2.1/os-aggregates").json() == {"aggregates": []}
    # No worker has reported in, so no compute service is listed here.
    assert api.request("GET", "/v2.1/os-services").json()["services"] == []


def test_a_deleted_server_is_gone(api: InProcessAPI) -> None:
    uid = api.server("p-gone")
    with api.db.transaction() as s:
        row = s.get(Instance, uid)
        assert row is not None
        row.deleted = True
    assert fault(api.request("GET", f"/v2.1/servers/{uid}"), 404, "itemNotFound")


def test_server_lists_by_change_time_and_lock(api: InProcessAPI) -> None:
    kept, gone = api.server("p-since"), api.server("p-since")
    with api.db.transaction() as s:
        row = s.get(Instance, gone)
        assert row is not None
        row.deleted, row.vm_state = True, VmState.DELETED
    token = "u:p-since"
    listed = api.request("GET", "/v2.1/servers/detail", token).json()["servers"]
    assert [x["id"] for x in listed] == [kept]
    # As in Nova, a list by change time shows the servers deleted in it.
    since = api.request(
        "GET", "/v2.1/servers/detail?changes-since=2000-01-01T00:00:00Z", token
    ).json()["servers"]
    assert {x["id"]: x["status"] for x in since} == {kept: "ACTIVE", gone: "DELETED"}
    before = api.request("GET", "/v2.1/servers?changes-before=2000-01-01T00:00:00Z", token)
    assert before.json()["servers"] == []
    bad = api.request("GET", "/v2.1/servers?changes-since=yesterday", token)
    assert fault(bad, 400, "badRequest") == (
        "Invalid input for query parameters changes-since. Value: yesterday. "
        "'yesterday' is not a 'date-time'"
    )
    api.request("POST", f"/v2.1/servers/{kept}/action", token, json={"lock": None})
    locked = api.request("GET", "/v2.1/servers?locked=true", token).json()["servers"]
    assert [x["id"] for x in locked] == [kept]
    assert api.request("GET", "/v2.1/servers?locked=false", token).json()["servers"] == []


def test_a_flavor_description_from_2_55(api: InProcessAPI) -> None:
    body = {"flavor": {"name": "c3.desc", "ram": 64, "vcpus": 1, "disk": 1, "id": "c3desc"}}
    body["flavor"]["description"] = "for tests"
    old = api.request("POST", "/v2.1/flavors", json=body, headers=headers(version="2.54"))
    assert fault(old, 400, "badRequest").endswith(
        "Additional properties are not allowed ('description' was unexpected)"
    )
    made = api.request("POST", "/v2.1/flavors", json=body, headers=headers(version="2.55"))
    assert made.status_code == 200, made.text
    assert made.json()["flavor"]["description"] == "for tests"
    listed = api.request("GET", "/v2.1/flavors", "a:b", headers=headers("a:b", "2.55")).json()
    assert {f["id"]: f["description"] for f in listed["flavors"]}["c3desc"] == "for tests"
    shown = api.request("GET", "/v2.1/flavors/c3desc", "a:b", headers=headers("a:b", "2.54"))
    assert "description" not in shown.json()["flavor"]
    assert api.request("DELETE", "/v2.1/flavors/c3desc").status_code == 202
