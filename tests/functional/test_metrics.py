"""/metrics from the step journal: exact counts and buckets, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
from kombu import Exchange, Queue
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from resizeflow import flows, metrics, routing
from resizeflow.celery_app import make_app
from resizeflow.conf import Settings
from resizeflow.db import services
from resizeflow.db.migrate import upgrade
from resizeflow.db.models import ComputeNode, Instance, InstanceAction, Migration, StepJournal
from resizeflow.db.session import Database
from resizeflow.devstack.brokers import create_vhost, delete_vhost, purge_prefix
from resizeflow.states import JournalStatus, MigrationStatus, VmState
from tests.support.stack import RABBITMQ_URL, REDIS_URL, require

T0 = dt.datetime(2026, 1, 1, 12, 0, 0)


def add_flow(
    db: Database, flow: str, outcomes: list[tuple[str, float | None]], host: str = "h1"
) -> None:
    """A migration whose ``flow`` steps ended as ``outcomes``: (status, seconds taken)."""
    inst_uuid = str(uuid.uuid4())
    with db.transaction() as s:
        s.add(
            Instance(
                uuid=inst_uuid,
                project_id="p",
                user_id="u",
                host=host,
                node=host,
                flavor={"id": 1, "vcpus": 1, "memory_mb": 512, "root_gb": 1},
                vm_state=VmState.RESIZED,
            )
        )
        s.flush()
        mig = Migration(
            uuid=str(uuid.uuid4()),
            instance_uuid=inst_uuid,
            source_compute=host,
            source_node=host,
            dest_compute=host,
            dest_node=host,
            old_instance_type_id=1,
            new_instance_type_id=2,
            status=MigrationStatus.FINISHED,
        )
        s.add(mig)
        s.flush()
        steps = flows.FLOWS[flow].steps
        for position, step in enumerate(steps):
            status, took = outcomes[position] if position < len(outcomes) else ("pending", None)
            started = T0 if took is not None else None
            s.add(
                StepJournal(
                    migration_id=mig.id,
                    instance_uuid=mig.instance_uuid,
                    request_id="req-1",
                    flow=flow,
                    step=step.task,
                    position=position,
                    host=host,
                    status=status,
                    # As the runner counts it: a done step's work was applied once.
                    applied=int(status == JournalStatus.DONE),
                    started_at=started,
                    finished_at=T0 + dt.timedelta(seconds=took) if took is not None else None,
                )
            )


def scrape(db: Database) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render(db).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_workflow_counts_and_step_buckets(database: Database) -> None:
    done = JournalStatus.DONE
    add_flow(database, "confirm", [(done, 0.005), (done, 0.02), (done, 0.3), (done, 2.0)])
    add_flow(database, "confirm", [(done, 0.004), (done, 0.03), (done, 0.4), (done, 3.0)])
    add_flow(database, "revert", [(done, 0.01), (done, 0.5), (JournalStatus.FAILED, 0.1)])
    add_flow(database, "resize", [(JournalStatus.RUNNING, None)])
    # A clock that stepped back never makes a negative duration.
    add_flow(database, "confirm", [(done, -1.0)], host="h2")

    got = scrape(database)

    def counter(name: str, kind: str) -> float:
        return got[(f"resizeflow_workflows_{name}_total", (("kind", kind),))]

    assert [counter("started", k) for k in ("resize", "confirm", "revert")] == [1, 3, 1]
    assert [counter("finished", k) for k in ("resize", "confirm", "revert")] == [0, 2, 0]
    assert [counter("failed", k) for k in ("resize", "confirm", "revert")] == [0, 0, 1]

    def bucket(step: str, host: str, le: str) -> float:
        labels = (("host", host), ("le", le), ("step", f"resizeflow.{step}"))
        return got[("resizeflow_step_duration_seconds_bucket", labels)]

    def series(step: str, host: str, suffix: str) -> float:
        labels = (("host", host), ("step", f"resizeflow.{step}"))
        return got[(f"resizeflow_step_duration_seconds_{suffix}", labels)]

    teardown = "confirm.teardown_source_network"
    assert bucket(teardown, "h1", "0.01") == 2
    assert bucket(teardown, "h1", "+Inf") == 2
    assert series(teardown, "h1", "count") == 2
    assert abs(series(teardown, "h1", "sum") - 0.009) < 1e-3
    finish = "confirm.finish_confirm"
    assert [bucket(finish, "h1", le) for le in ("1.0", "2.5", "5.0")] == [0, 1, 2]
    assert bucket(teardown, "h2", "0.01") == 1 and series(teardown, "h2", "sum") == 0
    # Only finished steps are timed: the failed and the running ones are not.
    assert (
        "resizeflow_step_duration_seconds_count",
        (("host", "h1"), ("step", "resizeflow.revert.terminate_volume_connections")),
    ) not in got
    assert not any(
        "resize.prep_resize" in str(labels)
        for name, labels in got
        if name.startswith("resizeflow_step_duration")
    )


def test_retries_instance_actions_and_liveness(database: Database) -> None:
    done = JournalStatus.DONE
    add_flow(database, "confirm", [(done, 0.01), (done, 0.01)])
    with database.transaction() as s:
        rows = s.scalars(select(StepJournal).order_by(StepJournal.position)).all()
        rows[0].attempts, rows[1].attempts = 3, 1  # two retries, then none
        inst = s.scalars(select(Instance)).first()
        assert inst is not None
        for action, ended in (("create", True), ("stop", True), ("stop", False)):
            s.add(
                InstanceAction(
                    action=action,
                    instance_uuid=inst.uuid,
                    request_id="req-1",
                    user_id="u",
                    project_id="p",
                    finish_time=T0 if ended else None,
                )
            )
    live = subprocess.Popen(["sleep", "60"])
    ended = subprocess.Popen(["true"])
    ended.wait()
    gone_pid = ended.pid  # reaped: no process has this pid now
    machine = socket.gethostname()
    try:
        with database.transaction() as s:
            for pid in (live.pid, live.pid):  # two processes of one host: slots 1 and 2
                services.join(
                    s, "h1", "compute.h1", machine=machine, pid=pid, down_time=60, exclusive=False
                )
            services.heartbeat(s, "h1", "compute.h1", node=f"h1-1@{machine}")
            # A process killed without a goodbye: its pid is gone, its beat recent.
            services.join(
                s, "h2", "compute.h2", machine=machine, pid=gone_pid, down_time=60, exclusive=False
            )
            services.mark_stopped(s, "h2")
        got = scrape(database)
    finally:
        live.kill()
        live.wait()

    def retries(step: str) -> float:
        labels = (("host", "h1"), ("step", f"resizeflow.confirm.{step}"))
        return got[("resizeflow_step_retries_total", labels)]

    assert (retries("teardown_source_network"), retries("confirm_migration")) == (2, 0)
    assert got[("resizeflow_instance_actions_total", (("action", "stop"),))] == 2
    assert got[("resizeflow_instance_actions_finished_total", (("action", "stop"),))] == 1
    assert got[("resizeflow_instance_actions_total", (("action", "create"),))] == 1
    assert got[("resizeflow_host_up", (("host", "h1"),))] == 1
    assert got[("resizeflow_host_up", (("host", "h2"),))] == 0
    for slot in (1, 2):
        labels = (("host", "h1"), ("worker", f"h1-{slot}@{machine}"))
        assert got[("resizeflow_worker_up", labels)] == 1
        assert 0 <= got[("resizeflow_worker_heartbeat_age_seconds", labels)] < 60
    assert got[("resizeflow_worker_up", (("host", "h2"), ("worker", f"h2-1@{machine}")))] == 0
    # Without a broker there is no queue depth; every other series labels its host "host".
    assert all(
        dict(labels).keys() <= {"host", "step", "le", "kind", "status", "action", "worker"}
        for _name, labels in got
    )


@pytest.mark.services
@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_queue_depths_of_every_host(broker: str, tmp_path: Path) -> None:
    """Each host queue's depth, with one never declared in the middle: on AMQP
    that lookup fails and closes its channel, and the next host's still counts."""
    env = {"RESIZEFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'rf.sqlite'}"}
    vhost = ""
    if broker == "redis":
        require(REDIS_URL, 6379, "Redis")
        env["RESIZEFLOW_BROKER_URL"] = REDIS_URL
        env["RESIZEFLOW_BROKER_PREFIX"] = f"rf-test-{uuid.uuid4().hex[:8]}:"
    else:
        require(RABBITMQ_URL, 5672, "RabbitMQ")
        vhost = f"rf-test-{uuid.uuid4().hex[:8]}"
        env["RESIZEFLOW_BROKER_URL"] = create_vhost(RABBITMQ_URL, vhost)
    settings = Settings.from_env(env, state_dir=tmp_path)
    db = Database(settings.db_url)
    app = make_app(settings)
    try:
        upgrade(db)
        with db.transaction() as s:
            for host in ("h1", "h2", "h3"):
                s.add(ComputeNode(host=host, node=host, vcpus=1, memory_mb=1, local_gb=1))
        waiting = {"h1": 2, "h3": 1}  # h2's queue is never declared
        with app.connection_for_write() as conn, conn.Producer() as producer:
            for host, n in waiting.items():
                # Declared as a worker's Celery declares the queue it consumes.
                name = routing.queue_for(host)
                queue = Queue(name, Exchange(name, type="direct"), routing_key=name)
                for _ in range(n):
                    producer.publish(
                        {"x": 1}, exchange=queue.exchange, routing_key=name, declare=[queue]
                    )
        families = metrics.ResizeflowCollector(db, app).collect()
        depth = {
            sample.labels["host"]: sample.value
            for family in families
            if family.name == "resizeflow_queue_depth"
            for sample in family.samples
        }
        assert depth == {"h1": 2.0, "h2": 0.0, "h3": 1.0}
    finally:
        app.close()
        db.dispose()
        if vhost:
            delete_vhost(vhost)
        else:
            purge_prefix(REDIS_URL, env["RESIZEFLOW_BROKER_PREFIX"])
