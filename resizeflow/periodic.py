"""``resizeflow beat``: the periodic tasks, scheduled and run in one process.

- **Auto-confirm** (Nova's ``_poll_unconfirmed_resizes``): once
  ``RESIZEFLOW_RESIZE_CONFIRM_WINDOW`` seconds have passed since a resize
  finished, confirm it as an admin would.
- **Reconciler** (:mod:`resizeflow.recovery`): re-drive workflows whose next
  step never started or whose worker died.
- **Broker-loss check** (:mod:`resizeflow.brokerloss`): a thread of this
  process, not a scheduled task, since it must work while the broker's
  queues are what has been lost. It re-drives at once what a broker that lost
  its data held.
- **Incomplete migrations** (Nova's ``_cleanup_incomplete_migrations``): a
  migration in ``error`` whose server has been deleted may still have files and
  a claim on its hosts; purge them and mark the migration ``failed``.

Celery beat sends each tick to the ``resizeflow.periodic`` queue and the same
process's embedded worker runs it, so one beat process is all a cloud needs.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from celery.bootsteps import RUN  # type: ignore[attr-defined]  # missing from the stubs
from sqlalchemy import select

from resizeflow import brokerloss, errors, recovery, routing
from resizeflow.celery_app import make_app
from resizeflow.compute.api import ComputeAPI
from resizeflow.compute.policy import RequestContext
from resizeflow.conf import Settings
from resizeflow.db import services
from resizeflow.db.models import Instance, Migration, utcnow
from resizeflow.db.session import Database
from resizeflow.restart import Restart
from resizeflow.states import MigrationStatus, TaskState, VmState

log = logging.getLogger(__name__)

AUTO_CONFIRM = "resizeflow.periodic.confirm_unconfirmed_resizes"
CLEANUP = "resizeflow.periodic.cleanup_incomplete_migrations"
RECONCILE = "resizeflow.periodic.reconcile"


@dataclass
class PollResult:
    confirmed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    errored: list[int] = field(default_factory=list)


def _set_migration_to_error(database: Database, mig_id: int, reason: str) -> None:
    with database.transaction() as s:
        mig = s.get(Migration, mig_id, with_for_update=True)
        if mig is not None and mig.status == MigrationStatus.FINISHED:
            mig.status = MigrationStatus.ERROR
            log.warning("migration %s set to error: %s", mig_id, reason)


def confirm_unconfirmed_resizes(
    api: ComputeAPI, window: int, now: dt.datetime | None = None
) -> PollResult:
    """Confirm every ``finished`` migration older than ``window`` seconds, by Nova's rules."""
    result = PollResult()
    if window <= 0:
        return result
    cutoff = (now or utcnow()) - dt.timedelta(seconds=window)
    with api.db.snapshot() as s:
        rows = s.execute(
            select(Migration.id, Migration.instance_uuid, Instance)
            .outerjoin(Instance, Instance.uuid == Migration.instance_uuid)
            .where(Migration.status == MigrationStatus.FINISHED, Migration.updated_at <= cutoff)
            .order_by(Migration.id)
        ).all()
    for mig_id, uuid, inst in rows:
        if inst is None or inst.deleted:
            _set_migration_to_error(api.db, mig_id, "Instance being deleted or no longer exists")
            result.errored.append(mig_id)
            continue
        # NOTE: a delete in progress confirms the resize itself, and during
        # RESIZE_FINISH the migration is saved before the instance: skip both.
        if inst.task_state in (TaskState.DELETING, TaskState.RESIZE_FINISH):
            result.skipped.append(mig_id)
            continue
        if inst.vm_state != VmState.RESIZED or inst.task_state is not None:
            task = inst.task_state.value if inst.task_state else None
            reason = f"In states {inst.vm_state.value}/{task}, not RESIZED/None"
            _set_migration_to_error(api.db, mig_id, reason)
            result.errored.append(mig_id)
            continue
        try:
            api.confirm_resize(RequestContext.admin(), uuid)
        except errors.ResizeflowError as exc:
            # A user's confirm or revert won the race, or the host is down: try
            # again next time if the migration is still waiting.
            log.info("auto-confirm of migration %s skipped: %s", mig_id, exc.message)
            result.skipped.append(mig_id)
            continue
        result.confirmed.append(mig_id)
    return result


