"""Chaos: confirms and reverts keep their promises while the stack is being broken.

Each scenario drives dozens of workflows at once (resizes, then confirms and
reverts mixed) across two hosts, injects its faults, and checks that every
migration ended, nothing is stuck in RESIZE_REVERTING, every claim is held once
by the right consumer, and no libvirt domain or ``_resize`` dir is orphaned.
Each also asserts its own outcome, so that it cannot pass by accident: how many
of its faults struck work in flight, and exactly which servers ended in error
(none, unless the scenario's fault is meant to leave some, each with a fault
naming the cause). Random choices come from a seeded generator
(tests/chaos/conftest.py): a failure names the seed to replay it with.

``make test`` runs one short round on PostgreSQL with Redis and on SQLite with
RabbitMQ (the database restart on PostgreSQL with either broker); ``make chaos``
runs the full round on every database and broker
(RESIZEFLOW_CHAOS_SERVERS, _RACES, _STACKS, _SEED size and fix it).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.exc
from sqlalchemy import func, select

from resizeflow import errors, metrics
from resizeflow.compute.volumes import BlockDevice
from resizeflow.db.models import BrokerEpoch, StepJournal, utcnow
from resizeflow.flows import CONFIRM, FLOWS, REVERT, Subject
from resizeflow.periodic import confirm_unconfirmed_resizes
from resizeflow.states import MigrationStatus
from tests.support.chaos import (
    HOSTS,
    PROJECT,
    REPORTS,
    ChaosStack,
    Report,
    default_timing,
)
from tests.support.stack import RABBITMQ_URL, REDIS_URL, require, wait_for
from tests.support.volumes import connection_violations, volumes_on

pytestmark = pytest.mark.chaos

SERVERS = int(os.environ.get("RESIZEFLOW_CHAOS_SERVERS", "26"))
RACES = int(os.environ.get("RESIZEFLOW_CHAOS_RACES", "10"))
# Each stack is a database and a broker; a short round covers both of each.
STACKS = os.environ.get("RESIZEFLOW_CHAOS_STACKS", "postgresql-redis,sqlite-rabbitmq").split(",")
# The database restart needs a server: PostgreSQL, with either broker.
SERVER_STACKS = ["postgresql-redis", "postgresql-rabbitmq"]


def _stack(name: str, tmp_path: Path, timing: dict[str, str] | None) -> Iterator[ChaosStack]:
    database, _, broker = name.partition("-")
    if broker == "redis":
        require(REDIS_URL, 6379, "Redis")  # for its redis-server binary's sake
    else:
        require(RABBITMQ_URL, 5672, "RabbitMQ")
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("the private PostgreSQL cluster is started with runuser, as root")
    stack = ChaosStack(tmp_path, broker, timing, database)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(params=STACKS)
def chaos(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChaosStack]:
    yield from _stack(request.param, tmp_path, None)


@pytest.fixture(params=STACKS)
def chaos_defaults(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChaosStack]:
    """The chaos stack with a deployment's timing: a 120 s reconcile deadline and so on."""
    yield from _stack(request.param, tmp_path, default_timing())


@pytest.fixture(params=SERVER_STACKS)
def chaos_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChaosStack]:
    """The chaos stack on a database server that can be restarted."""
    yield from _stack(request.param, tmp_path, None)


def patiently(call: Callable[[], Any], attempts: int = 60) -> Any:
    """Call the service layer as a client would: retry while the database is down."""
    for _ in range(attempts - 1):
        try:
            return call()
        except sqlalchemy.exc.OperationalError:
            time.sleep(0.5)
    return call()


