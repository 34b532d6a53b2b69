"""Who is calling: Nova's noauth2, a file of tokens, or Keystone.

``noauth`` takes the ``X-Auth-Token`` ``user:project`` at its word, and the
user ``admin`` gets the admin role, as Nova's noauth2 middleware does.
``tokens`` looks the token up in a JSON file::

    {"tokens": {"s3cr3t": {"user": "alice", "project": "demo", "roles": ["member"]}}}

Tokens are compared in constant time: every entry is checked, whatever matches.
``keystone`` has keystonemiddleware's ``auth_token`` validate the token with
Keystone (:mod:`resizeflow.api.keystone`).

Roles a caller holds imply others, as Keystone's do (admin, then manager,
member, reader): see :func:`resizeflow.compute.policy.with_implied`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response

from resizeflow import errors
from resizeflow.compute.policy import RequestContext
from resizeflow.conf import Settings


@dataclass(frozen=True)
class Identity:
    user_id: str
    project_id: str
    roles: frozenset[str]

    def context(self, request_id: str) -> RequestContext:
        return RequestContext(self.user_id, self.project_id, self.roles, request_id)


class Rejected(errors.Unauthorized):
    """The answer the identity service's middleware gave instead of an identity
    (401 with ``WWW-Authenticate``, 503 when Keystone is unreachable): sent back as it came."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        super().__init__()
        self.status, self.headers, self.body = status, headers, body


async def rejected_response(request: Request, exc: Exception) -> Response:
    """The exception handler every API app installs for :class:`Rejected`."""
    assert isinstance(exc, Rejected)
    keep = {"content-type", "www-authenticate"}
    headers = {k: v for k, v in exc.headers if k.lower() in keep}
    return Response(exc.body, exc.status, headers=headers)


class Authenticator(Protocol):
    def identify(self, token: str | None) -> Identity: ...


class NoAuth:
    def identify(self, token: str | None) -> Identity:
        if not token:
            raise errors.Unauthorized()
        user, _, project = token.partition(":")
        if not user:
            raise errors.Unauthorized()
        roles = {"admin", "member"} if user == "admin" else {"member"}
        return Identity(user, project or user, frozenset(roles))


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class TokenFile:
    def __init__(self, entries: dict[str, Identity]) -> None:
        self._entries = [(_digest(t), ident) for t, ident in entries.items()]

    @classmethod
    def load(cls, path: str) -> TokenFile:
        try:
            data = json.loads(Path(path).read_text())
            tokens = data["tokens"]
            entries = {
                str(token): Identity(
                    str(v["user"]), str(v["project"]), frozenset(str(r) for r in v["roles"])
                )
                for token, v in tokens.items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise errors.ConfigError(
                f"tokens file {path!r} is unreadable or malformed ({type(exc).__name__}: {exc}); "
                'expected {"tokens": {"TOKEN": {"user": ..., "project": ..., "roles": [...]}}}'
            ) from None
        return cls(entries)

    def identify(self, token: str | None) -> Identity:
        if not token:
            raise errors.Unauthorized()
        given = _digest(token)
        found: Identity | None = None
        for digest, ident in self._entries:
            # NOTE: no early exit, so the time taken does not tell which entry matched.
            if hmac.compare_digest(digest, given):
                found = ident
        if found is None:
            raise errors.Unauthorized()
        return found


def authenticator(settings: Settings) -> Authenticator:
    if settings.auth == "tokens":
        if not settings.tokens_file:
            raise errors.ConfigError("RESIZEFLOW_AUTH=tokens needs RESIZEFLOW_TOKENS_FILE")
        return TokenFile.load(settings.tokens_file)
    if settings.auth == "keystone":
        from resizeflow.api.keystone import KeystoneAuth

        return KeystoneAuth(settings)
    return NoAuth()