def cleanup_incomplete_migrations(settings: Settings, database: Database, app: Celery) -> list[int]:
    """Send the purge workflow for each errored migration whose server is gone."""
    launched = []
    with database.snapshot() as s:
        rows = s.execute(
            select(
                Migration.id,
                Migration.instance_uuid,
                Migration.source_compute,
                Migration.dest_compute,
            )
            .join(Instance, Instance.uuid == Migration.instance_uuid)
            .where(Migration.status == MigrationStatus.ERROR, Instance.deleted.is_(True))
        ).all()
        # A migration that scheduling failed to place has no dest.
        hosts = {row.id: [h for h in (row.source_compute, row.dest_compute) if h] for row in rows}
        down = {
            host
            for on in hosts.values()
            for host in on
            if (svc := services.get(s, host)) is None
            or not services.is_up(svc, settings.service_down_time)
        }
    for mig_id, uuid, *_ in rows:
        # A chain for a down host would only wait in its queue; the next tick retries.
        if any(host in down for host in hosts[mig_id]):
            continue
        routing.launch_cleanup(app, mig_id, uuid, hosts[mig_id])
        launched.append(mig_id)
    return launched


def make_beat_app(settings: Settings) -> Celery:
    """The beat process's app: the schedule, and the two periodic tasks it runs itself."""
    app = make_app(settings)
    database = Database(settings.db_url)
    api = ComputeAPI(settings, database, app)
    interval = settings.periodic_interval

    @app.task(name=AUTO_CONFIRM, ignore_result=True)
    def auto_confirm() -> dict[str, Any]:
        r = confirm_unconfirmed_resizes(api, settings.resize_confirm_window)
        return {"confirmed": r.confirmed, "skipped": r.skipped, "errored": r.errored}

    @app.task(name=CLEANUP, ignore_result=True)
    def cleanup() -> list[int]:
        return cleanup_incomplete_migrations(settings, database, app)

    @app.task(name=RECONCILE, ignore_result=True)
    def reconcile() -> list[str]:
        return [str(r.subject) for r in recovery.reconcile(settings, database, app)]

    queue = {"queue": routing.PERIODIC_QUEUE, "expires": interval}
    # The reconciler looks often enough to act within about one deadline.
    reconcile_every = min(interval, settings.reconcile_deadline / 2)
    app.conf.beat_schedule = {
        "auto-confirm": {"task": AUTO_CONFIRM, "schedule": interval, "options": queue},
        "cleanup-incomplete-migrations": {
            "task": CLEANUP,
            "schedule": interval,
            "options": queue,
        },
        "reconcile": {
            "task": RECONCILE,
            "schedule": reconcile_every,
            "options": {"queue": routing.PERIODIC_QUEUE, "expires": reconcile_every},
        },
    }
    return app


class BeatWatch(threading.Thread):
    """Restarts the process when its embedded scheduler has died.

    NOTE: Celery runs the embedded beat as a child process that exits on a
    broker error it cannot retry (a vhost that is gone for a moment, say),
    while the worker around it runs on. Nothing would schedule the reconciler
    again, so the whole process stops for its supervisor to start afresh.
    """

    def __init__(self, worker: Any, restart: Restart, every: float = 1.0) -> None:
        super().__init__(name="resizeflow-beat-watch", daemon=True)
        self.worker, self.restart, self.every = worker, restart, every
        self.stopping = threading.Event()

    def beat_died(self) -> bool:
        beat = getattr(self.worker, "beat", None)
        running = self.worker.blueprint is not None and self.worker.blueprint.state == RUN
        return beat is not None and running and beat.ident is not None and not beat.is_alive()

    def run(self) -> None:
        while not self.stopping.wait(self.every):
            if self.beat_died():
                self.restart.request("the embedded beat scheduler died", grace=30.0)
                return


def run(settings: Settings, *, loglevel: str = "INFO") -> None:
    app = make_beat_app(settings)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    worker = app.Worker(
        hostname=f"beat@{socket.gethostname()}",
        queues=[routing.PERIODIC_QUEUE],
        pool="solo",
        concurrency=1,
        beat=True,
        schedule_filename=str(settings.state_dir / "celerybeat-schedule"),
        loglevel=loglevel,
    )
    restart = Restart()
    watch = BeatWatch(worker, restart)
    watch.start()
    broker_watch = None
    if settings.broker_check_interval > 0:
        broker_watch = brokerloss.BrokerWatch(settings, Database(settings.db_url), app)
        broker_watch.start()
    try:
        worker.start()
    finally:
        watch.stopping.set()
        if broker_watch is not None:
            broker_watch.stopping.set()
    raise SystemExit(restart.exit_code(worker.exitcode))