class FaultThread(threading.Thread):
    """Runs a scenario's faults beside its workload; ``join`` raises what they raised,
    so a fault that never struck fails the scenario rather than passing it unfaulted."""

    def __init__(self, faults: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self.faults = faults
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.faults()
        except BaseException as e:
            self.error = e

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self.error is not None:
            raise AssertionError(f"the scenario's faults failed: {self.error!r}") from self.error


def in_background(faults: Callable[[], None]) -> FaultThread:
    thread = FaultThread(faults)
    thread.start()
    return thread


def workload(
    stack: ChaosStack,
    report: Report,
    faults: Callable[[], None] | None,
    uuids: list[str] | None = None,
    over: threading.Event | None = None,
) -> dict[str, int]:
    """Boot (unless given ``uuids``), then resize, confirm and revert everything,
    with ``faults`` running alongside; returns each server's migration.

    ``over`` is set once every workflow has ended, for faults that strike for
    as long as the workload lasts."""
    uuids = uuids or stack.boot(SERVERS)
    thread = in_background(faults) if faults else None
    migs = {u: patiently(lambda u=u: stack.api.resize(stack.user(), u, "2")) for u in uuids}
    report.workflows += len(migs)
    wait_for(
        lambda: patiently(
            lambda: stack._migrations_in(
                list(migs.values()),
                {MigrationStatus.FINISHED, MigrationStatus.ERROR},
            )
        ),
        240,
        "the resizes",
    )
    finishing = {
        u: m
        for u, m in migs.items()
        if patiently(lambda m=m: stack.migration_status(m)) == "finished"
    }
    report.workflows += stack.finish_all(
        finishing, lambda u, verb: patiently(lambda: stack._finish(u, verb))
    )
    if over is not None:
        wait_for(lambda: patiently(lambda: stack._settled(list(migs.values()))), 240, "the end")
        over.set()
    if thread is not None:
        thread.join()
    report.faults += len(stack.faults)
    stack.settle(report, list(migs.values()))
    return migs


def record(report: Report, struck: dict[str, int], errors: dict[str, str] | None = None) -> None:
    """Every scenario's verdict: nothing stuck, no invariant broken, exactly the
    servers in ``errors`` (uuid: the cause their fault must name) in error, and
    ``struck``: how many faults of each kind struck work in flight."""
    REPORTS.append(report)
    for uuid, fault in report.errors.items():
        print(f"{report.scenario}: {uuid} in error: {fault}")
    assert not report.stuck, report.stuck
    assert not report.violations, report.violations
    expected = errors or {}
    assert set(report.errors) == set(expected), (
        f"servers in error: {report.errors}; expected only {sorted(expected)}"
    )
    wrong = {u: report.errors[u] for u, cause in expected.items() if cause not in report.errors[u]}
    assert not wrong, f"faults that do not name their cause: {wrong}"
    assert report.struck == struck, f"faults that struck work in flight: {report.struck}"


def within_budget(
    chaos: ChaosStack, report: Report, migs: dict[str, int], back: str, budget: float
) -> None:
    """Every workflow in flight when the scenario's faults struck ended within
    ``budget`` seconds of ``back`` (the moment what was broken was back)."""
    after_return = chaos.ends_after_return(list(migs.values()))
    assert after_return, "no workflow was in flight when the faults struck"
    worst = max(after_return.values())
    print(
        f"{report.scenario} on {chaos.name}: {len(after_return)} workflows in flight, "
        f"the last ended {worst:.1f}s after {back}"
    )
    late = {k: round(t, 1) for k, t in after_return.items() if t > budget}
    assert not late, f"workflows that ended more than {budget}s after {back}: {late}"


def test_sigkill_host_workers(chaos: ChaosStack, rng: random.Random, seed: int) -> None:
    """A host's worker is SIGKILLed while it has work in flight, up to three times
    while the workload lasts, and restarted."""
    report = Report("1. SIGKILL host workers", chaos.name, seed=seed)
    kills: list[str] = []
    over = threading.Event()

    def faults() -> None:
        while len(kills) < 3 and not over.is_set():
            time.sleep(rng.uniform(0.1, 0.8))
            busy = [host for host in HOSTS if chaos.in_flight(host)]
            if not busy:
                continue
            host = rng.choice(busy)
            chaos.kill_worker(host)
            kills.append(host)
            time.sleep(rng.uniform(0.1, 0.5))
            chaos.start_worker(host)

    workload(chaos, report, faults, over=over)
    assert len(kills) >= 2, kills
    record(report, struck={"SIGKILL worker": len(kills)})


# Once a host's workers are back after a SIGKILL, every workflow they held ends within this.
RESTART_BUDGET = 10.0


def test_sigkill_and_restart_at_once_on_default_settings(
    chaos_defaults: ChaosStack, rng: random.Random, seed: int
) -> None:
    """Both hosts' workers are SIGKILLed in the middle of confirms and reverts and
    restarted at once. The restarted workers give back at once what their dead
    predecessors held (on Redis, the unacknowledged messages would otherwise wait
    for the visibility timeout, and their workflows for the reconciler's 120 s)."""
    chaos = chaos_defaults
    report = Report(
        "8. SIGKILL both hosts, restarted at once (default settings)", chaos.name, seed=seed
    )
    uuids = chaos.boot(SERVERS)
    migs = chaos.resize_all(uuids)
    report.workflows += len(migs)
    # The first step of each confirm (on the source) and of each revert (on the
    # dest) fails until the workers die, so both hosts are in the middle of work
    # then, and hold retries: messages taken, due a few seconds later, never
    # acknowledged. The restarted workers must not wait for them.
    chaos.set_failpoints(
        {flow.steps[0].task: [{"mode": "transient"}] for flow in (CONFIRM, REVERT)}
    )
    report.workflows += chaos.finish_all(migs)
    for host in HOSTS:
        chaos.wait_for_work_on(host)
    time.sleep(rng.uniform(1.0, 2.0))
    for host in HOSTS:
        chaos.kill_worker(host)
    chaos.set_failpoints({})
    for host in HOSTS:
        chaos.start_worker(host)
    report.faults += len(chaos.faults)
    chaos.settle(report, list(migs.values()))
    record(report, struck={"SIGKILL worker": 2})
    within_budget(chaos, report, migs, "the workers were started again", RESTART_BUDGET)


def test_broker_restart_loses_its_data(chaos: ChaosStack, rng: random.Random, seed: int) -> None:
    report = Report("2. broker restart, data lost", chaos.name, seed=seed)

    def faults() -> None:
        chaos.wait_for_resizes_under_way()
        time.sleep(rng.uniform(0.0, 0.5))
        chaos.restart_broker_losing_data()

    workload(chaos, report, faults)
    record(report, struck={"broker lost its data": 1})


# Once the broker answers again, every workflow whose messages it lost ends within this.
BROKER_RETURN_BUDGET = 15.0


def broker_losses(stack: ChaosStack) -> tuple[int, int]:
    """The losses seen and the workflows re-driven for them, as /metrics reports them."""
    found = {}
    for line in metrics.render(stack.db).decode().splitlines():
        name, _, value = line.partition(" ")
        if name in ("resizeflow_broker_losses_total", "resizeflow_broker_loss_redrives_total"):
            found[name] = int(float(value))
    return found["resizeflow_broker_losses_total"], found["resizeflow_broker_loss_redrives_total"]


def test_broker_loss_on_default_settings(
    chaos_defaults: ChaosStack, rng: random.Random, seed: int
) -> None:
    """With a deployment's settings the reconciler would wait 120 s; the broker-loss
    check re-drives what the broker lost as soon as it is back."""
    chaos = chaos_defaults
    report = Report("2. broker restart, data lost (default settings)", chaos.name, seed=seed)

    def faults() -> None:
        chaos.wait_for_resizes_under_way()
        time.sleep(rng.uniform(0.0, 0.5))
        chaos.restart_broker_losing_data()

    migs = workload(chaos, report, faults)
    record(report, struck={"broker lost its data": 1})
    within_budget(chaos, report, migs, "the broker was back", BROKER_RETURN_BUDGET)
    losses, redriven = broker_losses(chaos)
    assert losses == 1
    assert redriven > 0


def test_no_broker_loss_no_redrive(chaos_defaults: ChaosStack, seed: int) -> None:
    """Under load, with nothing broken, the broker-loss check re-drives nothing."""
    chaos = chaos_defaults
    report = Report("no fault (default settings)", chaos.name, seed=seed)
    workload(chaos, report, None)
    record(report, struck={})
    with chaos.db.snapshot() as s:
        epochs = s.scalars(select(BrokerEpoch.seq)).all()
    assert epochs == [1], "the check ran, and found the one epoch it started with"
    assert broker_losses(chaos) == (0, 0)


def test_postgresql_restart(chaos_server: ChaosStack, rng: random.Random, seed: int) -> None:
    chaos = chaos_server
    report = Report("3. PostgreSQL restart", chaos.name, seed=seed)
    # A few resizes linger in their disk copy (no row locked), so that work is
    # in flight when the server goes, and commits after it is back.
    chaos.set_failpoints(
        {
            "resizeflow.resize.resize_instance:hypervisor": [
                {"mode": "delay", "seconds": 2, "times": 4}
            ]
        }
    )

    def faults() -> None:
        chaos.wait_for_resizes_under_way()
        time.sleep(rng.uniform(0.0, 0.5))
        chaos.restart_postgres()

    workload(chaos, report, faults)
    record(report, struck={"PostgreSQL restarted": 1})


# The step whose failure for good the transient scenario injects, for two servers.
FAILS_FOR_GOOD = "resizeflow.resize.resize_instance"


def test_steps_fail_transiently_30_percent(
    chaos: ChaosStack, rng: random.Random, seed: int
) -> None:
    """Every step of every migration flow fails 30% of the time, transiently: each
    is retried and the workflows end as if nothing happened. Two servers' resizes
    also fail for good: exactly those end in error, with a fault that says so."""
    report = Report("4. 30% transient step failures, 2 for good", chaos.name, seed=seed)
    uuids = chaos.boot(SERVERS)
    doomed = rng.sample(uuids, 2)
    table: dict[str, list[dict[str, Any]]] = {
        step.task: [{"mode": "transient", "probability": 0.3}]
        for flow in FLOWS.values()
        if flow.subject is Subject.MIGRATION
        for step in flow.steps
    }
    table[FAILS_FOR_GOOD][:0] = [
        {"mode": "fatal", "times": 1, "instance_uuid": uuid} for uuid in doomed
    ]
    chaos.set_failpoints(table)
    workload(chaos, report, None, uuids)
    fired = chaos.fired()
    chaos.set_failpoints({})
    with chaos.db.snapshot() as s:
        # (A step that never ran, as those after a failure for good, has no attempt.)
        ran = StepJournal.attempts > 0
        retries = int(s.scalar(select(func.sum(StepJournal.attempts - 1)).where(ran)) or 0)
    report.faults += fired
    record(
        report,
        struck={},
        errors={uuid: f"injected fatal failure in {FAILS_FOR_GOOD}" for uuid in doomed},
    )
    # The failures struck: every transient one was retried once, and the two
    # fatal ones were not retried at all.
    assert fired > len(doomed), fired
    assert retries == fired - len(doomed), (retries, fired)


def test_races_on_one_server(chaos: ChaosStack, seed: int) -> None:
    """confirm, revert, auto-confirm and delete, all at once.

    Exactly one of confirm, revert and auto-confirm wins, or none if the delete
    came first; the delete is accepted in any task_state, as in Nova, and ends
    a workflow in flight.
    """
    report = Report("5. confirm/revert/auto-confirm/delete races", chaos.name, seed=seed)
    [uuid] = chaos.boot(1, flavor="ram-1")
    migs = []
    wins: dict[str, int] = {}
    for _ in range(RACES):
        mig_id = chaos.api.resize(
            chaos.user(), uuid, "ram-2" if _flavor(chaos, uuid) == 91 else "ram-1"
        )
        migs.append(mig_id)
        report.workflows += 2
        wait_for(lambda m=mig_id: chaos.migration_status(m) == "finished", 60, "the resize")
        outcomes = _race(chaos, uuid, mig_id)
        winners = [who for who, result in outcomes.items() if result == "won"]
        for who, result in outcomes.items():
            if result not in ("won", "lost"):
                report.violations.append(f"{who} answered {result}")
        others = [who for who in winners if who != "delete"]
        if "delete" not in winners or len(others) > 1:
            report.violations.append(f"migration {mig_id}: winners {winners}")
        for who in winners:
            wins[who] = wins.get(who, 0) + 1
        wait_for(lambda m=mig_id: chaos.workflow_over(m), 60, "the winner's workflow")
        if "delete" in winners:
            wait_for(lambda u=uuid: chaos.deleted(u), 60, "the delete")
            [uuid] = chaos.boot(1, flavor="ram-1")
    chaos.settle(report, migs)
    record(report, struck={})
    assert wins.get("delete", 0) == RACES


def _flavor(chaos: ChaosStack, uuid: str) -> int:
    with chaos.db.snapshot() as s:
        from resizeflow.db.models import Instance

        inst = s.get(Instance, uuid)
        assert inst is not None
        return int(inst.flavor["id"])


def _race(chaos: ChaosStack, uuid: str, mig_id: int) -> dict[str, str]:
    barrier = threading.Barrier(4)
    outcomes: dict[str, str] = {}

    def attempt(who: str, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            result = call()
            won = mig_id in result.confirmed if who == "auto-confirm" else True
            outcomes[who] = "won" if won else "lost"
        except errors.ResizeflowError as exc:
            # 404: the delete came first, and the server is gone (Nova's answer too).
            lost = exc.code in (400, 409) or (exc.code == 404 and who != "delete")
            outcomes[who] = "lost" if lost else f"{exc.code} {exc.message}"
        except Exception as exc:  # anything else would be a 500 from the API
            outcomes[who] = f"500 {type(exc).__name__}: {exc}"

    future = utcnow().replace(year=utcnow().year + 1)
    calls = {
        "confirm": lambda: chaos.api.confirm_resize(chaos.user(), uuid),
        "revert": lambda: chaos.api.revert_resize(chaos.user(), uuid),
        "auto-confirm": lambda: confirm_unconfirmed_resizes(chaos.api, 60, now=future),
        "delete": lambda: chaos.api.delete(chaos.user(), uuid),
    }
    threads = [threading.Thread(target=attempt, args=item) for item in calls.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_source_host_down_when_confirm_is_asked(chaos: ChaosStack, seed: int) -> None:
    report = Report("6. source host down at confirm", chaos.name, seed=seed)
    uuids = chaos.boot(SERVERS)
    migs = chaos.resize_all(uuids)
    report.workflows += len(migs)
    down = HOSTS[0]
    on_down = {u: m for u, m in migs.items() if chaos.source_of(m) == down}
    assert on_down, "the scheduler spread the servers over both hosts"
    chaos.stop_worker(down)
    before = chaos.snapshot(list(on_down))
    refused = 0
    for uuid in on_down:
        with pytest.raises(errors.ServiceUnavailable) as exc:
            chaos.api.confirm_resize(chaos.user(), uuid)
        assert exc.value.code == 409
        refused += 1
    if chaos.snapshot(list(on_down)) != before:
        report.violations.append("a refused confirm changed something")
    chaos.start_worker(down)
    report.workflows += chaos.finish_all(migs)
    report.faults += 1
    chaos.settle(report, list(migs.values()))
    # Nothing was in flight when the host went down (every resize had finished):
    # the fault struck the confirms asked meanwhile, each refused.
    record(report, struck={})
    assert refused == len(on_down)


# Where a worker is killed while a volume's connection moves: after the source's
# connection is cut (resize_instance) or the dest's made (finish_resize), or the
# source's made again (finish_revert), each before its step commits; and as the
# revert's terminate_volume_connections is about to cut the dest's.
VOLUME_STEPS = (
    "resizeflow.resize.resize_instance:after_hypervisor",
    "resizeflow.resize.finish_resize:after_hypervisor",
    "resizeflow.revert.terminate_volume_connections",
    "resizeflow.revert.finish_revert:after_hypervisor",
)
VOLUME_SERVERS = int(os.environ.get("RESIZEFLOW_CHAOS_VOLUME_SERVERS", "8"))


def test_sigkill_while_volume_connections_move(
    chaos: ChaosStack, rng: random.Random, seed: int
) -> None:
    """Every server has a volume; workers are SIGKILLed in the middle of moving a
    connection. Afterwards each volume is reachable from its server's host alone."""
    report = Report("7. SIGKILL while a volume's connection moves", chaos.name, seed=seed)
    chaos.start_storage()
    storage = volumes_on(chaos.db, chaos.app, chaos.settings.storage_host)
    uuids = chaos.boot(VOLUME_SERVERS)
    volumes = {u: storage.create(PROJECT, "chaos", 1).id for u in uuids}
    for u, volume_id in volumes.items():
        chaos.api.attach_volume(chaos.user(), u, BlockDevice(volume_id))
    wait_for(
        lambda: all(v.status == "in-use" for v in storage.volumes()),
        120,
        "the volumes to be attached",
    )
    chaos.set_failpoints(
        {step: [{"mode": "delay", "seconds": 3, "times": 3}] for step in VOLUME_STEPS}
    )

    kills: list[str] = []
    workload_over = threading.Event()

    def faults() -> None:
        # Kill the worker of each host that enters one of the failpoints (it is
        # delayed there), until the workload is over.
        last = chaos.failpoints_left(VOLUME_STEPS)
        while not workload_over.is_set():
            now = chaos.failpoints_left(VOLUME_STEPS)
            taken = [step for step in VOLUME_STEPS if now[step] < last[step]]
            last = now
            hosts = sorted({h for step in taken for h in chaos.hosts_running(step)})
            for host in hosts:
                chaos.kill_worker(host)
                kills.append(host)
            if hosts:
                time.sleep(rng.uniform(0.1, 0.5))
            for host in hosts:
                chaos.start_worker(host)
            time.sleep(0.1)

    thread = in_background(faults)
    migs = {u: patiently(lambda u=u: chaos.api.resize(chaos.user(), u, "2")) for u in uuids}
    report.workflows += len(migs)
    wait_for(
        lambda: chaos._migrations_in(
            list(migs.values()), {MigrationStatus.FINISHED, MigrationStatus.ERROR}
        ),
        240,
        "the resizes",
    )
    finishing = {u: m for u, m in migs.items() if chaos.migration_status(m) == "finished"}
    report.workflows += chaos.finish_all(finishing, chaos._finish)
    wait_for(lambda: chaos._settled(list(migs.values())), 240, "the workflows to end")
    workload_over.set()
    thread.join()
    report.faults += len(chaos.faults)
    chaos.settle(report, list(migs.values()))
    report.violations += connection_violations(chaos.db, chaos.app, chaos.settings.storage_host)
    # Each kill struck a worker in the middle of moving a connection.
    assert len(kills) >= 2, kills
    record(report, struck={"SIGKILL worker": len(kills)})
    # Deleting the servers leaves every volume available and exported nowhere.
    for u in uuids:
        chaos.api.delete(chaos.user(), u)
    wait_for(lambda: all(chaos.deleted(u) for u in uuids), 120, "the servers to be deleted")
    assert connection_violations(chaos.db, chaos.app, chaos.settings.storage_host) == []
    assert {v.status for v in storage.volumes()} == {"available"}
