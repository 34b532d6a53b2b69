"""The comparison itself: pure logic, on answers written here (no Nova, no resizeflow)."""

from __future__ import annotations

import httpx
import pytest

from tests.conformance.engine import (
    Answer,
    Call,
    Hold,
    Known,
    Normaliser,
    Pause,
    Run,
    Scenario,
    Side,
    compare,
    compare_answers,
    dig,
    rule_for,
    shape,
)

pytestmark = pytest.mark.fast

A_UUID = "8ee60453-95fd-4d7d-83d9-c7e2733151fd"
B_UUID = "0b4f1c2e-3d5a-4e6f-8a9b-0c1d2e3f4a5b"


def sides() -> tuple[Side, Side]:
    nova = Side("Nova", "http://127.0.0.1:1/v2.1", values={"a": A_UUID})
    rf = Side("resizeflow", "http://127.0.0.1:2/v2.1", values={"a": B_UUID})
    return nova, rf


def diff(nova_body: object, rf_body: object) -> list[tuple[str, str, str]]:
    nova, rf = sides()
    return compare(nova_body, rf_body, Normaliser(nova), Normaliser(rf))


def server(uuid: str, **changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "id": uuid,
        "status": "ACTIVE",
        "OS-EXT-STS:task_state": None,
        "created": "2026-12-07T09:48:49Z",
        "OS-SRV-USG:launched_at": "2026-12-07T09:48:51.000000",
        "links": [{"rel": "self", "href": f"http://127.0.0.1:1/v2.1/servers/{uuid}"}],
    }
    body.update(changes)
    return {"server": body}


def test_the_same_server_on_both_sides_differs_in_nothing() -> None:
    nova = server(A_UUID)
    rf = server(
        B_UUID, links=[{"rel": "self", "href": f"http://127.0.0.1:2/v2.1/servers/{B_UUID}"}]
    )
    assert diff(nova, rf) == []


@pytest.mark.parametrize(
    ("broken", "path"),
    [
        ({"status": "SHUTOFF"}, "server.status"),  # an enumeration
        ({"OS-EXT-STS:task_state": "resize_prep"}, "server.OS-EXT-STS:task_state"),  # null vs str
        ({"OS-SRV-USG:launched_at": "2026-12-07T09:48:51"}, "server.OS-SRV-USG:launched_at"),
        ({"created": "2026-12-07T09:48:49"}, "server.created"),  # no zone
        ({"id": "not-a-uuid"}, "server.id"),
        (
            {"links": [{"rel": "self", "href": "http://127.0.0.1:2/servers/x"}]},
            "server.links.0.href",
        ),
        ({"links": []}, "server.links"),
        ({"extra": 1}, "server.extra"),
    ],
)
def test_a_broken_view_is_caught(broken: dict[str, object], path: str) -> None:
    nova = server(A_UUID)
    rf = server(
        B_UUID, links=[{"rel": "self", "href": f"http://127.0.0.1:2/v2.1/servers/{B_UUID}"}]
    )
    rf["server"].update(broken)  # type: ignore[attr-defined]
    assert path in [p for p, _, _ in diff(nova, rf)]


def test_a_missing_key_is_caught() -> None:
    nova, rf = server(A_UUID), server(B_UUID)
    del rf["server"]["created"]  # type: ignore[attr-defined]
    assert ("server.created", 'has it: "2026-12-07T09:48:49Z"', "has no such key") in diff(nova, rf)


def test_fault_messages_are_compared_with_each_sides_ids_as_names() -> None:
    nova = {"conflictingRequest": {"code": 409, "message": f"Cannot 'x' instance {A_UUID}"}}
    rf = {"conflictingRequest": {"code": 409, "message": f"Cannot 'x' instance {B_UUID}"}}
    assert diff(nova, rf) == []
    rf["conflictingRequest"]["message"] = f"Cannot 'y' instance {B_UUID}"
    assert diff(nova, rf) == [
        ("conflictingRequest.message", "\"Cannot 'x' instance {a}\"", "\"Cannot 'y' instance {a}\"")
    ]


def test_numbers_are_compared_by_type_and_booleans_by_value() -> None:
    assert diff({"id": 1}, {"id": 7}) == []
    assert diff({"id": 1}, {"id": "1"}) != []
    assert diff({"id": 1}, {"id": 1.0}) != []
    assert diff({"locked": True}, {"locked": False}) != []


def test_shapes() -> None:
    assert shape("") == "empty string"
    assert shape(A_UUID) == "uuid"
    assert shape(f"req-{A_UUID}") == "request id"
    assert shape("2026-12-07T09:48:51.000000") == "time 9999-99-99T99:99:99.999999"
    assert shape("127.0.0.1") == "IPv4 address"
    assert shape("cf-host1") == "text"


def test_rules() -> None:
    assert rule_for(("servers", "0", "status")) == "exact"
    assert rule_for(("server", "links", "0", "href")) == "href"
    assert rule_for(("server", "OS-EXT-SRV-ATTR:host")) == "format"
    assert rule_for(("hypervisors", "0", "servers", "0", "name")) == "format"
    assert rule_for(("server", "name")) == "exact"
    assert rule_for(("version", "version")) == "format"


def test_dig_picks_by_key() -> None:
    body = {"hypervisors": [{"id": 1, "name": "h2"}, {"id": 2, "name": "h1"}]}
    assert dig(body, "hypervisors[name=h1].id") == 2
    assert dig(body, "hypervisors.0.id") == 1
    assert dig(body, "hypervisors.5.id") is None


def test_status_and_known_differences() -> None:
    nova, rf = sides()
    call = Call("GET", "/servers/{a}")
    found = compare_answers("s", call, nova, Answer(200, None, {}), rf, Answer(404, None, {}))
    assert [(d.path, d.nova, d.resizeflow) for d in found] == [("HTTP status", "200", "404")]
    k = Known("s", "GET .*", "HTTP status", "200", "404", "why")
    assert k.matches(found[0])


def test_a_scenario_lets_go_of_the_hosts_it_held_however_it_ends() -> None:
    held: list[tuple[str, str, bool]] = []
    nova, rf = sides()
    nova.hold = lambda host, on: held.append(("Nova", host, on))
    rf.hold = lambda host, on: held.append(("resizeflow", host, on))
    run = Run(nova, rf)
    # Let go of by the scenario itself: not again at its end.
    run.play(Scenario("let go", (Hold("h1"), Pause(0), Hold("h1", held=False))))
    assert held == [
        ("Nova", "h1", True),
        ("resizeflow", "h1", True),
        ("Nova", "h1", False),
        ("resizeflow", "h1", False),
    ]
    held.clear()
    # Broken off by an error (nothing listens on port 1): let go of all the same.
    with pytest.raises(httpx.ConnectError):
        run.play(Scenario("broken", (Hold("h2"), Call("GET", "/servers"))))
    assert held == [
        ("Nova", "h2", True),
        ("resizeflow", "h2", True),
        ("Nova", "h2", False),
        ("resizeflow", "h2", False),
    ]
