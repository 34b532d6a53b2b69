"""Claims and allocations as rows, in the step's transaction.

A node's ``*_used`` columns always equal the sum of the allocations on it: every
change here updates both together, so a failed step rolls both back at once.

Every transaction that touches a consumer's allocations holds that consumer's
instance row locked first (the steps lock it, and so does the service layer),
so two of them never work on the same allocation rows at once. What they can
share is a node row, and each locks a node once: a claim, which must see the
node's usage before it adds to it, locks it up front (several in id order);
a release locks it last, with the one ``UPDATE`` that gives the usage back.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    ScalarSelect,
    Select,
    bindparam,
    delete,
    exists,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Session, aliased

from resizeflow import errors
from resizeflow.db import api as dbapi
from resizeflow.db.models import Allocation, ComputeNode
from resizeflow.openstack.base import NodeRef, Resources

_USED = {"VCPU": "vcpus_used", "MEMORY_MB": "memory_mb_used", "DISK_GB": "local_gb_used"}


def _free(node: ComputeNode) -> dict[str, float]:
    return {
        "VCPU": node.vcpus * node.cpu_allocation_ratio - node.vcpus_used,
        "MEMORY_MB": node.memory_mb * node.ram_allocation_ratio - node.memory_mb_used,
        "DISK_GB": node.local_gb * node.disk_allocation_ratio - node.local_gb_used,
    }


# The statements of the steps' hot path are built once, with bound parameters:
# building one costs more CPU than running it.


def _node_id() -> ScalarSelect[int]:
    """The id of node (``b_host``, ``b_node``)."""
    return (
        select(ComputeNode.id)
        .where(ComputeNode.host == bindparam("b_host"), ComputeNode.node == bindparam("b_node"))
        .scalar_subquery()
    )


@functools.cache
def _holds_statement() -> Select[tuple[bool]]:
    held = exists().where(
        Allocation.consumer_uuid == bindparam("b_consumer"),
        Allocation.node_id == bindparam("b_node_id"),
    )
    return select(held)


@functools.cache
def _move_statement() -> Any:
    theirs = aliased(Allocation)
    return (
        update(Allocation)
        .where(
            Allocation.consumer_uuid == bindparam("b_source"),
            Allocation.node_id == _node_id(),
            ~exists().where(
                theirs.consumer_uuid == bindparam("b_target"),
                theirs.node_id == Allocation.node_id,
            ),
        )
        .values(consumer_uuid=bindparam("b_target"))
        .execution_options(synchronize_session=False)
    )


@functools.cache
def _release_statement() -> Any:
    return (
        delete(Allocation)
        .where(
            Allocation.consumer_uuid == bindparam("b_consumer"), Allocation.node_id == _node_id()
        )
        .returning(Allocation.resource_class, Allocation.used)
        .execution_options(synchronize_session=False)
    )


class SqlPlacement:
    def __init__(self, session: Session) -> None:
        self.session = session
        # Nodes locked in this transaction: a lock is held until it ends, so
        # a second claim on the same node need not ask for it again.
        self._locked: dict[tuple[str, str], ComputeNode] = {}

    def _node(self, ref: NodeRef) -> ComputeNode:
        row = self._locked.get((ref.host, ref.node))
        if row is None:
            row = dbapi.get_node(self.session, ref.host, ref.node, lock=True)
            self._locked[(row.host, row.node)] = row
        return row

    def _holds(self, consumer: str, node_id: int) -> bool:
        found = self.session.scalar(
            _holds_statement(), {"b_consumer": consumer, "b_node_id": node_id}
        )
        return bool(found)

    def holds(self, consumer: str, node: NodeRef) -> bool:
        """Whether ``consumer`` holds an allocation on ``node``."""
        return self._holds(consumer, self._node(node).id)

    def lock(self, *refs: NodeRef) -> None:
        """Lock several nodes at once, in id order.

        NOTE: a resize touches its source and its dest node; two resizes going
        opposite ways would deadlock if each locked its own source first.
        """
        keys = {(r.host, r.node) for r in refs} - self._locked.keys()
        if not keys:
            return
        rows = self.session.scalars(
            select(ComputeNode)
            .where(tuple_(ComputeNode.host, ComputeNode.node).in_(sorted(keys)))
            .order_by(ComputeNode.id)
            .with_for_update()
        ).all()
        self._locked.update({(n.host, n.node): n for n in rows})
        missing = keys - self._locked.keys()
        if missing:
            raise errors.ComputeHostNotFound(host=sorted(missing)[0][0])

    def can_fit(self, node: NodeRef, resources: Resources) -> bool:
        free = _free(dbapi.get_node(self.session, node.host, node.node))
        return all(free[rc] >= amount for rc, amount in resources.as_classes().items())

    def claim(self, consumer: str, node: NodeRef, resources: Resources) -> None:
        row = self._node(node)
        if self._holds(consumer, row.id):
            return  # already claimed: a redelivered step must not claim twice
        free = _free(row)
        wanted = resources.as_classes()
        short = [rc for rc, amount in wanted.items() if free[rc] < amount]
        if short:
            raise errors.ClaimFailed(node=node.node, reason=f"not enough {', '.join(short)}")
        self.session.execute(
            insert(Allocation),
            [
                {"consumer_uuid": consumer, "node_id": row.id, "resource_class": rc, "used": n}
                for rc, n in wanted.items()
            ],
        )
        for rc, amount in wanted.items():
            setattr(row, _USED[rc], getattr(row, _USED[rc]) + amount)

    def move(self, source_consumer: str, target_consumer: str, node: NodeRef) -> None:
        """Hand ``source_consumer``'s allocations on ``node`` to ``target_consumer``.

        The node's usage does not change, so its row is not locked. A source
        that holds nothing there (a redelivered step) is a no-op.
        """
        moved = self.session.execute(
            _move_statement(),
            {
                "b_source": source_consumer,
                "b_target": target_consumer,
                "b_host": node.host,
                "b_node": node.node,
            },
        )
        if moved.rowcount:  # type: ignore[attr-defined]
            return
        node_id = self._node(node).id  # an unknown node is an error, not "nothing held"
        if self._holds(source_consumer, node_id):
            raise errors.ClaimFailed(
                node=node.node, reason=f"{target_consumer} already holds an allocation"
            )

    def release(self, consumer: str, node: NodeRef) -> None:
        """Free what ``consumer`` holds on ``node``; releasing nothing is a no-op."""
        where = {"b_host": node.host, "b_node": node.node}
        freed = self.session.execute(_release_statement(), {"b_consumer": consumer, **where}).all()
        if not freed:
            return
        # NOTE: built per call, with literal values: "evaluate" applies it to a
        # node row this session has loaded (a claim's), keeping that row in
        # step with the database, and it can only do so with values it can see.
        give_back = {_USED[rc]: getattr(ComputeNode, _USED[rc]) - used for rc, used in freed}
        self.session.execute(
            update(ComputeNode)
            .where(ComputeNode.host == node.host, ComputeNode.node == node.node)
            .values(give_back)
            .execution_options(synchronize_session="evaluate")
        )

    def release_everywhere(self, consumer: str) -> None:
        # In id order, as lock() takes nodes.
        nodes = self.session.execute(
            select(ComputeNode.id, ComputeNode.host, ComputeNode.node)
            .join(Allocation, Allocation.node_id == ComputeNode.id)
            .where(Allocation.consumer_uuid == consumer)
            .distinct()
            .order_by(ComputeNode.id)
        ).all()
        for _id, host, node in nodes:
            self.release(consumer, NodeRef(host, node))
