"""Flavors: the enabled ones, in Nova's order."""

from __future__ import annotations

from sqlalchemy import select

from resizeflow import errors
from resizeflow.compute.queries.base import Reader
from resizeflow.compute.queries.infos import FlavorInfo
from resizeflow.db.models import Flavor


class FlavorQueries(Reader):
    def flavors(self, *, include_private: bool = False) -> list[FlavorInfo]:
        stmt = select(Flavor).where(Flavor.disabled.is_(False))
        if not include_private:
            stmt = stmt.where(Flavor.is_public.is_(True))
        with self.db.snapshot() as s:
            rows = s.scalars(stmt).all()
            flavors = [_flavor(f) for f in rows]
        # Nova sorts by flavorid; numeric ids in numeric order.
        return sorted(flavors, key=lambda f: (not f.flavorid.isdigit(), _num(f.flavorid)))

    def flavor(self, flavorid: str) -> FlavorInfo:
        with self.db.snapshot() as s:
            f = s.scalars(select(Flavor).where(Flavor.flavorid == flavorid)).one_or_none()
            if f is None or f.disabled:
                raise errors.FlavorNotFound(flavor_id=flavorid)
            return _flavor(f)


def _flavor(f: Flavor) -> FlavorInfo:
    return FlavorInfo(
        id=f.id,
        flavorid=f.flavorid,
        name=f.name,
        vcpus=f.vcpus,
        memory_mb=f.memory_mb,
        root_gb=f.root_gb,
        ephemeral_gb=f.ephemeral_gb,
        swap=f.swap,
        is_public=f.is_public,
        disabled=f.disabled,
        description=f.description,
    )


def flavor_info(f: Flavor) -> FlavorInfo:
    return _flavor(f)


def _num(flavorid: str) -> int | str:
    return int(flavorid) if flavorid.isdigit() else flavorid
