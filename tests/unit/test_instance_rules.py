"""The shared rules about an instance row: who can see it, and its system_metadata keys."""

from __future__ import annotations

import pytest

from resizeflow.compute.policy import RequestContext
from resizeflow.db.instances import (
    INTERNAL_KEYS,
    SystemMetadata,
    can_see,
    forget_resize,
)
from resizeflow.db.models import Instance
from resizeflow.states import VmState

pytestmark = pytest.mark.fast


def server(**sysmeta: str) -> Instance:
    return Instance(uuid="u", project_id="p1", system_metadata=dict(sysmeta))


def test_only_its_project_and_admins_see_a_server() -> None:
    assert can_see(RequestContext(user_id="u", project_id="p1"), "p1")
    assert not can_see(RequestContext(user_id="u", project_id="p2"), "p1")
    assert can_see(RequestContext.admin(), "p1")


def test_reads_are_typed_and_absent_keys_are_none() -> None:
    meta = SystemMetadata(server())
    assert (meta.image_ref, meta.old_vm_state, meta.locked_reason) == (None, None, None)
    meta = SystemMetadata(
        server(image_base_image_ref="img", old_vm_state="stopped", locked_reason="audit", k="v")
    )
    assert (meta.image_ref, meta.old_vm_state, meta.locked_reason) == (
        "img",
        VmState.STOPPED,
        "audit",
    )
    assert meta.user_metadata == {"k": "v"}


def test_writes_assign_a_new_dict_and_keep_the_users_keys() -> None:
    inst = server(k="v")
    before = inst.system_metadata
    SystemMetadata(inst).old_vm_state = VmState.ACTIVE
    assert inst.system_metadata is not before  # the JSON column sees a new value
    assert inst.system_metadata == {"k": "v", "old_vm_state": "active"}
    SystemMetadata(inst).locked_reason = "why"
    SystemMetadata(inst).locked_reason = None
    assert inst.system_metadata == {"k": "v", "old_vm_state": "active"}
    assert set(INTERNAL_KEYS).isdisjoint(SystemMetadata(inst).user_metadata)


def test_forget_resize_drops_the_stash_only() -> None:
    inst = server(k="v", old_vm_state="stopped")
    inst.old_flavor, inst.new_flavor = {"id": 1}, {"id": 2}
    forget_resize(inst)
    assert (inst.old_flavor, inst.new_flavor) == (None, None)
    assert inst.system_metadata == {"k": "v"}
