"""Who may do what: the request context and Nova's default policy.

Defaults follow Nova: the owner's project or an admin may act on a server;
an admin alone may force a host.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from resizeflow import errors

ADMIN_ONLY = frozenset({"compute:servers:create:forced_host", "compute:resize:forced_host"})


def new_request_id() -> str:
    return f"req-{uuid.uuid4()}"


@dataclass(frozen=True)
class RequestContext:
    user_id: str
    project_id: str
    roles: frozenset[str] = frozenset({"member"})
    request_id: str = field(default_factory=new_request_id)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @classmethod
    def admin(cls) -> RequestContext:
        return cls(user_id="admin", project_id="admin", roles=frozenset({"admin", "member"}))


def authorize(ctx: RequestContext, action: str, target_project: str | None = None) -> None:
    """Raise PolicyNotAuthorized unless ``ctx`` may perform ``action`` on the target."""
    if ctx.is_admin:
        return
    if action in ADMIN_ONLY or (target_project is not None and target_project != ctx.project_id):
        raise errors.PolicyNotAuthorized(action=action)
