"""A delete is accepted in any task_state, and ends the workflow in flight cleanly.

Driven over HTTP against ``resizeflow api`` and two real workers. Each case
catches a workflow in flight (a step held by a failpoint, or a host whose
worker is down), deletes the server, and checks that nothing is left: no
domain or instance directory on either host, no journal row still open, the
migration ``failed`` with its claim freed (the ``rf`` fixture then checks the
allocation invariant).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from resizeflow.db.models import Instance, Migration
from resizeflow.states import JournalStatus, MigrationStatus, TaskState
from tests.functional.test_api_stack import act, boot, client, wait_status
from tests.support.stack import Stack, wait_for

# Deletes in flight run on both databases and both brokers: acks and redelivery
# are where Redis and RabbitMQ differ.
pytestmark = pytest.mark.stacks("sqlite-redis", "postgresql-redis", "postgresql-rabbitmq")

HELD = 4.0  # seconds a failpoint holds a step inside its transaction


def hold(rf: Stack, step: str, uuid: str) -> None:
    rf.set_failpoints(
        {step: [{"mode": "delay", "seconds": HELD, "instance_uuid": uuid, "times": 1}]}
    )


def latest_migration(rf: Stack, uuid: str) -> Migration:
    with rf.db.snapshot() as s:
        mig = s.scalars(
            select(Migration).where(Migration.instance_uuid == uuid).order_by(Migration.id.desc())
        ).first()
        assert mig is not None
        return mig


def running(rf: Stack, mig_id: int, step: str) -> bool:
    return any(r.step == step and r.status == JournalStatus.RUNNING for r in rf.journal(mig_id))


def delete_and_check_gone(rf: Stack, http: httpx.Client, uuid: str, mig_id: int) -> None:
    resp = http.delete(f"/servers/{uuid}")
    assert resp.status_code == 204, resp.text
    check_gone(rf, http, uuid, mig_id)


def check_gone(rf: Stack, http: httpx.Client, uuid: str, mig_id: int) -> None:
    def gone() -> Instance | None:
        inst = rf.instance(uuid)
        return inst if inst.deleted else None

    wait_for(gone, 60, f"{uuid} to be deleted")
    assert http.get(f"/servers/{uuid}").status_code == 404
    try:
        wait_for(
            lambda: rf.migration(mig_id).status == MigrationStatus.FAILED,
            60,
            f"migration {mig_id} to end failed",
        )
    except AssertionError:
        steps = [(r.step, r.status, r.last_error) for r in rf.journal(mig_id)]
        raise AssertionError(f"migration is {rf.migration(mig_id).status}; steps {steps}") from None
    rows = rf.journal(mig_id)
    open_rows = [
        (r.step, r.status)
        for r in rows
        if r.status not in (JournalStatus.DONE, JournalStatus.FAILED, JournalStatus.ABORTED)
    ]
    assert not open_rows, open_rows
    for host in rf.hosts:
        assert uuid not in rf.domains(host), f"{uuid} still defined on {host}"
        for suffix in ("", "_resize"):
            assert not rf.instance_dir(host, uuid, suffix).exists(), (host, suffix)
    actions = http.get(f"/servers/{uuid}/os-instance-actions").json()["instanceActions"]
    assert actions[0]["action"] == "delete"


def stuck_after(rf: Stack, step: str, uuid: str, mig_id: int, host: str) -> None:
    """Stop ``host``'s worker while ``step`` runs: the rest of the flow waits in its queue.

    The warm shutdown lets the held step finish, so the workflow is caught between
    two steps, deterministically, as after a worker crash nobody restarted.
    """
    wait_for(lambda: running(rf, mig_id, step), 30, f"{step} to run")
    rf.stop_worker(host)

    def done() -> dict[str, str] | None:
        rows = {r.step: r.status for r in rf.journal(mig_id)}
        return rows if rows[step] == JournalStatus.DONE else None

    rows = wait_for(done, 30, f"{step} to finish")
    assert JournalStatus.PENDING in rows.values(), rows


def delete_while_down(
    rf: Stack, http: httpx.Client, uuid: str, host: str, *, mig_id: int | None = None
) -> None:
    """Delete while ``host`` is down; what waits for it is the delete, or (``mig_id``) the
    purge of that host, then start the host's worker again."""
    try:
        resp = http.delete(f"/servers/{uuid}")
        assert resp.status_code == 204, resp.text
        if mig_id is None:
            # Nothing runs on the stopped host: the server waits for it, deleting.
            assert rf.instance(uuid).task_state == TaskState.DELETING
        else:
            wait_for(lambda: rf.instance(uuid).deleted, 30, f"{uuid} to be deleted")
            # The stopped host still has to be purged before the migration ends.
            assert rf.migration(mig_id).status == MigrationStatus.ERROR
    finally:
        rf.start_worker(host)


