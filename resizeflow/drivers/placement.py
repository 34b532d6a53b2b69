"""Claims and allocations as rows, in the step's transaction.

A node's ``*_used`` columns always equal the sum of the allocations on it: every
change here updates both together, so a failed step rolls both back at once.
"""

from __future__ import annotations

from sqlalchemy import delete, select, tuple_
from sqlalchemy.orm import Session

from resizeflow import errors
from resizeflow.db import api as db
from resizeflow.db.models import Allocation, ComputeNode
from resizeflow.drivers.base import NodeRef, Resources

_USED = {"VCPU": "vcpus_used", "MEMORY_MB": "memory_mb_used", "DISK_GB": "local_gb_used"}


def _free(node: ComputeNode) -> dict[str, float]:
    return {
        "VCPU": node.vcpus * node.cpu_allocation_ratio - node.vcpus_used,
        "MEMORY_MB": node.memory_mb * node.ram_allocation_ratio - node.memory_mb_used,
        "DISK_GB": node.local_gb * node.disk_allocation_ratio - node.local_gb_used,
    }


class SqlPlacement:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _node(self, ref: NodeRef) -> ComputeNode:
        return db.get_node(self.session, ref.host, ref.node, lock=True)

    def _held(self, consumer: str, node: ComputeNode) -> list[Allocation]:
        return list(
            self.session.scalars(
                select(Allocation).where(
                    Allocation.consumer_uuid == consumer, Allocation.node_id == node.id
                )
            )
        )

    def lock(self, *refs: NodeRef) -> None:
        """Lock several nodes at once, in id order.

        NOTE: a resize touches its source and its dest node; two resizes going
        opposite ways would deadlock if each locked its own source first.
        """
        keys = {(r.host, r.node) for r in refs}
        rows = self.session.scalars(
            select(ComputeNode)
            .where(tuple_(ComputeNode.host, ComputeNode.node).in_(sorted(keys)))
            .order_by(ComputeNode.id)
            .with_for_update()
        ).all()
        missing = keys - {(n.host, n.node) for n in rows}
        if missing:
            raise errors.ComputeHostNotFound(host=sorted(missing)[0][0])

    def can_fit(self, node: NodeRef, resources: Resources) -> bool:
        free = _free(db.get_node(self.session, node.host, node.node))
        return all(free[rc] >= amount for rc, amount in resources.as_classes().items())

    def claim(self, consumer: str, node: NodeRef, resources: Resources) -> None:
        row = self._node(node)
        if self._held(consumer, row):
            return  # already claimed: a redelivered step must not claim twice
        free = _free(row)
        short = [rc for rc, amount in resources.as_classes().items() if free[rc] < amount]
        if short:
            raise errors.ClaimFailed(node=node.node, reason=f"not enough {', '.join(short)}")
        for rc, amount in resources.as_classes().items():
            self.session.add(
                Allocation(consumer_uuid=consumer, node_id=row.id, resource_class=rc, used=amount)
            )
            setattr(row, _USED[rc], getattr(row, _USED[rc]) + amount)

    def move(self, source_consumer: str, target_consumer: str, node: NodeRef) -> None:
        row = self._node(node)
        held = self._held(source_consumer, row)
        if held and self._held(target_consumer, row):
            raise errors.ClaimFailed(
                node=node.node, reason=f"{target_consumer} already holds an allocation"
            )
        for alloc in held:
            alloc.consumer_uuid = target_consumer

    def release(self, consumer: str, node: NodeRef) -> None:
        row = self._node(node)
        for alloc in self._held(consumer, row):
            setattr(
                row,
                _USED[alloc.resource_class],
                getattr(row, _USED[alloc.resource_class]) - alloc.used,
            )
        self.session.execute(
            delete(Allocation).where(
                Allocation.consumer_uuid == consumer, Allocation.node_id == row.id
            )
        )

    def release_everywhere(self, consumer: str) -> None:
        nodes = self.session.scalars(
            select(ComputeNode)
            .join(Allocation, Allocation.node_id == ComputeNode.id)
            .where(Allocation.consumer_uuid == consumer)
            .distinct()
            .order_by(ComputeNode.id)
        ).all()
        for node in nodes:
            self.release(consumer, NodeRef(node.host, node.node))
