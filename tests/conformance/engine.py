"""Replay the same requests on real Nova and on resizeflow, and compare every answer.

A scenario is a list of steps. A :class:`Call` is one request, written once
with placeholders (``/servers/{a}/action``) that each side fills from what it
captured itself earlier (its own server uuid, request id, migration uuid,
host), so the same logical request goes to both. A :class:`Wait` polls both
sides until a server reaches the same state. Each pair of answers is compared
by :func:`compare`:

- the status code;
- the keys at every level of the body;
- the JSON type of every value;
- the values that are enumerations (server status, vm_state, task_state,
  power_state, migration status and type, action and event names, event
  results, service and hypervisor state, link relations), fault bodies and
  messages, flavors and version documents: exactly, once each side's own ids
  are written as their logical names;
- links: exactly, once the endpoint and each side's ids are written as names;
- anything else (uuids, times, host names, addresses): by format only.

Every difference names the scenario, the request and the JSON path, with
Nova's value beside resizeflow's.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

# -- what a scenario is made of -----------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request, sent to both sides; its answers are compared unless ``compare`` is off.

    ``path``, ``token`` and string values in ``body`` may hold ``{name}``
    placeholders, filled per side from the values captured so far.
    ``capture`` names values of the answer to keep for later steps, by a dotted
    path (``server.id``, ``migrations.0.uuid``). ``version`` is the compute
    microversion asked for (None: no header); ``headers`` are sent as given.
    ``sort`` orders a list in the answer by some of its items' keys before the
    comparison, for lists whose order Nova does not define.
    """

    method: str
    path: str
    version: str | None = "2.1"
    token: str = "admin:admin"
    body: Any = None
    raw_body: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    capture: Mapping[str, str] = field(default_factory=dict)
    sort: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    compare: bool = True
    label: str = ""

    def describe(self) -> str:
        shown = f"{self.method} {self.path}"
        if self.version is not None:
            shown += f" @{self.version}"
        if self.token != "admin:admin":
            shown += f" as {self.token}"
        return self.label or shown


@dataclass(frozen=True)
class Wait:
    """Poll both sides until server ``server`` shows ``status`` with no task (or is gone).

    It also waits until the events of the server's newest action have all
    finished: Nova records an event's end just after the state it set.
    """

    server: str
    status: str | None = None
    gone: bool = False
    timeout: float = 90.0
    # Request ids (placeholders) of earlier actions that must also have ended:
    # each shows at least one event, and every event has finished.
    actions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pause:
    """Let ``seconds`` pass on both sides before the next step.

    Nova keeps a server's ``created_at`` to the whole second (the build
    request's time, sent to the conductor as an ISO 8601 string without its
    fraction) and lists servers created in the same second by uuid, which is
    random on each side. Servers whose list order is compared are booted at
    least a second apart, so that order is their boot order on both sides.
    """

    seconds: float
    why: str = ""


@dataclass(frozen=True)
class Hold:
    """Hold a compute host's processes on both sides, or let them go (``held=False``).

    What the API sends a held host waits in its queue, so the states the API
    sets before it answers (a reboot's ``rebooting``, shown as ``REBOOT``) can
    be read on both sides before the host moves them on. A scenario lets go
    of every host it held when it ends, however it ends.
    """

    host: str
    held: bool = True


Step = Call | Wait | Pause | Hold


@dataclass(frozen=True)
class Scenario:
    name: str
    steps: tuple[Step, ...]


# -- the two sides ------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    body: Any
    headers: Mapping[str, str]


