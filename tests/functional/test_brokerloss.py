"""The broker-loss detector: it sees a broker that lost its data, and nothing else.

Each test breaks a broker of its own: a private redis-server on a unix socket
(never the shared one), or a RabbitMQ vhost that the test deletes and creates
again. The end-to-end check, workflows finishing soon after the broker came
back on default settings, is in ``tests/chaos/test_chaos.py``.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from resizeflow import brokerloss, metrics, recovery
from resizeflow.celery_app import make_app
from resizeflow.conf import Settings
from resizeflow.db.migrate import upgrade
from resizeflow.db.models import BrokerEpoch, utcnow
from resizeflow.db.session import Database
from resizeflow.devstack.brokers import create_vhost, delete_vhost, start_redis
from resizeflow.devstack.supervisor import Supervisor
from resizeflow.states import MigrationStatus, VmState
from tests.functional.test_flows import resize_to_verify
from tests.functional.test_recovery import plan_without_sending
from tests.support.stack import RABBITMQ_URL, REDIS_URL, Stack, require


@dataclass
class Broker:
    """A broker of the test's own, with what it takes to break it."""

    settings: Settings
    database: Database
    stop: Callable[[], None]  # down: it does not answer
    start_empty: Callable[[], None]  # back, without its data
    vhost: str = ""

    def checker(self) -> brokerloss.Checker:
        """A checker as a (re)started beat process has it: nothing in memory."""
        return brokerloss.Checker(self.settings, self.database, make_app(self.settings))

    def epochs(self) -> list[tuple[int, bool]]:
        with self.database.snapshot() as s:
            return [
                (e.seq, e.after_loss)
                for e in s.scalars(select(BrokerEpoch).order_by(BrokerEpoch.seq))
            ]


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    database = Database(f"sqlite:///{tmp_path / 'rf.sqlite'}")
    upgrade(database)
    sup = Supervisor(state_dir=tmp_path / "state", env=dict(os.environ))
    vhost = ""
    try:
        if request.param == "redis":
            require(REDIS_URL, 6379, "Redis")  # for its redis-server binary's sake
            url = start_redis(sup)

            def stop() -> None:
                sup.kill("redis")

            def start_empty() -> None:
                start_redis(sup)  # no persistence: it starts empty
        else:
            require(RABBITMQ_URL, 5672, "RabbitMQ")
            vhost = f"rf-loss-{uuid.uuid4().hex[:10]}"
            url = create_vhost(RABBITMQ_URL, vhost)

            def stop() -> None:
                delete_vhost(vhost)

            def start_empty() -> None:
                create_vhost(RABBITMQ_URL, vhost)

        settings = Settings(state_dir=tmp_path, broker_url=url, database_url=database.url)
        yield Broker(settings, database, stop, start_empty, vhost)
    finally:
        sup.stop_all()
        if vhost:
            delete_vhost(vhost)
        database.dispose()


def test_a_loss_is_seen_once_and_a_down_broker_is_no_loss(broker: Broker) -> None:
    beat = broker.checker()
    first = beat.check()
    assert first is not None and not first.after_loss
    for _ in range(5):
        assert beat.check() is None
    # A restarted beat finds the marker of the epoch the database records.
    assert broker.checker().check() is None
    assert broker.epochs() == [(1, False)]

    broker.stop()
    with pytest.raises(brokerloss.BrokerUnreachable):
        beat.check()
    assert broker.epochs() == [(1, False)]

    broker.start_empty()
    other = broker.checker()
    assert other.check() is not None  # this one saw the loss first
    assert beat.check() is None  # and the other checker sees the new marker
    assert broker.checker().check() is None
    assert broker.epochs() == [(1, False), (2, True)]
    text = metrics.render(broker.database).decode()
    assert "resizeflow_broker_losses_total 1.0" in text
    assert "resizeflow_broker_loss_redrives_total 0.0" in text


def test_a_loss_while_no_beat_ran_is_seen_at_start(broker: Broker) -> None:
    assert broker.checker().check() is not None
    broker.stop()
    broker.start_empty()
    epoch = broker.checker().check()
    assert epoch is not None and epoch.after_loss and epoch.seq == 2


def test_lost_messages_are_re_driven_at_once(rf: Stack, project: str) -> None:
    """Only workflows whose next message was sent before the loss was seen go again."""
    kept, undone = rf.boot(project), rf.boot(project)
    k_mig, u_mig = resize_to_verify(rf, project, kept), resize_to_verify(rf, project, undone)
    plan_without_sending(rf, kept, k_mig, "confirm")
    seen_at = utcnow()
    plan_without_sending(rf, undone, u_mig, "revert")
    # Without the loss, both wait for the reconcile deadline.
    assert recovery.reconcile(rf.settings, rf.db, rf.app) == []
    # Sent after the loss was seen, the revert's message reached the new broker.
    [item] = recovery.reconcile(rf.settings, rf.db, rf.app, lost_before=seen_at)
    assert (item.migration_id, item.flow, item.reason) == (
        k_mig,
        "confirm",
        "the broker lost its data",
    )
    rf.wait_migration(k_mig, MigrationStatus.CONFIRMED)
    rf.wait_instance(kept, VmState.ACTIVE)
    [item] = recovery.reconcile(rf.settings, rf.db, rf.app, lost_before=utcnow())
    assert (item.migration_id, item.reason) == (u_mig, "the broker lost its data")
    rf.wait_migration(u_mig, MigrationStatus.REVERTED)
    rf.wait_instance(undone, VmState.ACTIVE)


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
def test_a_broker_that_refuses_the_marker_causes_no_re_drive(broker: Broker) -> None:
    """A marker that was never seen in the broker cannot be lost."""
    # The user may use every queue but the marker's (RabbitMQ's regexes are PCRE).
    subprocess.run(
        [
            "rabbitmqctl",
            "-q",
            "set_permissions",
            "-p",
            broker.vhost,
            "guest",
            r"^(?!resizeflow\.broker-epoch).*",
            ".*",
            ".*",
        ],
        check=True,
        capture_output=True,
    )
    beat = broker.checker()
    for _ in range(3):
        with pytest.raises(Exception, match="ACCESS_REFUSED"):
            beat.check()
    assert broker.epochs() == [(1, False)]
    text = metrics.render(broker.database).decode()
    assert "resizeflow_broker_losses_total 0.0" in text
    assert "resizeflow_broker_loss_redrives_total 0.0" in text
