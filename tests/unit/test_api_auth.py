"""Authentication (noauth and a tokens file) and policy (Nova's defaults and a policy file)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from resizeflow import errors
from resizeflow.api.auth import NoAuth, TokenFile
from resizeflow.cli import api_cmd, main  # noqa: F401  (registers the api command)
from resizeflow.compute import policy
from resizeflow.compute.policy import Policy, RequestContext, load_policy_file
from tests.support.apiapp import build_inprocess_api

TOKENS = {
    "tokens": {
        "s3cr3t-admin": {"user": "root", "project": "ops", "roles": ["admin", "member"]},
        "s3cr3t-alice": {"user": "alice", "project": "demo", "roles": ["member"]},
        "s3cr3t-audit": {"user": "audit", "project": "demo", "roles": ["reader"]},
    }
}


@pytest.fixture(autouse=True)
def default_policy() -> Iterator[None]:
    yield
    policy.configure(None)


def ctx(project: str = "p1", *roles: str) -> RequestContext:
    return RequestContext("u", project, frozenset(roles or ("member",)))


def test_noauth_takes_the_token_at_its_word() -> None:
    auth = NoAuth()
    assert auth.identify("alice:demo").project_id == "demo"
    assert auth.identify("bob").project_id == "bob"  # noauth2: no project means the user's
    assert "admin" in auth.identify("admin:anything").roles
    assert "admin" not in auth.identify("alice:admin").roles
    for bad in (None, "", ":demo"):
        with pytest.raises(errors.Unauthorized):
            auth.identify(bad)


def test_a_tokens_file_maps_tokens_to_users(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(TOKENS))
    auth = TokenFile.load(str(path))
    ident = auth.identify("s3cr3t-alice")
    assert (ident.user_id, ident.project_id, ident.roles) == ("alice", "demo", {"member"})
    for bad in (None, "", "s3cr3t", "s3cr3t-alicE", "alice:demo", "s3cr3t-alice "):
        with pytest.raises(errors.Unauthorized):
            auth.identify(bad)


@pytest.mark.parametrize("text", ["not json", "{}", '{"tokens": {"t": {"user": "u"}}}', "[]"])
def test_a_malformed_tokens_file_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(text)
    with pytest.raises(errors.ConfigError) as exc:
        TokenFile.load(str(path))
    assert str(path) in exc.value.message


def test_tokens_mode_over_http(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(TOKENS))
    api = build_inprocess_api(tmp_path, auth="tokens", tokens_file=str(path))
    for token in (None, "admin:admin", "wrong"):
        hdrs = {"X-Auth-Token": token} if token else {}
        resp = api.client.get("/v2.1/servers", headers=hdrs)
        assert resp.status_code == 401
        assert resp.json() == {
            "unauthorized": {
                "code": 401,
                "message": "The request you have made requires authentication.",
            }
        }
    assert api.client.get("/", headers={}).status_code == 200  # discovery stays open
    alice = {"X-Auth-Token": "s3cr3t-alice"}
    root = {"X-Auth-Token": "s3cr3t-admin"}
    assert api.client.get("/v2.1/servers", headers=alice).status_code == 200
    assert api.client.get("/v2.1/os-migrations", headers=alice).status_code == 403
    assert api.client.get("/v2.1/os-migrations", headers=root).status_code == 200
    uid = api.server("demo")
    assert api.client.get(f"/v2.1/servers/{uid}", headers=alice).status_code == 200
    # The admin sees it too, though it is another project's.
    assert api.client.get(f"/v2.1/servers/{uid}", headers=root).status_code == 200
    api.db.dispose()


def test_nova_defaults() -> None:
    p = Policy()
    assert p.check(ctx("p1"), "compute:resize", "p1")
    assert not p.check(ctx("p1"), "compute:resize", "p2")
    assert p.check(ctx("p1", "admin"), "compute:resize", "p2")
    for admin_only in (
        "compute:servers:create:forced_host",
        "compute:flavors:create",
        "compute:migrations:index",
        "compute:hypervisors:detail",
        "compute:services:index",
    ):
        assert not p.check(ctx("p1"), admin_only)
        assert p.check(ctx("p1", "admin"), admin_only)
    # A rule nobody wrote falls back to admin-or-owner.
    assert p.check(ctx("p1"), "compute:something_new", "p1")
    assert not p.check(ctx("p1"), "compute:something_new", "p2")


def test_a_policy_file_overrides_rules_by_nova_name(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(
        json.dumps(
            {
                "os_compute_api:os-migrations:index": "role:auditor or rule:admin_api",
                "os_compute_api:servers:resize": "!",
                "compute:stop": "role:operator and project_id:%(project_id)s",
            }
        )
    )
    p = load_policy_file(path)
    assert p.check(ctx("p1", "auditor"), "compute:migrations:index")
    assert not p.check(ctx("p1", "member"), "compute:migrations:index")
    assert not p.check(ctx("p1", "admin"), "compute:resize", "p1")
    assert p.check(ctx("p1", "operator"), "compute:stop", "p1")
    assert not p.check(ctx("p1", "operator"), "compute:stop", "p2")
    assert not p.check(ctx("p1", "member"), "compute:stop", "p1")


@pytest.mark.parametrize(
    "text",
    ["[1]", '{"compute:stop": 3}', '{"compute:stop": "rolez:admin"}', '{"a": "rule:a"}', "{"],
)
def test_a_bad_policy_file_is_refused_at_start(tmp_path: Path, text: str) -> None:
    path = tmp_path / "policy.json"
    path.write_text(text)
    with pytest.raises(errors.ConfigError) as exc:
        load_policy_file(path)
    assert "polic" in exc.value.message


def test_the_api_enforces_its_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"os_compute_api:os-migrations:index": "@"}))
    api = build_inprocess_api(tmp_path, policy_file=str(path))
    assert api.request("GET", "/v2.1/os-migrations", "alice:demo").status_code == 200
    assert api.request("GET", "/v2.1/os-services", "alice:demo").status_code == 403
    api.db.dispose()


def test_the_api_command_refuses_a_bad_auth_setup(tmp_path: Path) -> None:
    env = {**os.environ, "RESIZEFLOW_STATE_DIR": str(tmp_path), "RESIZEFLOW_AUTH": "tokens"}
    result = CliRunner().invoke(main, ["api", "--port", "0"], env=env)
    assert result.exit_code == 1
    assert result.output.strip().endswith(
        "Error: RESIZEFLOW_AUTH=tokens needs RESIZEFLOW_TOKENS_FILE"
    )