@dataclass
class Side:
    """One API under test: its endpoint, and the values it captured so far."""

    name: str
    endpoint: str  # .../v2.1
    values: dict[str, str] = field(default_factory=dict)
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))
    # Holds (True) or lets go (False) a compute host's processes: see Hold.
    hold: Callable[[str, bool], None] | None = None

    @property
    def root(self) -> str:
        return self.endpoint.removesuffix("/v2.1")

    def fill(self, text: str) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.values:
                raise KeyError(f"{self.name}: nothing captured as {{{name}}} yet")
            return self.values[name]

        return re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", one, text)

    def fill_body(self, body: Any) -> Any:
        if isinstance(body, str):
            return self.fill(body)
        if isinstance(body, list):
            return [self.fill_body(b) for b in body]
        if isinstance(body, dict):
            return {self.fill(k): self.fill_body(v) for k, v in body.items()}
        return body

    def send(self, call: Call) -> Answer:
        headers = {"X-Auth-Token": self.fill(call.token), **call.headers}
        if call.version is not None:
            headers["OpenStack-API-Version"] = f"compute {call.version}"
        path = self.fill(call.path)
        # "/" and "/v2.1..." are the API's root documents; anything else is under /v2.1.
        root = path == "/" or path.startswith("/v2.1")
        url = (self.root if root else self.endpoint) + path
        content: bytes | None = None
        if call.raw_body is not None:
            content = call.raw_body.encode()
            headers.setdefault("Content-Type", "application/json")
        elif call.body is not None:
            content = json.dumps(self.fill_body(call.body)).encode()
            headers["Content-Type"] = "application/json"
        r = self.client.request(call.method, url, headers=headers, content=content)
        try:
            body = r.json() if r.content else None
        except ValueError:
            body = r.text
        return Answer(r.status_code, body, r.headers)

    def capture(self, call: Call, answer: Answer) -> None:
        for name, where in call.capture.items():
            found = dig(answer.body, self.fill(where))
            if found is None:
                raise AssertionError(
                    f"{self.name}: {call.describe()} answered {answer.status} without {where}: "
                    f"{json.dumps(answer.body)[:500]}"
                )
            self.values[name] = str(found)

    def wait(self, w: Wait) -> str | None:
        """Poll until the state is reached; None, or why it was not."""
        deadline = time.monotonic() + w.timeout
        last = ""
        while time.monotonic() < deadline:
            r = self.send(Call("GET", f"/servers/{{{w.server}}}"))
            if w.gone:
                if r.status == 404:
                    return None
                last = f"{r.status}"
            elif r.status == 200:
                server = r.body["server"]
                last = f"{server['status']}/{server['OS-EXT-STS:task_state']}"
                settled = server["OS-EXT-STS:task_state"] is None
                # A hard reboot of a server in error shows ERROR until it ends.
                if server["status"] == "ERROR" and w.status != "ERROR" and settled:
                    return f"went to ERROR: {server.get('fault')}"
                if (
                    server["status"] == w.status
                    and settled
                    and self._events_finished(w.server)
                    and all(self._action_ended(w.server, a) for a in w.actions)
                ):
                    return None
            time.sleep(0.2)
        return f"still {last} after {w.timeout:.0f}s"

    def _action_ended(self, server: str, request: str) -> bool:
        shown = self.send(Call("GET", f"/servers/{{{server}}}/os-instance-actions/{{{request}}}"))
        events = shown.body["instanceAction"].get("events", []) if shown.status == 200 else []
        return bool(events) and all(e["finish_time"] is not None for e in events)

    def _events_finished(self, server: str) -> bool:
        actions = self.send(Call("GET", f"/servers/{{{server}}}/os-instance-actions"))
        if actions.status != 200 or not actions.body["instanceActions"]:
            return False
        newest = actions.body["instanceActions"][0]["request_id"]
        shown = self.send(Call("GET", f"/servers/{{{server}}}/os-instance-actions/{newest}"))
        events = shown.body["instanceAction"].get("events", [])
        return all(e["finish_time"] is not None for e in events)


def dig(body: Any, where: str) -> Any:
    """The value at a dotted path; ``list[key=value]`` picks the list's item with that value."""
    for part in where.split("."):
        picked = re.fullmatch(r"(.+)\[(.+?)=(.*)\]", part)
        if picked is not None:
            name, key, value = picked.groups()
            items = body.get(name) if isinstance(body, dict) else None
            found = [i for i in items or () if isinstance(i, dict) and str(i.get(key)) == value]
            if not found:
                return None
            body = found[0]
        elif isinstance(body, list) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(body) <= index < len(body):
                return None
            body = body[index]
        elif isinstance(body, dict):
            body = body.get(part)
        else:
            return None
    return body


