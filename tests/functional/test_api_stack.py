"""The REST API in front of real workers: ``resizeflow api`` as a process, over HTTP."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from resizeflow.api.microversion import MAX_VERSION
from tests.support.stack import Stack, wait_for

LATEST = f"compute {MAX_VERSION[0]}.{MAX_VERSION[1]}"


def client(rf: Stack, token: str = "admin:admin") -> httpx.Client:
    return httpx.Client(
        base_url=rf.api_endpoint(),
        headers={"X-Auth-Token": token, "OpenStack-API-Version": LATEST},
        timeout=30,
    )


def boot(http: httpx.Client, name: str = "vm", flavor: str = "1") -> str:
    body = {"server": {"name": name, "flavorRef": flavor, "networks": "auto"}}
    resp = http.post("/servers", json=body)
    assert resp.status_code == 202, resp.text
    uuid = str(resp.json()["server"]["id"])
    wait_status(http, uuid, "ACTIVE")
    return uuid


def server(http: httpx.Client, uuid: str) -> dict[str, Any]:
    resp = http.get(f"/servers/{uuid}")
    assert resp.status_code == 200, resp.text
    found: dict[str, Any] = resp.json()["server"]
    return found


def wait_status(http: httpx.Client, uuid: str, status: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        s = server(http, uuid)
        if s["status"] == "ERROR" and status != "ERROR":
            raise AssertionError(f"{uuid} went to ERROR: {s.get('fault')}")
        return s if s["status"] == status and s["OS-EXT-STS:task_state"] is None else None

    return wait_for(ready, 60, f"{uuid} to be {status}")


def act(http: httpx.Client, uuid: str, body: dict[str, Any], code: int) -> httpx.Response:
    resp = http.post(f"/servers/{uuid}/action", json=body)
    assert resp.status_code == code, resp.text
    return resp


def test_resize_and_confirm_over_http(rf: Stack, project: str) -> None:
    with client(rf, f"alice:{project}") as http, client(rf) as admin:
        uuid = boot(http)
        shown = server(http, uuid)
        assert shown["addresses"]["private"][0]["OS-EXT-IPS-MAC:mac_addr"].startswith("fa:16:3e")
        source = server(admin, uuid)["OS-EXT-SRV-ATTR:host"]
        act(http, uuid, {"resize": {"flavorRef": "2"}}, 202)
        resized = wait_status(http, uuid, "VERIFY_RESIZE")
        assert resized["flavor"]["original_name"] == "m1.small"
        request_id = act(http, uuid, {"confirmResize": None}, 204).headers["X-OpenStack-Request-Id"]
        done = wait_status(http, uuid, "ACTIVE")
        assert done["OS-EXT-STS:vm_state"] == "active" and done["OS-EXT-STS:power_state"] == 1
        assert server(admin, uuid)["OS-EXT-SRV-ATTR:host"] != source

        action = admin.get(f"/servers/{uuid}/os-instance-actions/{request_id}").json()
        events = action["instanceAction"]["events"]
        assert [e["event"] for e in events] == ["compute_confirm_resize"]
        assert all(e["result"] == "Success" and e["finish_time"] for e in events)

        migs = admin.get("/os-migrations", params={"instance_uuid": uuid}).json()["migrations"]
        assert [(m["status"], m["source_compute"]) for m in migs] == [("confirmed", source)]
        steps = admin.get(f"/os-resizeflow/workflows/{migs[0]['id']}").json()["steps"]
        assert [(s["flow"], s["status"]) for s in steps][-4:] == [("confirm", "done")] * 4


def test_revert_and_delete_over_http(rf: Stack, project: str) -> None:
    with client(rf, f"alice:{project}") as http:
        uuid = boot(http)
        act(http, uuid, {"os-stop": None}, 202)
        wait_status(http, uuid, "SHUTOFF")
        act(http, uuid, {"resize": {"flavorRef": "2"}}, 202)
        wait_status(http, uuid, "VERIFY_RESIZE")
        act(http, uuid, {"revertResize": None}, 202)
        reverted = wait_status(http, uuid, "SHUTOFF")
        assert reverted["flavor"]["original_name"] == "m1.tiny"
        act(http, uuid, {"os-start": None}, 202)
        wait_status(http, uuid, "ACTIVE")
        assert http.delete(f"/servers/{uuid}").status_code == 204
        wait_for(lambda: http.get(f"/servers/{uuid}").status_code == 404, 60, "delete")
        # Its actions stay readable after the delete, as in Nova.
        actions = http.get(f"/servers/{uuid}/os-instance-actions").json()["instanceActions"]
        assert [a["action"] for a in actions][:2] == ["delete", "start"]


def test_a_failed_step_shows_as_error_with_a_fault(rf: Stack, project: str) -> None:
    with client(rf, f"alice:{project}") as http, client(rf) as admin:
        uuid = boot(http)
        rf.set_failpoints(
            {"resizeflow.resize.finish_resize": [{"mode": "fatal", "instance_uuid": uuid}]}
        )
        request_id = act(http, uuid, {"resize": {"flavorRef": "2"}}, 202).headers[
            "X-OpenStack-Request-Id"
        ]
        errored = wait_status(http, uuid, "ERROR")
        assert errored["fault"]["code"] == 500 and errored["fault"]["message"]
        events = admin.get(f"/servers/{uuid}/os-instance-actions/{request_id}").json()[
            "instanceAction"
        ]["events"]
        # Newest first, as Nova lists them: the failed method's event leads.
        assert events[0]["event"] == "compute_finish_resize"
        assert events[0]["result"] == "Error" and events[0]["traceback"]
        # 2.84: what went wrong, without the traceback, for admins (Nova's default
        # events:details policy); the owner sees the event without it.
        step = "resizeflow.resize.finish_resize"
        assert events[0]["details"] == f"Step {step} failed: injected fatal failure in {step}"
        (event,) = [
            e
            for e in http.get(f"/servers/{uuid}/os-instance-actions/{request_id}").json()[
                "instanceAction"
            ]["events"]
            if e["result"] == "Error"
        ]
        assert "traceback" not in event and "host" not in event and event["hostId"]
        assert "details" not in event
        migs = admin.get("/os-migrations", params={"instance_uuid": uuid, "status": "error"})
        assert len(migs.json()["migrations"]) == 1


def test_hypervisors_and_services_over_http(rf: Stack, project: str) -> None:
    with client(rf, f"alice:{project}") as http, client(rf) as admin:
        uuid = boot(http, flavor="3")
        host = server(admin, uuid)["OS-EXT-SRV-ATTR:host"]
        # The usage fields are shown up to 2.87 (2.88 took them out).
        at_2_87 = {"OpenStack-API-Version": "compute 2.87"}
        hyps = {
            h["service"]["host"]: h
            for h in admin.get("/os-hypervisors/detail", headers=at_2_87).json()["hypervisors"]
        }
        assert set(rf.hosts) <= set(hyps)
        assert hyps[host]["running_vms"] >= 1 and hyps[host]["vcpus_used"] >= 2
        assert hyps[host]["free_ram_mb"] == hyps[host]["memory_mb"] - hyps[host]["memory_mb_used"]
        assert hyps[host]["state"] == "up"
        latest = admin.get("/os-hypervisors", params={"with_servers": "true"}).json()
        on = {h["hypervisor_hostname"]: h.get("servers", []) for h in latest["hypervisors"]}
        assert uuid in {s["uuid"] for s in on[hyps[host]["hypervisor_hostname"]]}
        services = admin.get("/os-services").json()["services"]
        by_host = {s["host"]: s for s in services if s["binary"] == "nova-compute"}
        assert {by_host[h]["state"] for h in rf.hosts} == {"up"}
        assert by_host[host]["status"] == "enabled" and by_host[host]["zone"] == "nova"


@pytest.mark.parametrize("token", ["", "admin:admin"])
def test_the_api_process_speaks_nova_errors(rf: Stack, token: str) -> None:
    with client(rf, token) as http:  # starts the API process on first use
        started = time.monotonic()
        resp = http.get("/servers/not-a-uuid")
        if token:
            assert resp.status_code == 404
            assert resp.json() == {
                "itemNotFound": {"code": 404, "message": "Instance not-a-uuid could not be found."}
            }
        else:
            assert resp.status_code == 401 and "unauthorized" in resp.json()
    assert time.monotonic() - started < 10
