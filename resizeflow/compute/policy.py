"""Who may do what: the request context and Nova's default policy.

The request context says who asks; the API, the service layer and the CLI
call it ``caller`` (``ctx`` is a step's context, in :mod:`resizeflow.steps`).

Defaults follow Nova: the owner's project or an admin may act on a server; an
admin alone may force a host or manage flavors, migrations, hypervisors and
services. A policy file (JSON, Nova's rule names and check syntax) overrides
single rules; :func:`configure` installs it for the process, as oslo.policy's
enforcer does.

Check syntax: ``@`` (anyone), ``!`` (no one), ``role:NAME``,
``rule:NAME``, ``project_id:%(project_id)s``, joined with ``and`` / ``or``
(``and`` binds tighter) and negated with ``not``.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from resizeflow import errors

ADMIN_API = "rule:admin_api"
ADMIN_OR_OWNER = "rule:admin_or_owner"
# Nova's 2023+ defaults (and Glance's, Neutron's and Cinder's): project-scoped
# roles, the admin role for the whole cloud.
ADMIN = "rule:context_is_admin"
PROJECT_READER_OR_ADMIN = "rule:project_reader_or_admin"
PROJECT_MEMBER_OR_ADMIN = "rule:project_member_or_admin"
PROJECT_MANAGER_OR_ADMIN = "rule:project_manager_or_admin"

# Keystone's implied roles, as its bootstrap creates them: a token with the
# first carries the second too. Keystone expands them in the tokens it issues;
# resizeflow's own authenticators (noauth, tokens) get the same expansion here.
IMPLIED_ROLES: dict[str, tuple[str, ...]] = {
    "admin": ("manager",),
    "manager": ("member",),
    "member": ("reader",),
}


def with_implied(roles: frozenset[str] | set[str]) -> frozenset[str]:
    """``roles`` and every role they imply, transitively."""
    return _closure(frozenset(roles))


# Every rule atom of every policy check asks this; callers hold a handful of role sets.
@functools.lru_cache(maxsize=256)
def _closure(roles: frozenset[str]) -> frozenset[str]:
    found, todo = set(roles), list(roles)
    while todo:
        for implied in IMPLIED_ROLES.get(todo.pop(), ()):
            if implied not in found:
                found.add(implied)
                todo.append(implied)
    return frozenset(found)


DEFAULT_RULES: dict[str, str] = {
    "context_is_admin": "role:admin",
    "admin_api": "rule:context_is_admin",
    "admin_or_owner": "rule:context_is_admin or project_id:%(project_id)s",
    "project_reader_api": "role:reader and project_id:%(project_id)s",
    "project_member_api": "role:member and project_id:%(project_id)s",
    "project_manager_api": "role:manager and project_id:%(project_id)s",
    "project_reader_or_admin": "rule:project_reader_api or rule:context_is_admin",
    "project_member_or_admin": "rule:project_member_api or rule:context_is_admin",
    "project_manager_or_admin": "rule:project_manager_api or rule:context_is_admin",
    # Server lifecycle: the project's readers see, its members act; an admin does both.
    "compute:servers:index": PROJECT_READER_OR_ADMIN,
    "compute:servers:show": PROJECT_READER_OR_ADMIN,
    "compute:servers:create": PROJECT_MEMBER_OR_ADMIN,
    "compute:delete": PROJECT_MEMBER_OR_ADMIN,
    "compute:resize": PROJECT_MEMBER_OR_ADMIN,
    "compute:confirm_resize": PROJECT_MEMBER_OR_ADMIN,
    "compute:revert_resize": PROJECT_MEMBER_OR_ADMIN,
    "compute:stop": PROJECT_MEMBER_OR_ADMIN,
    "compute:start": PROJECT_MEMBER_OR_ADMIN,
    "compute:lock": PROJECT_MEMBER_OR_ADMIN,
    "compute:unlock": PROJECT_MEMBER_OR_ADMIN,
    "compute:reboot": PROJECT_MEMBER_OR_ADMIN,
    # Nova: the console log is an action on the server, not a read.
    "compute:console_output": PROJECT_MEMBER_OR_ADMIN,
    # Cold migration: an admin, or the project's manager (Nova's 2025 defaults);
    # naming the host stays admin's.
    "compute:migrate": PROJECT_MANAGER_OR_ADMIN,
    "compute:instance_actions:list": PROJECT_READER_OR_ADMIN,
    "compute:instance_actions:show": PROJECT_READER_OR_ADMIN,
    "compute:volume_attachments:index": PROJECT_READER_OR_ADMIN,
    "compute:volume_attachments:show": PROJECT_READER_OR_ADMIN,
    "compute:volume_attachments:create": PROJECT_MEMBER_OR_ADMIN,
    "compute:volume_attachments:delete": PROJECT_MEMBER_OR_ADMIN,
    # Admin only, as in Nova's defaults.
    "compute:servers:create:forced_host": ADMIN,
    "compute:resize:forced_host": ADMIN,
    "compute:migrate:host": ADMIN,
    "compute:reset_state": ADMIN,
    "compute:unlock_override": ADMIN,
    "compute:servers:index:get_all_tenants": ADMIN,
    "compute:servers:show:extended_attributes": ADMIN,
    "compute:instance_actions:events": ADMIN,
    "compute:instance_actions:events:details": ADMIN,
    "compute:flavors:create": ADMIN,
    "compute:flavors:delete": ADMIN,
    "compute:migrations:index": ADMIN,
    "compute:hypervisors:list": ADMIN,
    "compute:hypervisors:detail": ADMIN,
    "compute:hypervisors:show": ADMIN,
    "compute:servers:migrations:index": ADMIN,
    "compute:servers:migrations:show": ADMIN,
    "compute:services:index": ADMIN,
    "compute:aggregates:index": ADMIN,
    "compute:workflows:show": ADMIN,
    "compute:workflows:retry": ADMIN,
    "compute:workflows:abort": ADMIN,
    # The Block Storage API (Cinder's rule names and defaults).
    "volume:get_all": PROJECT_READER_OR_ADMIN,
    "volume:get": PROJECT_READER_OR_ADMIN,
    "volume:create": PROJECT_MEMBER_OR_ADMIN,
    "volume:update": PROJECT_MEMBER_OR_ADMIN,
    "volume:delete": PROJECT_MEMBER_OR_ADMIN,
    "volume:attachment_get_all": PROJECT_READER_OR_ADMIN,
    "volume:attachment_create": PROJECT_MEMBER_OR_ADMIN,
    "volume:attachment_update": PROJECT_MEMBER_OR_ADMIN,
    "volume:attachment_complete": PROJECT_MEMBER_OR_ADMIN,
    "volume:attachment_delete": PROJECT_MEMBER_OR_ADMIN,
    # The Image API (Glance's rule names and defaults).
    "image:get_images": PROJECT_READER_OR_ADMIN,
    "image:get_image": PROJECT_READER_OR_ADMIN,
    "image:download_image": PROJECT_READER_OR_ADMIN,
    "image:add_image": PROJECT_MEMBER_OR_ADMIN,
    "image:modify_image": PROJECT_MEMBER_OR_ADMIN,
    "image:upload_image": PROJECT_MEMBER_OR_ADMIN,
    "image:delete_image": PROJECT_MEMBER_OR_ADMIN,
    # The Networking API (Neutron's rule names and defaults).
    "network:get_network": PROJECT_READER_OR_ADMIN,
    "network:create_network": PROJECT_MEMBER_OR_ADMIN,
    "network:delete_network": PROJECT_MEMBER_OR_ADMIN,
    "network:get_subnet": PROJECT_READER_OR_ADMIN,
    "network:create_subnet": PROJECT_MEMBER_OR_ADMIN,
    "network:delete_subnet": PROJECT_MEMBER_OR_ADMIN,
    "network:get_port": PROJECT_READER_OR_ADMIN,
    "network:create_port": PROJECT_MEMBER_OR_ADMIN,
    "network:delete_port": PROJECT_MEMBER_OR_ADMIN,
}

# Nova's rule names, accepted in policy files as aliases of ours.
NOVA_NAMES: dict[str, str] = {
    "os_compute_api:servers:index": "compute:servers:index",
    "os_compute_api:servers:show": "compute:servers:show",
    "os_compute_api:servers:create": "compute:servers:create",
    "os_compute_api:servers:create:forced_host": "compute:servers:create:forced_host",
    "os_compute_api:servers:delete": "compute:delete",
    "os_compute_api:servers:resize": "compute:resize",
    "os_compute_api:servers:confirm_resize": "compute:confirm_resize",
    "os_compute_api:servers:revert_resize": "compute:revert_resize",
    "os_compute_api:servers:stop": "compute:stop",
    "os_compute_api:servers:start": "compute:start",
    "os_compute_api:os-migrate-server:migrate": "compute:migrate",
    "os_compute_api:os-migrate-server:migrate:host": "compute:migrate:host",
    "os_compute_api:servers:reboot": "compute:reboot",
    "os_compute_api:os-admin-actions:reset_state": "compute:reset_state",
    "os_compute_api:os-console-output": "compute:console_output",
    "os_compute_api:os-lock-server:lock": "compute:lock",
    "os_compute_api:os-lock-server:unlock": "compute:unlock",
    "os_compute_api:os-lock-server:unlock:unlock_override": "compute:unlock_override",
    "os_compute_api:servers:index:get_all_tenants": "compute:servers:index:get_all_tenants",
    "os_compute_api:os-extended-server-attributes": "compute:servers:show:extended_attributes",
    "os_compute_api:os-instance-actions:list": "compute:instance_actions:list",
    "os_compute_api:os-instance-actions:show": "compute:instance_actions:show",
    "os_compute_api:os-instance-actions:events": "compute:instance_actions:events",
    "os_compute_api:os-instance-actions:events:details": "compute:instance_actions:events:details",
    "os_compute_api:os-flavor-manage:create": "compute:flavors:create",
    "os_compute_api:os-flavor-manage:delete": "compute:flavors:delete",
    "os_compute_api:os-migrations:index": "compute:migrations:index",
    "os_compute_api:os-hypervisors:list": "compute:hypervisors:list",
    "os_compute_api:os-hypervisors:list-detail": "compute:hypervisors:detail",
    "os_compute_api:os-hypervisors:show": "compute:hypervisors:show",
    "os_compute_api:servers:migrations:index": "compute:servers:migrations:index",
    "os_compute_api:servers:migrations:show": "compute:servers:migrations:show",
    "os_compute_api:os-services:list": "compute:services:index",
    "os_compute_api:os-aggregates:index": "compute:aggregates:index",
    "os_compute_api:os-volumes-attachments:index": "compute:volume_attachments:index",
    "os_compute_api:os-volumes-attachments:show": "compute:volume_attachments:show",
    "os_compute_api:os-volumes-attachments:create": "compute:volume_attachments:create",
    "os_compute_api:os-volumes-attachments:delete": "compute:volume_attachments:delete",
}

# The name Nova's API gives each rule in a refusal ("Policy doesn't allow ... to be performed").
SHOWN_AS: dict[str, str] = {ours: nova for nova, ours in NOVA_NAMES.items()}


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


class Policy:
    """A rules table; unknown rules fall back to a project member or an admin."""

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        self.rules = dict(DEFAULT_RULES)
        for name, rule in (overrides or {}).items():
            self.rules[NOVA_NAMES.get(name, name)] = rule

    def check(self, caller: RequestContext, action: str, target_project: str | None = None) -> bool:
        target = {"project_id": target_project if target_project is not None else caller.project_id}
        return self._eval(self.rules.get(action, PROJECT_MEMBER_OR_ADMIN), caller, target, depth=0)

    def _eval(self, rule: str, caller: RequestContext, target: dict[str, str], depth: int) -> bool:
        if depth > 10:
            raise errors.ConfigError(f"policy rule {rule!r} refers to itself")
        text = rule.strip()
        if text in ("", "@"):
            return True
        return any(
            all(self._atom(atom, caller, target, depth) for atom in alt.split(" and "))
            for alt in text.split(" or ")
        )

    def _atom(self, atom: str, caller: RequestContext, target: dict[str, str], depth: int) -> bool:
        atom = atom.strip().strip("()").strip()
        if atom.startswith("not "):
            return not self._atom(atom[4:], caller, target, depth)
        if atom == "@":
            return True
        if atom == "!":
            return False
        kind, _, value = atom.partition(":")
        if kind == "rule":
            return self._eval(self.rules.get(value, "!"), caller, target, depth + 1)
        if kind == "role":
            return value in with_implied(caller.roles)
        if kind == "is_admin":
            return caller.is_admin == (value.lower() == "true")
        if kind in ("project_id", "user_id"):
            expected = value % target if "%(" in value else value
            return expected == (caller.project_id if kind == "project_id" else caller.user_id)
        raise errors.ConfigError(f"policy check {atom!r} is not understood")


def load_policy_file(path: str | Path) -> Policy:
    """A :class:`Policy` from a JSON file of ``{"rule name": "check"}``."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise errors.ConfigError(f"policy file {path}: {exc}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise errors.ConfigError(f"policy file {path}: expected an object of rule: check strings")
    policy = Policy(data)
    # Evaluate every rule once, so a typo stops the process at start.
    probe = RequestContext(user_id="probe", project_id="probe")
    for name in policy.rules:
        policy.check(probe, name)
    return policy


_active = Policy()


def configure(policy: Policy | None) -> None:
    """Install ``policy`` for this process (None restores Nova's defaults)."""
    global _active
    _active = policy if policy is not None else Policy()


def allowed(caller: RequestContext, action: str, target_project: str | None = None) -> bool:
    return _active.check(caller, action, target_project)


def authorize(caller: RequestContext, action: str, target_project: str | None = None) -> None:
    """Raise PolicyNotAuthorized unless ``caller`` may perform ``action`` on the target."""
    if not allowed(caller, action, target_project):
        raise errors.PolicyNotAuthorized(action=action)
