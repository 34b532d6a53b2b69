"""Counted quotas on cores, ram and instances, per project (Nova's counting model).

Usage is counted from the project's live instances and their current flavors, so
there are no reservations to leak when a workflow dies.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from resizeflow import errors
from resizeflow.conf import Settings
from resizeflow.db.models import Instance, QuotaLimit


class SqlQuota:
    def __init__(self, session: Session, defaults: dict[str, int]) -> None:
        self.session = session
        self.defaults = defaults

    @classmethod
    def with_defaults_of(cls, session: Session, conf: Settings) -> SqlQuota:
        """Quotas whose defaults (for projects without limits of their own) are the settings'."""
        defaults = {"cores": conf.quota_cores, "ram": conf.quota_ram}
        return cls(session, defaults | {"instances": conf.quota_instances})

    def limits(self, project_id: str) -> dict[str, int]:
        limits = dict(self.defaults)
        for row in self.session.scalars(
            select(QuotaLimit).where(QuotaLimit.project_id == project_id)
        ):
            limits[row.resource] = row.hard_limit
        return limits

    def usage(self, project_id: str) -> dict[str, int]:
        flavors = self.session.scalars(
            select(Instance.flavor).where(
                Instance.project_id == project_id, Instance.deleted.is_(False)
            )
        ).all()
        return {
            "cores": sum(int(f["vcpus"]) for f in flavors),
            "ram": sum(int(f["memory_mb"]) for f in flavors),
            "instances": len(flavors),
        }

    def check_deltas(self, project_id: str, *, cores: int, ram: int, instances: int = 0) -> None:
        deltas = {"cores": cores, "ram": ram, "instances": instances}
        wanted = {k: v for k, v in deltas.items() if v > 0}
        if not wanted:
            return
        limits, used = self.limits(project_id), self.usage(project_id)
        overs = [k for k, v in wanted.items() if limits[k] >= 0 and used[k] + v > limits[k]]
        if overs:
            raise errors.OverQuota(
                overs=", ".join(overs),
                req=", ".join(str(wanted[k]) for k in overs),
                used=", ".join(str(used[k]) for k in overs),
                allowed=", ".join(str(limits[k]) for k in overs),
            )
