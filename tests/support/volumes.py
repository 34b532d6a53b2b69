"""A stack's volumes as the tests see them: through the storage host, the records and NBD.

What a test asks of a server's volume: which hosts the storage host lets
reach it (its exports, not the records), whether an export answers a client
(``qemu-img info`` over NBD), what the records say, and what a host wrote.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import select

from resizeflow.db.models import Instance, StepJournal, Volume, VolumeAttachment
from resizeflow.db.session import Database
from resizeflow.openstack.cinder import VolumeService
from resizeflow.states import JournalStatus, VmState
from resizeflow.storage.base import ConnectionInfo
from resizeflow.storage.client import RemoteStorage
from tests.support.stack import Stack, wait_for

TOOLS = ("qemu-storage-daemon", "qemu-io", "qemu-img")


def require_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{', '.join(missing)} missing, and CI needs them (make system-deps)")
        pytest.skip(f"{', '.join(missing)} missing (Debian qemu-system-common, qemu-utils)")


def volumes_on(db: Database, app: Celery, storage_host: str) -> VolumeService:
    """The block-storage service on ``storage_host``, reached over ``app``'s broker."""
    return VolumeService(db, RemoteStorage(app, storage_host, timeout=60), storage_host)


def service(rf: Stack) -> VolumeService:
    """The block-storage service, on the stack's storage host."""
    return volumes_on(rf.db, rf.app, rf.settings.storage_host)


def exported_to(rf: Stack, volume_id: str) -> list[str]:
    """The hosts the storage host has an export of the volume for, now."""
    return service(rf).connections(volume_id)


def reachable(info: dict[str, Any]) -> bool:
    """Whether an NBD client gets through to the export ``info`` names."""
    url = ConnectionInfo.from_dict(info).url
    done = subprocess.run(["qemu-img", "info", url], capture_output=True, timeout=60)
    return done.returncode == 0


def write(info: dict[str, Any], offset: int, data: bytes) -> None:
    """Write ``data`` (one repeated byte) at ``offset`` through the export, as a guest would."""
    assert len(set(data)) == 1, "qemu-io writes one repeated byte"
    url = ConnectionInfo.from_dict(info).url
    cmd = f"write -P {data[0]} {offset} {len(data)}"
    done = subprocess.run(
        ["qemu-io", "-f", "raw", url, "-c", cmd], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "wrote" in done.stdout, done.stdout + done.stderr


def holds(info: dict[str, Any], offset: int, data: bytes) -> bool:
    """Whether the volume holds ``data`` (one repeated byte) at ``offset``, read over NBD."""
    url = ConnectionInfo.from_dict(info).url
    cmd = f"read -P {data[0]} {offset} {len(data)}"
    done = subprocess.run(
        ["qemu-io", "-f", "raw", url, "-c", cmd], capture_output=True, text=True, timeout=60
    )
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout


def attachment(rf: Stack, volume_id: str) -> VolumeAttachment | None:
    with rf.db.snapshot() as s:
        return s.scalar(select(VolumeAttachment).where(VolumeAttachment.volume_id == volume_id))


def status(rf: Stack, volume_id: str) -> tuple[str, str] | None:
    with rf.db.snapshot() as s:
        row = s.get(Volume, volume_id)
        return None if row is None else (row.status, row.attach_status)


def wait_status(rf: Stack, volume_id: str, want: str, timeout: float = 90) -> None:
    wait_for(
        lambda: (status(rf, volume_id) or ("gone",))[0] == want or None,
        timeout,
        f"volume {volume_id} to be {want} (it is {status(rf, volume_id)})",
    )


def connection(rf: Stack, volume_id: str, host: str) -> dict[str, Any]:
    """The connection_info the records hold for the volume, which must be ``host``'s."""
    att = attachment(rf, volume_id)
    assert att is not None and att.connected_host == host, att and (
        att.connected_host,
        att.attach_status,
    )
    assert att.connection_info is not None
    return att.connection_info


def connection_violations(db: Database, app: Celery, storage_host: str) -> list[str]:
    """Each volume is reachable from the host its server runs on and from no other.

    For every volume: the storage host's exports (not the records) name at most
    one host; an attached volume's is its server's host, its attachment says
    ``attached`` with that host's connection and the volume is ``in-use``; a
    volume no server has is ``available`` and exported to no host. A server in
    ERROR is left out of the first rule (its host is what an operator repairs).
    """
    storage = volumes_on(db, app, storage_host)
    problems = []
    with db.snapshot() as s:
        volumes = list(s.scalars(select(Volume)))
        attachments = {a.volume_id: a for a in s.scalars(select(VolumeAttachment))}
        instances = {i.uuid: i for i in s.scalars(select(Instance))}
    for vol in volumes:
        hosts = storage.connections(vol.id)
        att = attachments.get(vol.id)
        if len(hosts) > 1:
            problems.append(f"volume {vol.id} is exported to {hosts}")
        if att is None:
            if hosts or (vol.status, vol.attach_status) != ("available", "detached"):
                problems.append(f"volume {vol.id} with no server is {vol.status}, on {hosts}")
            continue
        inst = instances[att.instance_uuid]
        if inst.deleted:
            problems.append(f"volume {vol.id} is still attached to deleted {inst.uuid}")
        elif inst.vm_state != VmState.ERROR and (
            hosts != [inst.host]
            or att.connected_host != inst.host
            or att.attach_status != "attached"
            or (vol.status, vol.attach_status) != ("in-use", "attached")
        ):
            problems.append(
                f"volume {vol.id} of {inst.uuid} on {inst.host}: exported to {hosts}, "
                f"recorded on {att.connected_host} ({att.attach_status}), {vol.status}"
            )
    return problems


def wait_volume_ops(rf: Stack, uuid: str) -> None:
    """Until the server's attach and detach operations have ended."""

    def ended() -> bool:
        with rf.db.snapshot() as s:
            open_row = s.scalar(
                select(StepJournal.id).where(
                    StepJournal.instance_uuid == uuid,
                    StepJournal.flow.in_(("attach_volume", "detach_volume")),
                    StepJournal.status.not_in(
                        (JournalStatus.DONE, JournalStatus.ABORTED, JournalStatus.FAILED)
                    ),
                )
            )
        return open_row is None

    wait_for(ended, 90, f"the volume operations of {uuid} to end")