# -- comparing two answers ----------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    scenario: str
    request: str
    path: str
    nova: str
    resizeflow: str

    def __str__(self) -> str:
        return (
            f"[{self.scenario}] {self.request}\n"
            f"    at {self.path or '(the answer)'}: "
            f"Nova {self.nova}  |  resizeflow {self.resizeflow}"
        )


EXACT, FORMAT, HREF = "exact", "format", "href"

# Which values are compared exactly, by JSON path pattern: "*" is one key or
# index, "**" any number of them. The first pattern that matches decides;
# everything else is compared by format.
RULES: tuple[tuple[str, str], ...] = (
    ("**.href", HREF),
    # Enumerations.
    ("**.status", EXACT),
    ("**.state", EXACT),
    ("**.OS-EXT-STS:vm_state", EXACT),
    ("**.OS-EXT-STS:task_state", EXACT),
    ("**.OS-EXT-STS:power_state", EXACT),
    ("**.migration_type", EXACT),
    ("**.action", EXACT),
    ("**.event", EXACT),
    ("**.result", EXACT),
    ("**.binary", EXACT),
    ("**.rel", EXACT),
    ("**.type", EXACT),
    ("**.host_status", EXACT),
    ("**.OS-DCF:diskConfig", EXACT),
    ("**.OS-EXT-AZ:availability_zone", EXACT),
    ("**.zone", EXACT),
    ("**.hypervisor_type", FORMAT),
    # What a request set, and flavors, which both sides define alike.
    ("**.locked", EXACT),
    ("**.locked_reason", EXACT),
    ("**.description", EXACT),
    ("**.metadata.**", EXACT),
    ("**.tags.**", EXACT),
    # A server's instance name follows the deployment's instance_name_template.
    ("hypervisors.*.servers.*.name", FORMAT),
    ("hypervisor.servers.*.name", FORMAT),
    ("**.name", EXACT),
    ("**.progress", EXACT),
    ("**.forced_down", EXACT),
    ("**.disabled_reason", EXACT),
    ("**.message", EXACT),
    ("**.code", EXACT),
    ("**.flavor.**", EXACT),
    ("flavors.**", EXACT),
    ("extra_specs.**", EXACT),
    ("**.OS-EXT-IPS:type", EXACT),
    ("**.version", EXACT),
    ("**.min_version", EXACT),
    ("**.media-types.**", EXACT),
    ("**.updated", FORMAT),
)

# A version document's ``version``: the newest microversion each side serves.
# resizeflow serves 2.1 to 2.96 and Nova 34 to 2.104; the two are compared by
# format, and no scenario asks for a version past resizeflow's.
FORMAT_ONLY_PATHS: tuple[str, ...] = ("version.version", "versions.*.version")

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_REQ = re.compile(r"req-" + _UUID.pattern, re.I)
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2})?(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_HEX = re.compile(r"^[0-9a-f]{16,}$")


def _matches(pattern: Sequence[str], path: Sequence[str]) -> bool:
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_matches(rest, path[i:]) for i in range(len(path) + 1))
    return bool(path) and (head in ("*", path[0])) and _matches(rest, path[1:])


def rule_for(path: Sequence[str]) -> str:
    for pattern in FORMAT_ONLY_PATHS:
        if _matches(pattern.split("."), path):
            return FORMAT
    for pattern, mode in RULES:
        if _matches(pattern.split("."), path):
            return mode
    return FORMAT


