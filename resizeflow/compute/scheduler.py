"""A small scheduler: the node with the most free RAM that can hold the flavor.

Like Nova's ComputeFilter, it skips hosts whose compute service is down (a
host that has never reported is given the benefit of the doubt), a host the
caller asked for included.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.orm import Session

from resizeflow import errors
from resizeflow.db import api as dbapi
from resizeflow.db import services
from resizeflow.db.models import ComputeNode, Service
from resizeflow.openstack.base import NodeRef, Resources
from resizeflow.openstack.placement import SqlPlacement


def select_destination(
    session: Session,
    resources: Resources,
    *,
    requested_host: str | None = None,
    exclude: Collection[str] = (),
    service_down_time: float = 60.0,
) -> NodeRef:
    """The node to place ``resources`` on, or NoValidHost (worded as Nova's).

    A ``requested_host`` (Nova's requested destination) must exist, and is
    then put through the same checks as any other: up, and able to hold them.
    """
    placement = SqlPlacement(session)
    stmt = select(ComputeNode).order_by(ComputeNode.host)
    if requested_host is not None:
        dbapi.get_node(session, requested_host)  # ComputeHostNotFound
        stmt = stmt.where(ComputeNode.host == requested_host)
    nodes = session.scalars(stmt).all()
    down = {
        svc.host
        for svc in session.scalars(select(Service).where(Service.binary == services.COMPUTE))
        if not services.is_up(svc, service_down_time)
    }
    # Nova's two stages, each with its own reason: placement's allocation
    # candidates (the nodes that can hold the resources; none: no reason given),
    # then the scheduler's filters (the hosts to ignore, the compute services down).
    candidates = [n for n in nodes if placement.can_fit(NodeRef(n.host, n.node), resources)]
    if not candidates:
        raise errors.NoValidHost(reason="")
    fits = [n for n in candidates if n.host not in exclude and n.host not in down]
    if not fits:
        raise errors.NoValidHost(reason="There are not enough hosts available.")
    best = max(fits, key=lambda n: n.memory_mb * n.ram_allocation_ratio - n.memory_mb_used)
    return NodeRef(best.host, best.node)
