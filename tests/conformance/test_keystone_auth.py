"""resizeflow behind real Keystone: the catalog, and tokens that must not work.

openstacksdk logs in to Keystone by password and finds every API resizeflow
serves in Keystone's catalog. Tokens that are missing, garbage, expired or
revoked get keystonemiddleware's 401 with ``WWW-Authenticate`` naming
Keystone, never data; identity headers a client sends itself count for
nothing; a reader cannot act in any API. No answer of the run (bodies and
headers) and no line of the API's log holds a token or a password: that check
is the last test of :mod:`tests.conformance.test_keystone_policy`, so it sees
both modules' answers.

Marker ``nova``: ``make test-nova`` runs it, where Nova's virtualenv has Keystone.
"""

from __future__ import annotations

import datetime as dt
import time

import httpx
import openstack
import pytest

from tests.conformance.keystone import REGION
from tests.conformance.keystone_cloud import Admin, KeystoneCloud, password_token

pytestmark = [pytest.mark.nova, pytest.mark.timeout(300)]
DENIED = {"error": {"code": 401, "title": "Unauthorized"}}


def assert_denied(cloud: KeystoneCloud, r: httpx.Response) -> None:
    """keystonemiddleware's own 401, as in front of Nova: Keystone named, no data."""
    assert r.status_code == 401, r.text
    assert r.headers["WWW-Authenticate"] == f'Keystone uri="{cloud.keystone.url}"'
    body = r.json()
    assert {"error": {k: body["error"][k] for k in ("code", "title")}} == DENIED
    assert set(body) == {"error"}


def test_openstacksdk_finds_every_api_in_keystones_catalog(keystone_cloud: KeystoneCloud) -> None:
    member = keystone_cloud.personas["member"]
    conn = openstack.connect(
        auth_type="password",
        auth={
            "auth_url": keystone_cloud.keystone.url,
            "username": "rf-member",
            "password": member.password,
            "project_name": "alpha",
            "user_domain_id": "default",
            "project_domain_id": "default",
        },
        region_name=REGION,
        identity_api_version="3",
    )
    try:
        alpha = keystone_cloud.resources["alpha"]
        assert {s.id for s in conn.compute.servers()} == {alpha["server"]} | {
            s.id for s in conn.compute.servers() if s.name == "p"
        }
        assert conn.compute.get_server(alpha["server"]).name == "alpha-vm"
        assert alpha["volume"] in {v.id for v in conn.block_storage.volumes()}
        assert alpha["image"] in {i.id for i in conn.image.images()}
        assert conn.network.get_network(alpha["network"]).name == "alpha"
        base = keystone_cloud.base
        assert conn.compute.get_endpoint() == base + "/v2.1"
        assert conn.network.get_endpoint().startswith(base + "/network")
        assert conn.image.get_endpoint().startswith(base + "/image")
        assert conn.block_storage.get_endpoint().startswith(base + "/volume/v3")
    finally:
        conn.close()


def test_no_token_and_a_garbage_token_get_401(keystone_cloud: KeystoneCloud) -> None:
    for path in (
        "/v2.1/servers",
        "/volume/v3/volumes",
        "/image/v2/images",
        "/network/v2.0/networks",
    ):
        with keystone_cloud.client(None) as c:
            assert_denied(keystone_cloud, c.get(path))
        with keystone_cloud.client("gAAAAABnot-a-real-token") as c:
            assert_denied(keystone_cloud, c.get(path))
    # The version documents stay open, as Nova's are: clients discover before they log in.
    with keystone_cloud.client(None) as c:
        assert c.get("/").status_code == 200
        assert c.get("/v2.1/").status_code == 200


def test_a_revoked_token_gets_401(keystone_cloud: KeystoneCloud) -> None:
    member = keystone_cloud.personas["member"]
    token = password_token(
        keystone_cloud.keystone, member.user_id, member.password, member.project_id
    )
    admin = Admin(keystone_cloud.keystone)
    r = admin.http.delete("/auth/tokens", headers={"X-Subject-Token": token})
    assert r.status_code == 204, r.text
    keystone_cloud.personas["revoked"] = type(member)("revoked", member.user_id, "", "", token)
    with keystone_cloud.client(token) as c:
        assert_denied(
            keystone_cloud, c.get(f"/v2.1/servers/{keystone_cloud.resources['alpha']['server']}")
        )
        assert_denied(
            keystone_cloud,
            c.delete(f"/image/v2/images/{keystone_cloud.resources['alpha']['image']}"),
        )