def shape(value: str) -> str:
    """The format of a string compared by format: what kind of value, not which."""
    if value == "":
        return "empty string"
    if _REQ.fullmatch(value):
        return "request id"
    if _UUID.fullmatch(value):
        return "uuid"
    if _DATETIME.match(value):
        return "time " + re.sub(r"\d", "9", value)
    if _IPV4.match(value):
        return "IPv4 address"
    if ":" in value and all(c in "0123456789abcdef:" for c in value.lower()):
        return "MAC or IPv6 address" if value.count(":") != 5 else "MAC address"
    if _HEX.match(value):
        return f"hex string of {len(value)}"
    return "text"


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class Normaliser:
    """Writes each side's own ids and endpoint as the names both share."""

    def __init__(self, side: Side) -> None:
        # Longest first; a value captured under two names is written as the first name.
        self.pairs = sorted(
            ((v, k) for k, v in side.values.items() if len(v) >= 8),
            key=lambda p: (-len(p[0]), p[1]),
        )
        self.root = side.root

    def text(self, value: str) -> str:
        value = value.replace(self.root, "{endpoint}")
        for own, name in self.pairs:
            value = value.replace(own, "{" + name + "}")
        value = _REQ.sub("{request-id}", value)
        return _UUID.sub("{uuid}", value)


def show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 160 else text[:157] + "..."


def compare(
    nova: Any,
    rf: Any,
    nova_ids: Normaliser,
    rf_ids: Normaliser,
    path: tuple[str, ...] = (),
) -> list[tuple[str, str, str]]:
    """Every difference between two bodies, as (JSON path, Nova's, resizeflow's)."""
    where = ".".join(path)
    nt, rt = json_type(nova), json_type(rf)
    if nt != rt:
        return [(where, f"{nt} {show(nova)}", f"{rt} {show(rf)}")]
    if isinstance(nova, dict):
        out = []
        for key in sorted(set(nova) - set(rf)):
            out.append((".".join((*path, key)), f"has it: {show(nova[key])}", "has no such key"))
        for key in sorted(set(rf) - set(nova)):
            out.append((".".join((*path, key)), "has no such key", f"has it: {show(rf[key])}"))
        for key in sorted(set(nova) & set(rf)):
            out.extend(compare(nova[key], rf[key], nova_ids, rf_ids, (*path, key)))
        return out
    if isinstance(nova, list):
        out = []
        if len(nova) != len(rf):
            out.append((where, f"{len(nova)} items", f"{len(rf)} items"))
        for i, (n, r) in enumerate(zip(nova, rf, strict=False)):
            out.extend(compare(n, r, nova_ids, rf_ids, (*path, str(i))))
        return out
    mode = rule_for(path)
    if isinstance(nova, str):
        if mode == FORMAT:
            ns, rs = shape(nova), shape(rf)
            return [] if ns == rs else [(where, f"{ns} {show(nova)}", f"{rs} {show(rf)}")]
        n, r = nova_ids.text(nova), rf_ids.text(rf)
        return [] if n == r else [(where, show(n), show(r))]
    if mode == FORMAT and not isinstance(nova, bool):
        return []  # numbers compared by type
    return [] if nova == rf else [(where, show(nova), show(rf))]


def sort_lists(body: Any, sort: Mapping[str, tuple[str, ...]], ids: Normaliser) -> Any:
    """``body`` with the lists named in ``sort`` ordered by those keys of their items.

    The keys are read as both sides share them (each side's ids written as
    their logical names), so both lists end in the same logical order.
    """
    if not sort or not isinstance(body, dict):
        return body
    body = dict(body)
    for where, keys in sort.items():
        items = body.get(where)
        if isinstance(items, list):
            body[where] = sorted(
                items,
                key=lambda i: tuple(
                    (ids.text(v) if isinstance(v := i.get(k), str) else f"{v:020}") for k in keys
                ),
            )
    return body


def compare_answers(
    scenario: str, call: Call, nova: Side, n: Answer, rf: Side, r: Answer
) -> list[Difference]:
    request = call.describe()
    out = []
    if n.status != r.status:
        out.append(Difference(scenario, request, "HTTP status", str(n.status), str(r.status)))
    nova_ids, rf_ids = Normaliser(nova), Normaliser(rf)
    found = compare(
        sort_lists(n.body, call.sort, nova_ids),
        sort_lists(r.body, call.sort, rf_ids),
        nova_ids,
        rf_ids,
    )
    out.extend(Difference(scenario, request, p, a, b) for p, a, b in found)
    return [d for d in out if not known(d)]


