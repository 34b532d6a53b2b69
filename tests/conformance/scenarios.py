"""The conformance scenarios: the same session replayed on real Nova and on resizeflow.

They run in order and build on each other: the lifecycle scenarios leave
servers behind in known states (``a`` resized and confirmed, ``b`` resized
and reverted, ``c`` awaiting confirmation, ``d`` stopped and locked, ``e``
cold-migrated and confirmed, ``f`` stopped, cold-migrated and reverted, ``g``
rebooted every way and reset, ``h`` in error after a resize no host could
take), and the view scenarios then read every resource at each microversion
where Nova's schema or view for it changes.

Every server the views read is booted on a named host (an admin in the
member's project), so that where it is never depends on which of two equal
hosts a scheduler chose, and a second after the one before it, so that both
sides list them in their boot order (Nova lists servers created in the same
second by uuid).

Adding a server action is one entry in :data:`ACTIONS` (its body, the state
it ends in, who asks); a view is a ``get`` at each version of a boundary
list (``at(VERSIONS, ...)``). See "Conformance with real Nova" in
docs/development.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tests.conformance.engine import Call, Hold, Pause, Scenario, Step, Wait
from tests.conformance.standins import IMAGE_ID, NETWORK_ID, NETWORK_NAME

MEMBER = "alice:p-conf"
OTHER = "mallory:p-other"
ADMIN = "admin:admin"
# An admin working in the member's project: what it boots is the member's to see.
PROJECT_ADMIN = "admin:p-conf"
NEWEST = "2.96"  # resizeflow's newest; Nova 34 goes to 2.104
HOST1, HOST2 = "cf-host1", "cf-host2"  # both sides name their two compute hosts alike


def boot(
    name: str,
    *,
    networks: Any = "none",
    version: str = "2.37",
    on: str | None = None,
    **extra: Any,
) -> Call:
    """Boot ``name`` as the member, or ``on`` a host (an admin in the member's project, 2.74)."""
    server = {"name": name, "flavorRef": "1", "imageRef": IMAGE_ID, "networks": networks}
    if on is not None:
        server["host"] = on
        version = max(version, "2.74", key=_key)
    return Call(
        "POST",
        "/servers",
        version=version,
        token=MEMBER if on is None else PROJECT_ADMIN,
        body={"server": {**server, **extra}},
        capture={name: "server.id"},
        label=f"boot {name} @{version}" + ("" if on is None else f" on {on}"),
    )


def apart() -> Pause:
    """A second between two boots, so both sides list them in their boot order."""
    return Pause(1.05, "servers created in one second are listed by uuid")


def act(server: str, body: dict[str, Any], version: str = "2.1", token: str = MEMBER) -> Call:
    (key,) = body
    return Call(
        "POST",
        f"/servers/{{{server}}}/action",
        version=version,
        token=token,
        body=body,
        label=f"{key} {server} @{version}" + ("" if token == MEMBER else f" as {token}"),
    )


def get(path: str, version: str = "2.1", token: str = "admin:admin", **kw: Any) -> Call:
    return Call("GET", path, version=version, token=token, **kw)


# -- server actions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """A server action as one entry: its body and the status it leaves the server in.

    ``before`` puts the server in the state the action needs (other actions
    by name); ``token`` is who asks (the member, unless the action is an
    admin's by policy).
    """

    name: str
    body: dict[str, Any]
    ends: str | None  # the server status to wait for; None: no state change to wait for
    before: tuple[str, ...] = ()
    token: str = MEMBER


ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action("resize", {"resize": {"flavorRef": "2"}}, "VERIFY_RESIZE"),
        Action("migrate", {"migrate": None}, "VERIFY_RESIZE", token=ADMIN),
        Action("confirm", {"confirmResize": None}, "ACTIVE", before=("resize",)),
        Action("revert", {"revertResize": None}, "ACTIVE", before=("resize",)),
        Action("stop", {"os-stop": None}, "SHUTOFF"),
        Action("start", {"os-start": None}, "ACTIVE", before=("stop",)),
        Action("reboot", {"reboot": {"type": "SOFT"}}, "ACTIVE"),
        Action("hard reboot", {"reboot": {"type": "HARD"}}, "ACTIVE"),
        Action("reset to error", {"os-resetState": {"state": "error"}}, "ERROR", token=ADMIN),
        Action("reset to active", {"os-resetState": {"state": "active"}}, "ACTIVE", token=ADMIN),
        Action("lock", {"lock": None}, None),
        Action("unlock", {"unlock": None}, None, before=("lock",)),
    )
}


def run_action(server: str, name: str, version: str = "2.1") -> list[Step]:
    """The action's steps on ``server``: the body, then the wait for its end state."""
    action = ACTIONS[name]
    steps: list[Step] = [act(server, action.body, version, action.token)]
    if action.ends is not None:
        steps.append(Wait(server, action.ends))
    return steps


def show_server(server: str, version: str) -> list[Call]:
    return [
        get(f"/servers/{{{server}}}", version, token=MEMBER),
        get(f"/servers/{{{server}}}", version),
    ]


# -- microversion boundaries ------------------------------------------------------------------

SERVER_VERSIONS = (
    "2.1", "2.2", "2.3", "2.8", "2.9", "2.15", "2.16", "2.18", "2.19", "2.25", "2.26",
    "2.46", "2.47", "2.62", "2.63", "2.68", "2.69", "2.70", "2.71", "2.72", "2.73",
    "2.89", "2.90", "2.95", "2.96",
)  # fmt: skip
MIGRATION_VERSIONS = ("2.1", "2.22", "2.23", "2.58", "2.59", "2.65", "2.66", "2.79", "2.80", NEWEST)
ACTION_VERSIONS = (
    "2.1", "2.20", "2.21", "2.50", "2.51", "2.57", "2.58", "2.61", "2.62", "2.65",
    "2.66", "2.83", "2.84", NEWEST,
)  # fmt: skip
HYPERVISOR_VERSIONS = (
    "2.1", "2.27", "2.28", "2.32", "2.33", "2.52", "2.53", "2.74", "2.75", "2.87", "2.88",
    NEWEST,
)  # fmt: skip
SERVICE_VERSIONS = ("2.1", "2.10", "2.11", "2.52", "2.53", "2.68", "2.69", NEWEST)
FLAVOR_VERSIONS = ("2.1", "2.54", "2.55", "2.60", "2.61", "2.74", "2.75", NEWEST)
SERVER_MIGRATION_VERSIONS = ("2.1", "2.22", "2.23", "2.58", "2.59", "2.79", "2.80", NEWEST)


def _key(version: str) -> tuple[int, int]:
    major, minor = version.split(".")
    return int(major), int(minor)


def at(versions: Iterable[str], *calls: Any) -> list[Call]:
    """Each call (a function of the version) at each version."""
    return [c(v) for v in versions for c in calls]


# -- the scenarios ------------------------------------------------------------------------------


def versions() -> Scenario:
    return Scenario(
        "version documents",
        (
            get("/", None, token=""),
            get("/v2.1", None, token=""),
            get("/v2.1/", None, token=""),
            get("/", "2.1"),
            get("/v2.1/", "2.60"),
        ),
    )


def lifecycle() -> list[Scenario]:
    a, b, c, d, m = "a", "b", "c", "d", "m"
    return [
        Scenario(
            "boot",
            (
                # The member's own boot, placed by each side's scheduler (which
                # may choose differently between two empty hosts): it is deleted
                # before anything reads where servers are.
                boot(m),
                Wait(m, "ACTIVE"),
                *show_server(m, "2.1"),
                Call("DELETE", f"/servers/{{{m}}}", token=MEMBER),
                Wait(m, gone=True),
                # The servers the other scenarios use, each on a named host.
                apart(),
                boot(a, on=HOST2),
                Wait(a, "ACTIVE"),
                apart(),
                boot(b, version="2.96", on=HOST1),
                Wait(b, "ACTIVE"),
                apart(),
                boot(c, on=HOST1, description="third"),
                Wait(c, "ACTIVE"),
                apart(),
                boot(d, on=HOST2),
                Wait(d, "ACTIVE"),
                *show_server(a, "2.1"),
                *show_server(b, NEWEST),
            ),
        ),
        Scenario(
            "resize and confirm",
            (
                *run_action(a, "resize"),
                *show_server(a, "2.1"),
                *show_server(a, NEWEST),
                *run_action(a, "confirm"),
                *show_server(a, NEWEST),
                get(f"/servers/{{{a}}}", capture={"host_a": "server.OS-EXT-SRV-ATTR:host"}),
            ),
        ),
        Scenario(
            "resize and revert",
            (
                *run_action(b, "resize", "2.96"),
                *run_action(b, "revert", "2.96"),
                *show_server(b, NEWEST),
                get(f"/servers/{{{b}}}", capture={"host_b": "server.OS-EXT-SRV-ATTR:host"}),
            ),
        ),
        Scenario("resize awaiting confirmation", tuple(run_action(c, "resize"))),
        Scenario(
            "stop, start, lock and unlock",
            (
                *run_action(d, "stop"),
                *show_server(d, NEWEST),
                *run_action(d, "start"),
                *run_action(d, "stop"),
                act(d, {"lock": {"locked_reason": "maintenance"}}, "2.73"),
                *show_server(d, NEWEST),
                *show_server(d, "2.72"),
                act(d, {"unlock": None}),
                act(d, {"lock": None}, "2.1", token="admin:admin"),
                *show_server(d, NEWEST),
            ),
        ),
    ]


def refusals() -> Scenario:
    a, c, d = "a", "c", "d"
    return Scenario(
        "refusals",
        (
            act(a, {"confirmResize": None}),
            act(a, {"revertResize": None}),
            act(a, {"resize": {"flavorRef": "2"}}),  # the same flavor
            act(a, {"resize": {"flavorRef": "999"}}),
            act(a, {"resize": {}}),
            act(a, {"resize": None}),
            act(a, {"resize": {"flavorRef": "3", "extra": 1}}),
            act(a, {"resize": {"flavorRef": "3", "OS-DCF:diskConfig": "SOMETIMES"}}),
            act(a, {"frobnicate": None}),
            act(c, {"os-stop": None}),
            act(d, {"os-stop": None}, token="admin:admin"),
            act(d, {"resize": {"flavorRef": "3"}}),  # locked by admin
            act(d, {"unlock": None}),
            act(a, {"lock": {"locked_reason": ""}}, "2.73"),
            act(a, {"lock": "maintenance"}, "2.73"),
            act(a, {"lock": {"locked_reason": "x", "until": "tomorrow"}}, "2.73"),
            get(f"/servers/{{{a}}}", token=OTHER),
            act(a, {"os-stop": None}, token=OTHER),
            get("/servers/00000000-0000-4000-8000-000000000000"),
            get("/servers/not-a-uuid"),
            get("/os-migrations", token=MEMBER),
            get("/os-hypervisors", token=MEMBER),
            get("/os-services", token=MEMBER),
            get("/servers", "2.200", token=MEMBER),
            get("/servers", "2.x", token=MEMBER),
            get("/servers", "3.0", token=MEMBER),
            Call(
                "POST",
                f"/servers/{{{a}}}/action",
                token=MEMBER,
                raw_body="{not json",
                label="malformed JSON body",
            ),
            Call(
                "POST",
                f"/servers/{{{a}}}/action",
                token=MEMBER,
                body={"os-stop": None, "os-start": None},
                label="two actions in one body",
            ),
            Call(
                "POST",
                "/servers",
                version="2.37",
                token=MEMBER,
                body={"server": {"flavorRef": "1", "imageRef": IMAGE_ID, "networks": "none"}},
                label="boot without a name",
            ),
            Call(
                "POST",
                "/servers",
                version="2.37",
                token=MEMBER,
                body={"server": {"name": "x", "flavorRef": "1", "imageRef": IMAGE_ID}},
                label="boot without networks @2.37",
            ),
            Call(
                "POST",
                "/servers",
                version="2.37",
                token=MEMBER,
                body={
                    "server": {
                        "name": "",
                        "flavorRef": "1",
                        "imageRef": IMAGE_ID,
                        "networks": "none",
                    }
                },
                label="boot with an empty name",
            ),
            Call(
                "POST",
                "/servers",
                version="2.37",
                token=MEMBER,
                body={
                    "server": {
                        "name": "x",
                        "flavorRef": "999",
                        "imageRef": IMAGE_ID,
                        "networks": "none",
                    }
                },
                label="boot with an unknown flavor",
            ),
            Call(
                "POST",
                "/servers",
                version="2.18",
                token=MEMBER,
                body={
                    "server": {
                        "name": "x",
                        "flavorRef": "1",
                        "imageRef": IMAGE_ID,
                        "description": "too early",
                    }
                },
                label="boot with a description @2.18",
            ),
            Call(
                "POST",
                "/servers",
                version="2.36",
                token=MEMBER,
                body={
                    "server": {
                        "name": "x",
                        "flavorRef": "1",
                        "imageRef": IMAGE_ID,
                        "networks": "none",
                    }
                },
                label="boot with networks none @2.36",
            ),
        ),
    )


def cold_migrations() -> list[Scenario]:
    """Cold migration, confirmed and reverted, and what Nova refuses of it.

    ``e`` and ``f`` are booted on named hosts, so each side moves them the
    same way: a migrate without a host has one other host to go to.
    """
    e, f = "e", "f"
    return [
        Scenario(
            "cold migrate and confirm",
            (
                apart(),
                boot(e, on=HOST1),
                Wait(e, "ACTIVE"),
                act(e, {"migrate": None}),  # a member may not
                act(e, {"migrate": {"host": HOST2}}, "2.56"),
                act(e, {"migrate": None}, token=OTHER),
                act(e, {"migrate": {"host": HOST1}}, "2.56", ADMIN),  # its own host
                act(e, {"migrate": {"host": "cf-nosuchhost"}}, "2.56", ADMIN),
                act(e, {"migrate": {"host": ""}}, "2.56", ADMIN),
                act(e, {"migrate": {"host": "not a host!"}}, "2.56", ADMIN),
                act(e, {"migrate": {"host": HOST2, "force": True}}, "2.56", ADMIN),
                act(e, {"migrate": HOST2}, "2.56", ADMIN),
                # Before 2.56 the body's host is not read: this is a plain migrate.
                act(e, {"migrate": {"host": "cf-nosuchhost"}}, "2.55", ADMIN),
                Wait(e, "VERIFY_RESIZE"),
                *show_server(e, "2.1"),
                *show_server(e, NEWEST),
                act(e, {"migrate": None}, token=ADMIN),  # awaiting confirmation
                act(e, {"reboot": {"type": "SOFT"}}),
                get("/servers/{e}/migrations", NEWEST),
                *run_action(e, "confirm"),
                *show_server(e, NEWEST),
            ),
        ),
        Scenario(
            "cold migrate a stopped server and revert",
            (
                apart(),
                boot(f, on=HOST2),
                Wait(f, "ACTIVE"),
                *run_action(f, "stop"),
                act(f, {"migrate": {"host": HOST1}}, "2.56", ADMIN),
                Wait(f, "VERIFY_RESIZE"),
                *show_server(f, NEWEST),
                act(f, {"revertResize": None}),
                Wait(f, "SHUTOFF"),
                *show_server(f, NEWEST),
            ),
        ),
    ]


def reboots() -> Scenario:
    """Soft and hard reboots, os-resetState and the console log, with their refusals."""
    g = "g"
    return Scenario(
        "reboot, reset state and console output",
        (
            apart(),
            boot(g, on=HOST1),
            Wait(g, "ACTIVE"),
            *run_action(g, "reboot"),
            *show_server(g, NEWEST),
            *run_action(g, "hard reboot", NEWEST),
            act(g, {"reboot": {"type": "MEDIUM"}}),
            act(g, {"reboot": {}}),
            act(g, {"reboot": None}),
            act(g, {"reboot": {"type": "soft", "force": True}}),
            act(g, {"reboot": {"type": "SOFT"}}, token=OTHER),
            *run_action(g, "stop"),
            act(g, {"reboot": {"type": "SOFT"}}),  # a stopped server
            *run_action(g, "hard reboot"),
            act(g, {"lock": None}),
            act(g, {"reboot": {"type": "SOFT"}}),  # locked, by its member
            act(g, {"reboot": {"type": "HARD"}}, "2.73"),
            act(g, {"unlock": None}),
            act(g, {"os-resetState": {"state": "error"}}),  # a member may not
            act(g, {"os-resetState": {"state": "paused"}}, token=ADMIN),
            act(g, {"os-resetState": {}}, token=ADMIN),
            act(g, {"os-resetState": None}, token=ADMIN),
            act(g, {"os-resetState": {"state": "error", "force": True}}, token=ADMIN),
            *run_action(g, "reset to error"),
            *show_server(g, "2.1"),
            *show_server(g, NEWEST),
            act(g, {"reboot": {"type": "SOFT"}}),  # in error
            *run_action(g, "hard reboot"),
            *run_action(g, "reset to error"),
            *run_action(g, "reset to active"),
            *show_server(g, NEWEST),
            # The log's text differs by design (Nova's fake driver has three
            # lines; resizeflow's test driver logs each start and stop, ending
            # each line with a newline): the shape is compared, and each length
            # asks for more than a last line, which is empty where a log ends
            # with its newline.
            act(g, {"os-getConsoleOutput": {"length": 2}}),
            act(g, {"os-getConsoleOutput": {"length": "3"}}),
            act(g, {"os-getConsoleOutput": {"length": -1}}),
            act(g, {"os-getConsoleOutput": {"length": "-1"}}),
            act(g, {"os-getConsoleOutput": {"length": 0}}),
            act(g, {"os-getConsoleOutput": {"length": None}}),
            act(g, {"os-getConsoleOutput": {}}),
            act(g, {"os-getConsoleOutput": {"length": "abc"}}),
            act(g, {"os-getConsoleOutput": {"length": -2}}),
            act(g, {"os-getConsoleOutput": {"length": "-2"}}),
            act(g, {"os-getConsoleOutput": {"length": 1.5}}),
            act(g, {"os-getConsoleOutput": {"length": True}}),
            act(g, {"os-getConsoleOutput": {"lines": 2}}),
            act(g, {"os-getConsoleOutput": None}),
            act(g, {"os-getConsoleOutput": {}}, token=OTHER),
        ),
    )


def reboot_in_flight() -> Scenario:
    """A reboot its host has not taken yet (the host is held): Nova's REBOOT and
    HARD_REBOOT, what they refuse, and a hard reboot taking over a soft one."""
    g = "g"
    return Scenario(
        "reboot in flight",
        (
            Hold(HOST1),
            act(g, {"reboot": {"type": "SOFT"}}),
            *show_server(g, "2.1"),
            *show_server(g, NEWEST),
            act(g, {"reboot": {"type": "SOFT"}}),
            act(g, {"os-stop": None}),
            get("/servers/detail?status=REBOOT", NEWEST, token=MEMBER),
            act(g, {"reboot": {"type": "HARD"}}),  # takes over the soft one
            *show_server(g, NEWEST),
            act(g, {"reboot": {"type": "SOFT"}}),
            get("/servers/detail?status=HARD_REBOOT", NEWEST, token=MEMBER),
            get(
                "/servers/{g}/os-instance-actions",
                capture={
                    "req_g_soft": "instanceActions.1.request_id",
                    "req_g_hard": "instanceActions.0.request_id",
                },
                compare=False,  # Nova's compute fails the soft one only once let go
            ),
            Hold(HOST1, held=False),
            # Nova's compute runs the two in either order: wait for both.
            Wait(g, "ACTIVE", actions=("req_g_soft",)),
            *show_server(g, NEWEST),
            get("/servers/{g}/os-instance-actions", NEWEST, token=MEMBER),
            *at(
                ACTION_VERSIONS,
                lambda v: get("/servers/{g}/os-instance-actions/{req_g_soft}", v),
                lambda v: get("/servers/{g}/os-instance-actions/{req_g_hard}", v),
            ),
        ),
    )


# A flavor whose disk no compute node of either side can hold (both report
# Nova's fake 600000 GB), with flavor 1's vcpus and ram: quota allows it.
HUGE_DISK = {"id": "6", "name": "cf.huge-disk", "vcpus": 1, "ram": 512, "disk": 700000}


def no_valid_host() -> Scenario:
    """A resize no host can take: accepted, then refused by scheduling, as Nova's conductor does."""
    h = "h"
    return Scenario(
        "resize no host can take",
        (
            Call("POST", "/flavors", token=ADMIN, body={"flavor": HUGE_DISK}),
            apart(),
            boot(h, on=HOST2),
            Wait(h, "ACTIVE"),
            act(h, {"resize": {"flavorRef": HUGE_DISK["id"]}}),
            Wait(h, "ACTIVE"),
            *show_server(h, "2.1"),
            *show_server(h, NEWEST),
            *at(
                MIGRATION_VERSIONS,
                lambda v: get("/os-migrations?instance_uuid={h}", v),
                lambda v: get("/servers/{h}/migrations", v),
            ),
            # Nova shows a fault only in ERROR: reset, the scheduling's fault shows
            # (and the server stays in error for the server views).
            *run_action(h, "reset to error"),
            *show_server(h, "2.1"),
            *show_server(h, NEWEST),
            get(
                "/servers/{h}/os-instance-actions",
                capture={"req_h_resize": "instanceActions[action=resize].request_id"},
            ),
            *at(
                ACTION_VERSIONS,
                lambda v: get("/servers/{h}/os-instance-actions/{req_h_resize}", v, token=MEMBER),
                lambda v: get("/servers/{h}/os-instance-actions/{req_h_resize}", v),
            ),
        ),
    )


def server_views() -> Scenario:
    return Scenario(
        "server views",
        (
            *at(
                SERVER_VERSIONS,
                lambda v: get("/servers", v, token=MEMBER, label=f"list servers @{v}"),
                lambda v: get("/servers/detail", v, token=MEMBER),
                lambda v: get("/servers/detail?all_tenants=1", v),
                lambda v: get("/servers/{c}", v),
                lambda v: get("/servers/{d}", v, token=MEMBER),
                # In error, with the fault of a resize no host could take.
                lambda v: get("/servers/{h}", v, token=MEMBER),
                lambda v: get("/servers/{h}", v),
            ),
            get("/servers/detail?status=VERIFY_RESIZE", "2.1", token=MEMBER),
            get("/servers/detail?status=SHUTOFF", NEWEST, token=MEMBER),
            get("/servers?status=NOTASTATUS", "2.37", token=MEMBER),
            get("/servers?status=NOTASTATUS", "2.38", token=MEMBER),
            get("/servers?limit=2", NEWEST, token=MEMBER),
            get("/servers/detail?locked=true", "2.73", token=MEMBER),
            get("/servers?name=^c$", NEWEST, token=MEMBER),
        ),
    )


def _migrations(query: str) -> Any:
    def call(v: str) -> Call:
        # Before 2.59 Nova does not order the list: both are compared in one order.
        sort = {"migrations": ("instance_uuid", "id")} if _key(v) < (2, 59) else {}
        return get(f"/os-migrations{query}", v, label=f"os-migrations{query} @{v}", sort=sort)

    return call


def migration_views() -> Scenario:
    queries = (
        "",
        "?host={host_a}",
        "?host={host_b}&source_compute={host_a}",
        "?instance_uuid={a}",
        "?instance_uuid={b}",
        "?status=confirmed",
        "?status=finished",
        "?status=nosuchstatus",
        "?source_compute={src_a}",
        "?migration_type=resize",
        "?migration_type=live-migration",
        "?hidden=0",
        "?hidden=1",
        "?limit=1",
        "?limit=2&marker={mig_a}",
        "?marker=00000000-0000-4000-8000-000000000000",
        "?limit=-1",
        "?limit=abc",
        "?limit=2000",
        "?changes-since=2000-01-01T00:00:00Z",
        "?changes-since=notatime",
        "?changes-before=2000-01-01T00:00:00Z",
        "?changes-since=2030-01-01T00:00:00Z&changes-before=2000-01-01T00:00:00Z",
        "?user_id=alice",
        "?user_id=nobody",
        "?project_id=p-conf",
        "?project_id=p-other",
        "?frobnicate=1",
        "?limit=1&limit=2",
        "?migration_type=migration",
        "?status=error",
        "?status=reverted",
        "?instance_uuid={f}",
        f"?host={HOST2}&migration_type=migration",
    )
    return Scenario(
        "os-migrations",
        (
            get(
                "/os-migrations?instance_uuid={a}",
                capture={"src_a": "migrations.0.source_compute"},
                compare=False,
            ),
            get(
                "/os-migrations?instance_uuid={a}",
                "2.59",
                capture={"mig_a": "migrations.0.uuid"},
                compare=False,
            ),
            *at(MIGRATION_VERSIONS, *(_migrations(q) for q in queries)),
            get("/os-migrations?project_id=p-conf", "2.80", token=MEMBER),
        ),
    )


def server_migrations() -> Scenario:
    return Scenario(
        "server migrations",
        tuple(
            at(
                SERVER_MIGRATION_VERSIONS,
                lambda v: get("/servers/{a}/migrations", v),
                lambda v: get("/servers/{c}/migrations", v),
                lambda v: get("/servers/{c}/migrations/1", v),
                lambda v: get("/servers/{c}/migrations", v, token=MEMBER),
            )
        ),
    )


def action_views() -> Scenario:
    a, b, d = "a", "b", "d"
    capture: list[Step] = [
        get(
            f"/servers/{{{s}}}/os-instance-actions",
            capture={f"req_{s}{i}": f"instanceActions.{i}.request_id" for i in range(n)},
            compare=False,
        )
        for s, n in ((a, 3), (b, 3), (d, 4))
    ]
    reads = []
    for v in ACTION_VERSIONS:
        for s in (a, b, d):
            reads.append(get(f"/servers/{{{s}}}/os-instance-actions", v, token=MEMBER))
        reads.append(get(f"/servers/{{{a}}}/os-instance-actions", v))
        for req in ("req_a0", "req_a1", "req_a2", "req_b0", "req_b1", "req_d0"):
            server = req[4]
            for token in (MEMBER, "admin:admin"):
                reads.append(
                    get(f"/servers/{{{server}}}/os-instance-actions/{{{req}}}", v, token=token)
                )
    # The actions of the moves, reboots and resets, each by its name (the newest of that name).
    named = {
        "e": ("migrate", "confirmResize"),
        "f": ("stop", "migrate", "revertResize"),
        "g": ("reboot", "resetState", "lock", "unlock"),
    }
    capture += [
        get(
            f"/servers/{{{s}}}/os-instance-actions",
            capture={f"req_{s}_{n}": f"instanceActions[action={n}].request_id" for n in names},
            compare=False,
        )
        for s, names in named.items()
    ]
    for v in ACTION_VERSIONS:
        for s, names in named.items():
            reads.append(get(f"/servers/{{{s}}}/os-instance-actions", v, token=MEMBER))
            for n in names:
                for token in (MEMBER, ADMIN):
                    reads.append(
                        get(f"/servers/{{{s}}}/os-instance-actions/{{req_{s}_{n}}}", v, token=token)
                    )
    paged = []
    for v in ("2.58", "2.66", NEWEST):
        for q in ("?limit=3", "?limit=2&marker={req_g_resetState}"):
            paged.append(get(f"/servers/{{g}}/os-instance-actions{q}", v, token=MEMBER))
    for v in ("2.58", "2.65", "2.66", NEWEST):
        for q in (
            "?limit=1",
            "?limit=1&marker={req_a0}",
            "?marker=req-00000000-0000-4000-8000-000000000000",
            "?changes-since=2000-01-01T00:00:00Z",
            "?changes-before=2000-01-01T00:00:00Z",
            "?limit=-1",
            "?frobnicate=1",
        ):
            paged.append(get(f"/servers/{{{a}}}/os-instance-actions{q}", v, token=MEMBER))
    return Scenario(
        "instance actions",
        (
            *capture,
            *reads,
            *paged,
            get(f"/servers/{{{a}}}/os-instance-actions/req-nope", token=MEMBER),
            get(f"/servers/{{{a}}}/os-instance-actions", token=OTHER),
        ),
    )


def hypervisor_views() -> Scenario:
    calls: list[Call] = [
        get(
            "/os-hypervisors",
            "2.1",
            capture={"hv1": "hypervisors[hypervisor_hostname={host_a}].id"},
            compare=False,
        ),
        get(
            "/os-hypervisors",
            "2.53",
            capture={
                "hvu1": "hypervisors[hypervisor_hostname={host_a}].id",
                # The first of each side's list: a page of one ends with it.
                "hv_first": "hypervisors.0.id",
            },
            compare=False,
        ),
    ]
    sort = {"hypervisors": ("hypervisor_hostname",)}
    for v in HYPERVISOR_VERSIONS:
        new = _key(v) >= (2, 53)
        ident = "{hvu1}" if new else "{hv1}"
        calls += [
            get("/os-hypervisors", v, sort=sort),
            get("/os-hypervisors/detail", v, sort=sort),
            get(f"/os-hypervisors/{ident}", v),
        ]
        if _key(v) >= (2, 33):
            calls.append(get("/os-hypervisors?limit=1", v))
        if new:
            calls += [
                get("/os-hypervisors?with_servers=true", v, sort=sort),
                get("/os-hypervisors/detail?with_servers=1", v, sort=sort),
                get(f"/os-hypervisors/{ident}?with_servers=true", v),
                get("/os-hypervisors?hypervisor_hostname_pattern=cf-host", v, sort=sort),
                get("/os-hypervisors?hypervisor_hostname_pattern=nomatch", v),
                get("/os-hypervisors/not-a-uuid", v),
                get("/os-hypervisors?with_servers=maybe", v),
            ]
        else:
            calls.append(get("/os-hypervisors/99999", v))
    return Scenario("hypervisors", tuple(calls))


def service_views() -> Scenario:
    sort = {"services": ("binary", "host")}
    calls = []
    for v in SERVICE_VERSIONS:
        calls += [
            get("/os-services?binary=nova-compute", v, sort=sort),
            get("/os-services?host={host_a}&binary=nova-compute", v, sort=sort),
            get("/os-services?host=nosuchhost", v),
        ]
    return Scenario("services", tuple(calls))


def flavor_views() -> Scenario:
    return Scenario(
        "flavors",
        tuple(
            at(
                FLAVOR_VERSIONS,
                lambda v: get("/flavors", v, token=MEMBER),
                lambda v: get("/flavors/detail", v, token=MEMBER),
                lambda v: get("/flavors/2", v, token=MEMBER),
                lambda v: get("/flavors/detail?minRam=4096&limit=2", v, token=MEMBER),
                lambda v: get("/flavors/999", v, token=MEMBER),
            )
        ),
    )


def cleanup() -> Scenario:
    return Scenario(
        "delete",
        (
            Call("DELETE", "/servers/{c}", token=MEMBER),
            Wait("c", gone=True),
            get("/servers/{c}", token=MEMBER),
            get("/servers/{c}/os-instance-actions", "2.20", token=MEMBER),
            get("/servers/{c}/os-instance-actions", "2.21", token=MEMBER),
        ),
    )


def all_scenarios() -> list[Scenario]:
    return [
        versions(),
        *lifecycle(),
        refusals(),
        *cold_migrations(),
        reboots(),
        reboot_in_flight(),
        no_valid_host(),
        server_views(),
        migration_views(),
        server_migrations(),
        action_views(),
        hypervisor_views(),
        service_views(),
        flavor_views(),
        cleanup(),
    ]


__all__ = ["ACTIONS", "NETWORK_ID", "NETWORK_NAME", "all_scenarios"]