def test_an_expired_token_gets_401(keystone_cloud: KeystoneCloud) -> None:
    """A token from an application credential expires with it: it works, then it does not,
    though keystonemiddleware has it cached."""
    member = keystone_cloud.personas["member"]
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=4)
    with httpx.Client(base_url=keystone_cloud.keystone.url, timeout=30) as ks:
        made = ks.post(
            f"/users/{member.user_id}/application_credentials",
            headers={"X-Auth-Token": member.token},
            json={
                "application_credential": {
                    "name": "short-lived",
                    "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S.%f"),
                }
            },
        )
        assert made.status_code == 201, made.text
        cred = made.json()["application_credential"]
        r = ks.post(
            "/auth/tokens",
            json={
                "auth": {
                    "identity": {
                        "methods": ["application_credential"],
                        "application_credential": {"id": cred["id"], "secret": cred["secret"]},
                    }
                }
            },
        )
        assert r.status_code == 201, r.text
        token = r.headers["X-Subject-Token"]
    keystone_cloud.personas["expiring"] = type(member)(
        "expiring", member.user_id, "", cred["secret"], token
    )
    server = keystone_cloud.resources["alpha"]["server"]
    with keystone_cloud.client(token) as c:
        assert c.get(f"/v2.1/servers/{server}").status_code == 200
        time.sleep(max(0.0, (expires - dt.datetime.now(dt.UTC)).total_seconds()) + 1.5)
        assert_denied(keystone_cloud, c.get(f"/v2.1/servers/{server}"))


def test_identity_headers_a_client_sends_count_for_nothing(keystone_cloud: KeystoneCloud) -> None:
    reader = keystone_cloud.personas["reader"]
    forged = {
        "X-Identity-Status": "Confirmed",
        "X-Roles": "admin,member,reader",
        "X-Project-Id": keystone_cloud.projects["beta"],
        "X-User-Id": keystone_cloud.personas["admin"].user_id,
    }
    beta_server = keystone_cloud.resources["beta"]["server"]
    with keystone_cloud.client(reader.token, **forged) as c:
        assert c.get("/v2.1/os-hypervisors").status_code == 403
        assert c.get(f"/v2.1/servers/{beta_server}").status_code == 404
    with keystone_cloud.client(None, **forged) as c:
        assert_denied(keystone_cloud, c.get("/v2.1/os-hypervisors"))


def test_a_reader_cannot_act_in_any_api(keystone_cloud: KeystoneCloud) -> None:
    alpha = keystone_cloud.resources["alpha"]
    acts = [
        ("POST", "/v2.1/servers", {"server": {"name": "r", "flavorRef": "1", "networks": "none"}}),
        ("POST", f"/v2.1/servers/{alpha['server']}/action", {"os-stop": None}),
        ("POST", f"/v2.1/servers/{alpha['server']}/action", {"reboot": {"type": "SOFT"}}),
        ("POST", f"/v2.1/servers/{alpha['server']}/action", {"resize": {"flavorRef": "2"}}),
        ("POST", f"/v2.1/servers/{alpha['server']}/action", {"migrate": None}),
        ("DELETE", f"/v2.1/servers/{alpha['server']}", None),
        ("POST", "/v2.1/flavors", {"flavor": {"name": "f", "ram": 64, "vcpus": 1, "disk": 1}}),
        ("POST", "/volume/v3/volumes", {"volume": {"size": 1}}),
        ("DELETE", f"/volume/v3/volumes/{alpha['volume']}", None),
        ("POST", "/image/v2/images", {"name": "r"}),
        ("DELETE", f"/image/v2/images/{alpha['image']}", None),
        ("POST", "/network/v2.0/networks", {"network": {"name": "r"}}),
        ("DELETE", f"/network/v2.0/networks/{alpha['network']}", None),
        ("POST", "/network/v2.0/ports", {"port": {"network_id": alpha["network"]}}),
    ]
    got = {
        f"{m} {p} {next(iter(b)) if b else ''}": keystone_cloud.call(
            "reader", m, p, json=b
        ).status_code
        for m, p, b in acts
    }
    assert got == dict.fromkeys(got, 403)
    # Everything is still there, as the member sees it.
    assert (
        keystone_cloud.call("member", "GET", f"/v2.1/servers/{alpha['server']}").json()["server"][
            "status"
        ]
        == "ACTIVE"
    )