@dataclass(frozen=True)
class Known:
    """A difference the tier expects, and why: each is listed in every report.

    A known difference matches by scenario, request and JSON path (regular
    expressions, matched in full) and by both values. One that no longer
    occurs fails the run, so the list never outlives what it describes.
    """

    scenario: str
    request: str
    path: str
    nova: str
    resizeflow: str
    why: str

    def matches(self, d: Difference) -> bool:
        return all(
            re.fullmatch(pattern, value) is not None
            for pattern, value in (
                (self.scenario, d.scenario),
                (self.request, d.request),
                (self.path, d.path),
                (self.nova, d.nova),
                (self.resizeflow, d.resizeflow),
            )
        )


KNOWN: list[Known] = []
SEEN: dict[Known, int] = {}


def known(d: Difference) -> bool:
    for k in KNOWN:
        if k.matches(d):
            SEEN[k] = SEEN.get(k, 0) + 1
            return True
    return False


# -- running scenarios ----------------------------------------------------------------------


@dataclass
class Run:
    nova: Side
    rf: Side
    differences: list[Difference] = field(default_factory=list)
    compared: int = 0
    failures: list[str] = field(default_factory=list)  # a side that could not follow
    seconds: float = 0.0

    def play(self, scenario: Scenario, on_step: Callable[[str], None] | None = None) -> None:
        held: set[str] = set()
        try:
            self._play(scenario, held, on_step)
        finally:
            for host in sorted(held):
                self._hold(Hold(host, held=False), held)

    def _hold(self, step: Hold, held: set[str]) -> None:
        for side in (self.nova, self.rf):
            if side.hold is None:
                raise RuntimeError(f"{side.name} cannot hold a host")
            side.hold(step.host, step.held)
        (held.add if step.held else held.discard)(step.host)

    def _play(
        self, scenario: Scenario, held: set[str], on_step: Callable[[str], None] | None
    ) -> None:
        began = time.monotonic()
        for step in scenario.steps:
            if isinstance(step, Pause):
                time.sleep(step.seconds)
                continue
            if isinstance(step, Hold):
                self._hold(step, held)
                continue
            if isinstance(step, Wait):
                for side in (self.nova, self.rf):
                    why = side.wait(step)
                    if why is not None:
                        self.failures.append(
                            f"[{scenario.name}] {side.name}: server {step.server} {why}"
                        )
                        self.seconds += time.monotonic() - began
                        return
                continue
            try:
                n = self.nova.send(step)
                r = self.rf.send(step)
            except KeyError as exc:
                self.failures.append(f"[{scenario.name}] {step.describe()}: {exc}")
                break
            if on_step is not None:
                on_step(step.describe())
            if step.compare:
                self.compared += 1
                self.differences.extend(
                    compare_answers(scenario.name, step, self.nova, n, self.rf, r)
                )
            try:
                self.nova.capture(step, n)
                self.rf.capture(step, r)
            except AssertionError as exc:
                self.failures.append(f"[{scenario.name}] {exc}")
                break
        self.seconds += time.monotonic() - began

    def of(self, scenario: str) -> list[Difference]:
        return [d for d in self.differences if d.scenario == scenario]


def report(run: Run, scenarios: Iterable[Scenario]) -> str:
    lines = [
        f"{run.compared} responses compared, {len(run.differences)} differences, "
        f"{len(run.failures)} scenarios that could not finish, in {run.seconds:.1f}s",
        "",
    ]
    for failure in run.failures:
        lines.append(f"COULD NOT FINISH {failure}")
    if KNOWN:
        lines.append("Known differences (expected, each with its reason):")
        for k in KNOWN:
            lines.append(f"  - {SEEN.get(k, 0)} times: {k.scenario} / {k.path}: {k.why}")
        lines.append("")
    for scenario in scenarios:
        found = run.of(scenario.name)
        if found:
            lines.append(f"== {scenario.name}: {len(found)} differences")
            lines.extend(str(d) for d in found)
    return "\n".join(lines)
