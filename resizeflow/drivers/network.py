"""Ports and their per-host bindings, as rows in the step's transaction."""

from __future__ import annotations

import functools
import random
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session

from resizeflow.db.models import Port, PortBinding


def _mac() -> str:
    # Locally administered unicast prefix, as Neutron's default base_mac.
    return "fa:16:3e:" + ":".join(f"{random.randint(0, 255):02x}" for _ in range(3))


@functools.cache
def _teardown_statement() -> Any:
    # Built once: both flows' first step runs it.
    ports = select(Port.id).where(Port.instance_uuid == bindparam("b_instance"))
    return (
        delete(PortBinding)
        .where(PortBinding.host == bindparam("b_host"), PortBinding.port_id.in_(ports))
        .execution_options(synchronize_session=False)
    )


class SqlNetwork:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _ports(self, instance_uuid: str) -> list[str]:
        return list(
            self.session.scalars(select(Port.id).where(Port.instance_uuid == instance_uuid))
        )

    def allocate_for_instance(self, instance_uuid: str, networks: Sequence[str]) -> None:
        for net in networks:
            self.session.add(
                Port(
                    id=str(uuid.uuid4()),
                    instance_uuid=instance_uuid,
                    network=net,
                    mac_address=_mac(),
                )
            )

    def setup_networks_on_host(self, instance_uuid: str, host: str) -> None:
        ports = self._ports(instance_uuid)
        if not ports:
            return
        bound = set(
            self.session.scalars(
                select(PortBinding.port_id).where(
                    PortBinding.port_id.in_(ports), PortBinding.host == host
                )
            )
        )
        for port_id in ports:
            if port_id not in bound:
                self.session.add(PortBinding(port_id=port_id, host=host, status="ACTIVE"))

    def teardown_networks_on_host(self, instance_uuid: str, host: str) -> None:
        self.session.execute(_teardown_statement(), {"b_host": host, "b_instance": instance_uuid})

    def deallocate_for_instance(self, instance_uuid: str) -> None:
        ports = self._ports(instance_uuid)
        if ports:
            self.session.execute(delete(PortBinding).where(PortBinding.port_id.in_(ports)))
            self.session.execute(delete(Port).where(Port.id.in_(ports)))
