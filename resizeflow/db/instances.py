"""The rules about an instance row that every layer applies, written once.

- **Who can see a server.** Another project's server does not exist, as far
  as its caller can tell: it is InstanceNotFound (404), never a refusal,
  as in Nova. Only an admin sees every project's. The service layer's
  actions, the read side's queries and the instance actions all ask
  :func:`visible_instance`.
- **What system_metadata holds.** Nova keeps some of a server's own facts
  there, beside the user's metadata: the image it was booted from, the
  vm_state a resize started from, the reason it was locked. Every read and
  write of those keys goes through :class:`SystemMetadata`, so their names
  are written here only.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any, Protocol

from sqlalchemy.orm import Session

from resizeflow import errors
from resizeflow.db import api as dbapi
from resizeflow.db.models import Instance
from resizeflow.states import VmState

# Nova's key for the image a server was booted from.
IMAGE_REF = "image_base_image_ref"
# Where a resize stashes the vm_state it started from, as Nova does: a revert
# goes back to it, a confirm of a stopped server too.
OLD_VM_STATE = "old_vm_state"
# Nova keeps a lock's reason in system_metadata too (2.73).
LOCKED_REASON = "locked_reason"
# The keys that are the server's own facts; the rest is the user's metadata.
INTERNAL_KEYS = frozenset({IMAGE_REF, OLD_VM_STATE, LOCKED_REASON})


# --- who can see a server ----------------------------------------------------------
class Caller(Protocol):
    """Who asks: what visibility needs of a request context."""

    @property
    def is_admin(self) -> bool: ...

    @property
    def project_id(self) -> str: ...


def can_see(caller: Caller, project_id: str) -> bool:
    """Whether ``caller`` may know that a server of ``project_id`` exists."""
    return caller.is_admin or project_id == caller.project_id


def visible_instance(
    session: Session, caller: Caller, uuid: str, *, deleted: bool = False
) -> Instance:
    """Server ``uuid`` as ``caller`` may see it, else InstanceNotFound.

    ``deleted``: a deleted server is found too, as Nova reads a deleted
    server's actions (``read_deleted='yes'``).
    """
    try:
        uuidlib.UUID(uuid)
    except (ValueError, AttributeError, TypeError):
        raise errors.InstanceNotFound(instance_id=uuid) from None
    if deleted:
        found = session.get(Instance, uuid)
        if found is None:
            raise errors.InstanceNotFound(instance_id=uuid)
        inst = found
    else:
        inst = dbapi.get_instance(session, uuid)
    if not can_see(caller, inst.project_id):
        raise errors.InstanceNotFound(instance_id=uuid)
    return inst


# --- what system_metadata holds ------------------------------------------------------
class SystemMetadata:
    """Typed access to an instance's system_metadata.

    NOTE: every write assigns a new dict to the row: the JSON column sees a
    new value, never a change made in place.
    """

    def __init__(self, inst: Instance) -> None:
        self._inst = inst

    def _get(self, key: str) -> Any:
        return (self._inst.system_metadata or {}).get(key)

    def _set(self, key: str, value: str | None) -> None:
        data = dict(self._inst.system_metadata or {})
        if value is None:
            if key not in data:
                return
            del data[key]
        else:
            data[key] = value
        self._inst.system_metadata = data

    @property
    def image_ref(self) -> str | None:
        """The image the server was booted from; None for a blank root disk."""
        ref = self._get(IMAGE_REF)
        return str(ref) if ref else None

    @image_ref.setter
    def image_ref(self, ref: str | None) -> None:
        self._set(IMAGE_REF, ref)

    @property
    def old_vm_state(self) -> VmState | None:
        """The vm_state a resize started from, while the resize is not over."""
        state = self._get(OLD_VM_STATE)
        return VmState(state) if state else None

    @old_vm_state.setter
    def old_vm_state(self, state: VmState | None) -> None:
        self._set(OLD_VM_STATE, state.value if state is not None else None)

    @property
    def locked_reason(self) -> str | None:
        reason = self._get(LOCKED_REASON)
        return None if reason is None else str(reason)

    @locked_reason.setter
    def locked_reason(self, reason: str | None) -> None:
        self._set(LOCKED_REASON, reason)

    @property
    def user_metadata(self) -> dict[str, str]:
        """The user's own metadata: every key but the server's facts."""
        return {
            k: str(v)
            for k, v in (self._inst.system_metadata or {}).items()
            if k not in INTERNAL_KEYS
        }


def forget_resize(inst: Instance) -> None:
    """Forget what a resize stashed on the instance: both flavors, and the
    vm_state it started from."""
    inst.old_flavor = inst.new_flavor = None
    SystemMetadata(inst).old_vm_state = None
