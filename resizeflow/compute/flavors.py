"""Flavor management for admins: Nova's os-flavor-manage create and delete.

Servers embed a copy of their flavor, so deleting one never changes a running
server or a pending revert.
"""

from __future__ import annotations

import uuid as uuidlib

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from resizeflow import errors
from resizeflow.compute.policy import RequestContext, authorize
from resizeflow.compute.queries.flavors import flavor_info
from resizeflow.compute.queries.infos import FlavorInfo
from resizeflow.db.models import Flavor
from resizeflow.db.session import Database


class FlavorAdmin:
    def __init__(self, database: Database) -> None:
        self.db = database

    def create(
        self,
        caller: RequestContext,
        *,
        name: str,
        ram: int,
        vcpus: int,
        disk: int,
        flavorid: str | None = None,
        ephemeral: int = 0,
        swap: int = 0,
        is_public: bool = True,
        description: str | None = None,
    ) -> FlavorInfo:
        """Create a flavor; ``flavorid`` None or "auto" gets a generated uuid, as in Nova."""
        authorize(caller, "compute:flavors:create")
        name = name.strip()
        if not name:
            raise errors.InvalidFlavor(reason="name must not be blank")
        if flavorid in (None, "auto"):
            flavorid = str(uuidlib.uuid4())
        try:
            return self._insert(
                name, ram, vcpus, disk, flavorid, ephemeral, swap, is_public, description
            )
        except IntegrityError:
            # NOTE: a concurrent create won the race between the checks and the
            # insert; the unique constraints caught it.
            raise errors.FlavorExists(name=name) from None

    def _insert(
        self,
        name: str,
        ram: int,
        vcpus: int,
        disk: int,
        flavorid: str,
        ephemeral: int,
        swap: int,
        is_public: bool,
        description: str | None = None,
    ) -> FlavorInfo:
        with self.db.transaction() as s:
            if s.scalar(select(Flavor.id).where(Flavor.name == name)) is not None:
                raise errors.FlavorExists(name=name)
            if s.scalar(select(Flavor.id).where(Flavor.flavorid == flavorid)) is not None:
                raise errors.FlavorIdExists(flavor_id=flavorid)
            row = Flavor(
                flavorid=flavorid,
                name=name,
                vcpus=vcpus,
                memory_mb=ram,
                root_gb=disk,
                ephemeral_gb=ephemeral,
                swap=swap,
                is_public=is_public,
                description=description,
            )
            s.add(row)
            s.flush()
            return flavor_info(row)

    def delete(self, caller: RequestContext, flavorid: str) -> None:
        authorize(caller, "compute:flavors:delete")
        with self.db.transaction() as s:
            row = s.scalars(select(Flavor).where(Flavor.flavorid == flavorid)).one_or_none()
            if row is None:
                raise errors.FlavorNotFound(flavor_id=flavorid)
            s.delete(row)