def never_ran(rf: Stack, mig_id: int, *steps: str) -> None:
    rows = {r.step.rsplit(".", 1)[1]: r for r in rf.journal(mig_id)}
    for name in steps:
        assert rows[name].status == JournalStatus.ABORTED, (name, rows[name].status)
        assert rows[name].applied == 0 and rows[name].started_at is None


def test_delete_during_a_revert(rf: Stack, project: str) -> None:
    with client(rf, f"alice:{project}") as http, client(rf) as admin:
        uuid = boot(http)
        act(http, uuid, {"resize": {"flavorRef": "2"}}, 202)
        wait_status(http, uuid, "VERIFY_RESIZE")
        mig = latest_migration(rf, uuid)
        step = "resizeflow.revert.destroy_dest_domain"
        hold(rf, step, uuid)
        act(http, uuid, {"revertResize": None}, 202)
        stuck_after(rf, step, uuid, mig.id, mig.dest_compute)
        shown: dict[str, Any] = admin.get(f"/servers/{uuid}").json()["server"]
        assert shown["status"] == "REVERT_RESIZE"
        delete_while_down(rf, http, uuid, mig.dest_compute)
        check_gone(rf, http, uuid, mig.id)
        never_ran(rf, mig.id, "terminate_volume_connections", "drop_dest_claim", "finish_revert")


def test_delete_during_a_confirm(rf: Stack, project: str) -> None:
    with client(rf, f"alice:{project}") as http:
        uuid = boot(http)
        act(http, uuid, {"resize": {"flavorRef": "2"}}, 202)
        wait_status(http, uuid, "VERIFY_RESIZE")
        mig = latest_migration(rf, uuid)
        step = "resizeflow.confirm.confirm_migration"
        hold(rf, step, uuid)
        act(http, uuid, {"confirmResize": None}, 204)
        stuck_after(rf, step, uuid, mig.id, mig.source_compute)
        # The server runs on the dest, which deletes it; the stopped source
        # still has to be purged before the migration ends.
        delete_while_down(rf, http, uuid, mig.source_compute, mig_id=mig.id)
        check_gone(rf, http, uuid, mig.id)
        never_ran(rf, mig.id, "drop_source_claim", "finish_confirm")


def test_delete_of_a_stuck_resize(rf: Stack, project: str) -> None:
    with client(rf, f"alice:{project}") as http, client(rf) as admin:
        uuid = boot(http)
        step = "resizeflow.resize.prep_resize"
        hold(rf, step, uuid)
        act(http, uuid, {"resize": {"flavorRef": "2"}}, 202)
        mig = wait_for(lambda: latest_migration(rf, uuid), 10, "the migration")
        # The source's worker stops while the dest prepares: the resize then
        # waits in the source's queue.
        stuck_after(rf, step, uuid, mig.id, mig.source_compute)
        shown = admin.get(f"/servers/{uuid}").json()["server"]
        assert shown["status"] == "RESIZE"
        delete_while_down(rf, http, uuid, mig.source_compute)
        never_ran(rf, mig.id, "resize_instance", "finish_resize")
        check_gone(rf, http, uuid, mig.id)


def test_delete_when_a_revert_has_only_its_last_step_left(rf: Stack, project: str) -> None:
    # The migration is already `reverted` (drop_dest_claim) while finish_revert,
    # on the source, has still to bring the old domain back.
    with client(rf, f"alice:{project}") as http:
        uuid = boot(http)
        act(http, uuid, {"resize": {"flavorRef": "2"}}, 202)
        wait_status(http, uuid, "VERIFY_RESIZE")
        mig = latest_migration(rf, uuid)
        step = "resizeflow.revert.drop_dest_claim"
        hold(rf, step, uuid)
        act(http, uuid, {"revertResize": None}, 202)
        stuck_after(rf, step, uuid, mig.id, mig.source_compute)
        assert rf.migration(mig.id).status == MigrationStatus.REVERTED
        assert rf.instance_dir(mig.source_compute, uuid, "_resize").exists()
        delete_while_down(rf, http, uuid, mig.source_compute, mig_id=mig.id)
        check_gone(rf, http, uuid, mig.id)
        never_ran(rf, mig.id, "finish_revert")
