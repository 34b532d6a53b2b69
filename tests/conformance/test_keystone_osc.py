"""``openstack server migration list --host`` against resizeflow, with real Keystone for identity.

python-openstackclient's ``server migration list`` requires an identity v3
service before it sends anything to the compute API. A run here starts real
Keystone 30 (:mod:`tests.conformance.keystone`, from Nova's virtualenv) and a
resizeflow stack with three hosts (SQLite, Redis). The unchanged ``openstack``
CLI reads one ``clouds.yaml``: its compute calls go to resizeflow's API with
resizeflow's own ``user:project`` token (``admin_token`` auth, as everywhere
else in the tests), and its identity calls go to Keystone's ``/v3``
(``identity_endpoint_override``, identity API version 3). A second cloud logs
in to Keystone by password and reads its catalog, whose compute endpoint is
resizeflow's.

One server is moved round the three hosts, a resize and two cold migrations,
so that each host is the source of one migration and the dest of another; the
host filter must return exactly the two that touch the host, as table and as
JSON, and nothing for a host that does not exist. Marker ``nova``: ``make
test-nova`` runs it, where Nova's virtualenv exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openstack
import pytest
import yaml
from openstack.connection import Connection

from tests.conformance.keystone import ADMIN, REGION, KeystoneDeployment, require_keystone
from tests.support.stack import REDIS_URL, Stack, build_stack, destroy_stack, require, wait_for

pytestmark = [pytest.mark.nova, pytest.mark.timeout(300)]
HOSTS = ("ks-host1", "ks-host2", "ks-host3")
LOGS = Path(os.environ.get("RESIZEFLOW_CONFORMANCE_REPORT", "var/conformance/report.txt")).parent


@dataclass
class Cloud:
    rf: Stack
    keystone: KeystoneDeployment
    clouds_yaml: Path
    figures: dict[str, float]

    def osc(self, cloud: str, *args: str) -> subprocess.CompletedProcess[str]:
        """The ``openstack`` CLI of resizeflow's virtualenv, configured by ``clouds.yaml`` alone."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env["OS_CLIENT_CONFIG_FILE"] = str(self.clouds_yaml)
        exe = Path(sys.executable).with_name("openstack")
        return subprocess.run(
            [str(exe), "--os-cloud", cloud, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def ok(self, *args: str, cloud: str = "resizeflow") -> str:
        done = self.osc(cloud, *args)
        assert done.returncode == 0, f"openstack {' '.join(args)}:\n{done.stderr}"
        return done.stdout


def _clouds(rf: Stack, keystone: KeystoneDeployment) -> dict[str, Any]:
    def compute() -> dict[str, Any]:
        return {
            "auth_type": "admin_token",
            "auth": {"endpoint": rf.api_endpoint(), "token": "admin:admin"},
        }

    return {
        "clouds": {
            # Compute: resizeflow's API and its own token; identity: real Keystone's v3.
            "resizeflow": {
                **compute(),
                "identity_api_version": "3",
                "identity_endpoint_override": keystone.url,
            },
            # The same without an identity service: what the CLI has without Keystone.
            "resizeflow-alone": compute(),
            # Keystone's bootstrapped admin, by password, with the catalog Keystone serves.
            "keystone": {
                "auth_type": "password",
                "auth": {
                    "auth_url": keystone.url,
                    "username": ADMIN,
                    "password": keystone.password,
                    "project_name": ADMIN,
                    "user_domain_id": "default",
                    "project_domain_id": "default",
                },
                "region_name": REGION,
                "identity_api_version": "3",
            },
        }
    }


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    require_keystone()
    require(REDIS_URL, 6379, "Redis")
    tmp = Path(tmp_path_factory.mktemp("keystone-osc"))
    keystone = KeystoneDeployment(tmp / "keystone")
    rf = None
    try:
        keystone.start()
        began = time.monotonic()
        rf = build_stack("sqlite", tmp, hosts=HOSTS, broker="redis")
        keystone.register("compute", "nova", rf.api_endpoint())
        figures = {
            "keystone_start": keystone.timings["start"],
            "keystone_db_sync": keystone.timings["db_sync"],
            "keystone_mb": keystone.memory_mb(),
            "resizeflow_start": time.monotonic() - began,
        }
        clouds_yaml = tmp / "clouds.yaml"
        clouds_yaml.write_text(yaml.safe_dump(_clouds(rf, keystone)))
        print(
            f"\nKeystone started in {figures['keystone_start']:.1f}s "
            f"(db_sync and fernet_setup {figures['keystone_db_sync']:.1f}s), "
            f"holds {figures['keystone_mb']:.0f} MB; "
            f"resizeflow with {len(HOSTS)} hosts in {figures['resizeflow_start']:.1f}s"
        )
        yield Cloud(rf, keystone, clouds_yaml, figures)
    finally:
        keystone.close(keep_logs=LOGS / "keystone-logs")
        if rf is not None:
            destroy_stack(rf)


def connect(rf: Stack) -> Connection:
    return openstack.connect(
        auth_type="admin_token", auth={"endpoint": rf.api_endpoint(), "token": "admin:admin"}
    )


def settle(conn: Connection, server_id: str, status: str) -> Any:
    """The server once it shows ``status`` with no task in progress, read anew each time."""

    def ready() -> Any:
        found = conn.compute.get_server(server_id)
        assert found.status != "ERROR", found.fault
        return found if found.status == status and found.task_state is None else None

    return wait_for(ready, 90, f"{server_id} to be {status}")


def table_ids(table: str) -> list[str]:
    """The first column of a table the CLI printed, without its header."""
    rows = [line for line in table.splitlines() if line.startswith("|")]
    return [row.split("|")[1].strip() for row in rows[1:]]


def test_keystone_catalog_has_resizeflow_as_compute(cloud: Cloud) -> None:
    """The CLI logs in to real Keystone by password and finds resizeflow in its catalog."""
    listed = json.loads(
        cloud.ok("endpoint", "list", "--service", "compute", "-f", "json", cloud="keystone")
    )
    assert sorted((e["Interface"], e["URL"], e["Region"]) for e in listed) == [
        ("internal", cloud.rf.api_endpoint(), REGION),
        ("public", cloud.rf.api_endpoint(), REGION),
    ]
    done = cloud.osc("keystone", "endpoint", "list", "--os-password", "wrong", "-f", "json")
    assert done.returncode != 0 and "401" in done.stderr


def test_osc_server_migration_list_by_host(cloud: Cloud) -> None:
    conn = connect(cloud.rf)
    first = HOSTS[0]
    server = conn.compute.create_server(
        name="ks-osc", flavor_id="1", networks="none", availability_zone=f"nova:{first}"
    )
    server = settle(conn, server.id, "ACTIVE")
    assert server.compute_host == first

    # A resize away from the first host (the scheduler picks which of the other two) ...
    cloud.ok("server", "resize", "--flavor", "m1.small", "--wait", server.id)
    assert settle(conn, server.id, "VERIFY_RESIZE").flavor.original_name == "m1.small"
    cloud.ok("server", "resize", "confirm", server.id)
    second = settle(conn, server.id, "ACTIVE").compute_host
    (third,) = set(HOSTS) - {first, second}
    # ... then two cold migrations, to the third host and back to the first.
    for target in (third, first):
        cloud.ok("--os-compute-api-version", "2.56", "server", "migrate", "--host", target,
                 "--wait", server.id)  # fmt: skip
        assert settle(conn, server.id, "VERIFY_RESIZE").compute_host == target
        cloud.ok("server", "migrate", "confirm", server.id)
        settle(conn, server.id, "ACTIVE")

    discoveries = cloud.keystone.requests("GET", "/v3")
    everything = json.loads(cloud.ok("server", "migration", "list", "-f", "json"))
    moves = {m["Id"]: (m["Type"], m["Source Compute"], m["Dest Compute"]) for m in everything}
    assert sorted(moves.values()) == sorted(
        [("resize", first, second), ("migration", second, third), ("migration", third, first)]
    ), everything
    assert {(m["Server UUID"], m["Status"]) for m in everything} == {(server.id, "confirmed")}

    lists = 1
    for host in HOSTS:
        touching = {i for i, (_, source, dest) in moves.items() if host in (source, dest)}
        assert len(touching) == 2  # the source of one move and the dest of another
        listed = json.loads(cloud.ok("server", "migration", "list", "--host", host, "-f", "json"))
        assert {m["Id"] for m in listed} == touching and len(listed) == 2, (host, listed)
        table = cloud.ok("server", "migration", "list", "--host", host)
        assert sorted(table_ids(table)) == sorted(str(i) for i in touching), (host, table)
        lists += 2
    assert (
        json.loads(cloud.ok("server", "migration", "list", "--host", "nowhere", "-f", "json")) == []
    )
    assert table_ids(cloud.ok("server", "migration", "list", "--host", "nowhere")) == []
    lists += 2
    # Every listing first found the identity service: Keystone answered each one's discovery.
    assert cloud.keystone.requests("GET", "/v3") - discoveries == lists

    # Without an identity service the CLI refuses to list at all.
    done = cloud.osc("resizeflow-alone", "server", "migration", "list", "--host", first)
    assert done.returncode != 0
    assert "Service requires API version '3' but the configured version is '2'" in done.stderr
    conn.compute.delete_server(server.id)
