"""Neutron's Networking API v2.0 of ``resizeflow api``, driven by OpenStack's own clients.

openstacksdk's ``network`` proxy finds v2.0 through the version document at
``/network/``, then creates, lists, shows and deletes networks, subnets and
ports; the ``openstack network|subnet|port`` commands do the same, and boot
servers on a network or on a port of their own. Bad input gets Neutron's
codes and error bodies and changes nothing; a project sees its own and the
shared networks, never another project's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openstack
import pytest
import requests
from keystoneauth1 import discover
from openstack import exceptions
from openstack.connection import Connection
from sqlalchemy import func, select

from resizeflow.db.models import Instance, Port
from resizeflow.openstack.images import ImageStore
from tests.support.clients import network_endpoint, network_osc
from tests.support.stack import Stack

pytestmark = pytest.mark.stacks("sqlite-redis", "postgresql-rabbitmq")
WAIT = {"wait": 90, "interval": 0.2}


def connect(rf: Stack, token: str) -> Connection:
    # The compute endpoint is the admin_token's; networking is found at its own path.
    return openstack.connect(
        auth_type="admin_token",
        auth={"endpoint": rf.api_endpoint(), "token": token},
        network_endpoint_override=network_endpoint(rf),
    )


def call(rf: Stack, method: str, path: str, token: str, body: Any = None) -> requests.Response:
    return requests.request(
        method,
        network_endpoint(rf) + "v2.0" + path,
        json=body,
        headers={"X-Auth-Token": token},
        timeout=60,
    )


def neutron_error(resp: requests.Response, code: int, kind: str) -> str:
    assert resp.status_code == code, resp.text
    err = resp.json()["NeutronError"]
    assert err["type"] == kind and err["detail"] == ""
    message: str = err["message"]
    return message


def network_with_subnet(conn: Connection, name: str, cidr: str = "192.168.40.0/24") -> Any:
    net = conn.network.create_network(name=name)
    conn.network.create_subnet(network_id=net.id, cidr=cidr, ip_version=4, name=f"{name}-sub")
    return conn.network.get_network(net.id)


def test_discovery_finds_v2_0_at_the_network_root(rf: Stack) -> None:
    conn = connect(rf, "admin:admin")
    # keystoneauth reads the version document at the endpoint, as it does Neutron's.
    found = discover.Discover(conn.session, network_endpoint(rf))
    assert found.url_for((2, 0)) == network_endpoint(rf) + "v2.0/"
    for root in (network_endpoint(rf), network_endpoint(rf).rstrip("/")):
        doc = requests.get(root, timeout=30)
        assert doc.status_code == 200
        [version] = doc.json()["versions"]
        assert version["id"] == "v2.0" and version["status"] == "CURRENT"
        assert version["links"][0]["href"] == network_endpoint(rf) + "v2.0/"
    index = call(rf, "GET", "/", "admin:admin").json()
    assert [r["collection"] for r in index["resources"]] == ["networks", "subnets", "ports"]
    aliases = {e.alias for e in conn.network.extensions()}
    assert {"binding", "project-id", "standard-attr-description", "net-mtu"} <= aliases
    assert "security-group" not in aliases and "router" not in aliases
    assert conn.network.find_extension("binding") is not None


def test_sdk_network_subnet_port_lifecycle(rf: Stack, project: str) -> None:
    conn = connect(rf, f"alice:{project}")
    net = conn.network.create_network(name=f"net-{project}", description="sdk's")
    assert net.status == "ACTIVE" and net.is_shared is False and net.mtu == 1450
    assert net.project_id == project and net.description == "sdk's"
    sub = conn.network.create_subnet(
        network_id=net.id, cidr="192.168.40.17/24", ip_version=4, name="s1"
    )
    assert sub.cidr == "192.168.40.0/24"  # host bits cleared, as Neutron does
    assert sub.gateway_ip == "192.168.40.1"
    assert sub.allocation_pools == [{"start": "192.168.40.2", "end": "192.168.40.254"}]
    assert conn.network.get_network(net.id).subnet_ids == [sub.id]

    port = conn.network.create_port(network_id=net.id, name="p1", device_id="my-device")
    assert [ip["ip_address"] for ip in port.fixed_ips] == ["192.168.40.2"]
    assert port.fixed_ips[0]["subnet_id"] == sub.id
    assert port.mac_address.startswith("fa:16:3e:")
    assert port.status == "DOWN" and port.binding_vnic_type == "normal"
    chosen = conn.network.create_port(
        network_id=net.id,
        mac_address="02:00:00:AA:BB:CC",
        fixed_ips=[{"subnet_id": sub.id, "ip_address": "192.168.40.77"}],
    )
    assert chosen.mac_address == "02:00:00:aa:bb:cc"
    assert chosen.fixed_ips == [{"subnet_id": sub.id, "ip_address": "192.168.40.77"}]

    assert [p.id for p in conn.network.ports(device_id="my-device")] == [port.id]
    assert [p.id for p in conn.network.ports(fixed_ips="ip_address=192.168.40.77")] == [chosen.id]
    assert [n.id for n in conn.network.networks(name=f"net-{project}")] == [net.id]
    assert conn.network.find_network(f"net-{project}").id == net.id
    assert [s.id for s in conn.network.subnets(network_id=net.id)] == [sub.id]
    brief = call(rf, "GET", f"/networks?id={net.id}&fields=id&fields=name", f"alice:{project}")
    assert brief.json() == {"networks": [{"id": net.id, "name": f"net-{project}"}]}

    with pytest.raises(exceptions.ConflictException, match="ports still in use"):
        conn.network.delete_network(net)
    with pytest.raises(exceptions.ConflictException, match="IP allocation from this subnet"):
        conn.network.delete_subnet(sub)
    conn.network.delete_port(port)
    conn.network.delete_port(chosen)
    conn.network.delete_network(net)
    assert conn.network.find_network(net.id) is None
    assert conn.network.find_subnet(sub.id) is None


def test_dhcp_ports_go_with_their_subnet_and_network(rf: Stack, project: str) -> None:
    conn = connect(rf, f"alice:{project}")
    net = network_with_subnet(conn, f"dhcp-{project}")
    [sub] = net.subnet_ids
    admin = connect(rf, "admin:admin")
    dhcp = admin.network.create_port(
        network_id=net.id, device_owner="network:dhcp", device_id="dhcp-host", project_id=project
    )
    # Only an admin (the DHCP agent) makes a network:* port.
    refused = call(
        rf,
        "POST",
        "/ports",
        f"alice:{project}",
        {"port": {"network_id": net.id, "device_owner": "network:dhcp"}},
    )
    neutron_error(refused, 403, "PolicyNotAuthorized")
    conn.network.delete_subnet(sub)
    assert admin.network.find_port(dhcp.id) is None
    sub2 = conn.network.create_subnet(network_id=net.id, cidr="192.168.41.0/24", ip_version=4)
    dhcp = admin.network.create_port(
        network_id=net.id, device_owner="network:dhcp", project_id=project
    )
    conn.network.delete_network(net)
    assert admin.network.find_port(dhcp.id) is None
    assert admin.network.find_subnet(sub2.id) is None


def test_bad_input_gets_neutron_errors_and_changes_nothing(rf: Stack, project: str) -> None:
    token = f"alice:{project}"
    conn = connect(rf, token)
    net = network_with_subnet(conn, f"bad-{project}")
    [sub] = net.subnet_ids
    missing = "9c4e6a52-0000-4000-8000-000000000000"

    with pytest.raises(exceptions.NotFoundException):
        conn.network.get_network(missing)
    msg = neutron_error(call(rf, "GET", f"/networks/{missing}", token), 404, "NetworkNotFound")
    assert msg == f"Network {missing} could not be found."
    neutron_error(call(rf, "GET", f"/subnets/{missing}", token), 404, "SubnetNotFound")
    neutron_error(call(rf, "GET", f"/ports/{missing}", token), 404, "PortNotFound")
    neutron_error(call(rf, "DELETE", f"/ports/{missing}", token), 404, "PortNotFound")

    def subnet(**body: Any) -> requests.Response:
        return call(rf, "POST", "/subnets", token, {"subnet": {"network_id": net.id, **body}})

    msg = neutron_error(subnet(cidr="10.1.2.300/24", ip_version=4), 400, "HTTPBadRequest")
    assert msg == "Invalid input for cidr. Reason: '10.1.2.300/24' is not a valid IP subnet."
    msg = neutron_error(subnet(cidr="fd00::/64", ip_version=6), 400, "InvalidInput")
    assert "IPv6" in msg
    msg = neutron_error(subnet(cidr="192.168.40.128/25", ip_version=4), 400, "InvalidInput")
    assert "overlaps with another subnet" in msg
    msg = neutron_error(
        subnet(cidr="10.9.0.0/24", ip_version=4, gateway_ip="10.8.0.1"), 400, "InvalidInput"
    )
    assert "Gateway" in msg
    msg = neutron_error(subnet(cidr="10.9.0.0/24"), 400, "HTTPBadRequest")
    assert "'ip_version'" in msg
    elsewhere = {"network_id": missing, "cidr": "10.9.0.0/24", "ip_version": 4}
    neutron_error(
        call(rf, "POST", "/subnets", token, {"subnet": elsewhere}), 404, "NetworkNotFound"
    )
    no_gateway = subnet(cidr="10.9.0.0/24", ip_version=4, gateway_ip=None).json()["subnet"]
    assert no_gateway["gateway_ip"] is None
    assert no_gateway["allocation_pools"] == [{"start": "10.9.0.1", "end": "10.9.0.254"}]
    conn.network.delete_subnet(no_gateway["id"])

    def port(**body: Any) -> requests.Response:
        return call(rf, "POST", "/ports", token, {"port": {"network_id": net.id, **body}})

    msg = neutron_error(port(mac_address="01:00:5e:00:00:01"), 400, "HTTPBadRequest")
    assert msg.startswith("Invalid input for mac_address.")
    msg = neutron_error(port(name=["x"]), 400, "HTTPBadRequest")
    assert msg.startswith("Invalid input for name.")
    msg = neutron_error(port(security_groups=["default"]), 400, "InvalidInput")
    assert "security_groups" in msg
    neutron_error(port(fixed_ips=[{"ip_address": "10.77.0.5"}]), 400, "InvalidIpForNetwork")
    neutron_error(
        port(fixed_ips=[{"subnet_id": sub, "ip_address": "10.77.0.5"}]), 400, "InvalidIpForSubnet"
    )
    msg = neutron_error(
        call(rf, "POST", "/ports", token, {"port": {"name": "x"}}), 400, "HTTPBadRequest"
    )
    assert "'network_id'" in msg
    first = port(mac_address="02:00:00:00:00:01", fixed_ips=[{"ip_address": "192.168.40.9"}])
    assert first.status_code == 201, first.text
    msg = neutron_error(port(mac_address="02:00:00:00:00:01"), 409, "MacAddressInUse")
    assert "02:00:00:00:00:01" in msg
    msg = neutron_error(
        port(fixed_ips=[{"ip_address": "192.168.40.9"}]), 409, "IpAddressAlreadyAllocated"
    )
    assert msg == f"IP address 192.168.40.9 already allocated in subnet {sub}"
    neutron_error(
        port(fixed_ips=[{"ip_address": "192.168.40.1"}]), 409, "IpAddressAlreadyAllocated"
    )
    msg = neutron_error(
        call(rf, "POST", "/networks", token, {"network": {"name": "x", "shared": True}}),
        403,
        "PolicyNotAuthorized",
    )
    neutron_error(
        call(rf, "POST", "/networks", token, {"network": {"name": "x", "segments": []}}),
        400,
        "HTTPBadRequest",
    )
    neutron_error(call(rf, "POST", "/networks", token, ["network"]), 400, "HTTPBadRequest")
    # Nothing was made by the refused requests.
    assert [p.id for p in conn.network.ports(network_id=net.id)] == [first.json()["port"]["id"]]
    assert [n.id for n in conn.network.networks(name="x")] == []
    assert [s.id for s in conn.network.subnets(network_id=net.id)] == [sub]


def test_a_project_sees_its_own_and_shared_networks_only(rf: Stack, project: str) -> None:
    alice, bob = connect(rf, f"alice:{project}"), connect(rf, f"bob:{project}-b")
    admin = connect(rf, "admin:admin")
    private = network_with_subnet(alice, f"mine-{project}")
    shared = admin.network.create_network(name=f"shared-{project}", is_shared=True)
    admin.network.create_subnet(network_id=shared.id, cidr="172.30.0.0/24", ip_version=4)

    seen = {n.id for n in bob.network.networks()}
    assert shared.id in seen and private.id not in seen
    assert bob.network.find_network(private.id) is None
    # Another project's network is not found, to see or to put a port on.
    neutron_error(
        call(rf, "POST", "/ports", f"bob:{project}-b", {"port": {"network_id": private.id}}),
        404,
        "NetworkNotFound",
    )
    neutron_error(
        call(rf, "DELETE", f"/networks/{private.id}", f"bob:{project}-b"), 404, "NetworkNotFound"
    )
    assert not [s for s in bob.network.subnets() if s.network_id == private.id]
    on_shared = bob.network.create_port(network_id=shared.id)
    assert on_shared.project_id == f"{project}-b"
    assert [p.id for p in alice.network.ports(network_id=shared.id)] == []

    # The provider segment and the binding are an admin's to see.
    assert alice.network.get_network(private.id).provider_segmentation_id is None
    raw = call(rf, "GET", f"/ports/{on_shared.id}", f"bob:{project}-b").json()["port"]
    assert "binding:host_id" not in raw and raw["binding:vnic_type"] == "normal"
    as_admin = admin.network.get_network(private.id)
    assert as_admin.provider_network_type == "vxlan"
    assert isinstance(as_admin.provider_segmentation_id, int)
    assert private.id in {n.id for n in admin.network.networks()}
    shown = admin.network.get_port(on_shared.id)
    assert shown.binding_host_id == "" and shown.binding_vif_type == "unbound"

    bob.network.delete_port(on_shared)
    admin.network.delete_network(shared)


def _boot(conn: Connection, name: str, networks: Any) -> Any:
    server = conn.compute.create_server(name=name, flavor_id="1", networks=networks)
    return conn.compute.wait_for_server(server, status="ACTIVE", **WAIT)


def test_boot_on_a_network_a_port_and_a_fixed_ip(rf: Stack, project: str) -> None:
    conn = connect(rf, f"alice:{project}")
    admin = connect(rf, "admin:admin")
    net = network_with_subnet(conn, f"boot-{project}", "192.168.50.0/24")
    own = conn.network.create_port(network_id=net.id, name="own")

    server = _boot(conn, "on-net", [{"uuid": net.id}, {"port": own.id}])
    by_port = {p.id: p for p in conn.network.ports(device_id=server.id)}
    assert set(by_port) >= {own.id} and len(by_port) == 2
    made = next(p for pid, p in by_port.items() if pid != own.id)
    assert made.device_owner == "compute:nova" and made.network_id == net.id
    assert {a["addr"] for a in server.addresses[f"boot-{project}"]} == {
        own.fixed_ips[0]["ip_address"],
        made.fixed_ips[0]["ip_address"],
    }
    bound = admin.network.get_port(own.id)
    assert bound.binding_host_id == rf.instance(server.id).host
    assert bound.binding_vif_type == "bridge" and bound.status == "ACTIVE"

    # A server's NIC is not deleted through the networking API (no interface detach).
    with pytest.raises(exceptions.ConflictException, match="delete the server"):
        conn.network.delete_port(made)

    fixed = _boot(conn, "fixed", [{"uuid": net.id, "fixed_ip": "192.168.50.200"}])
    assert [a["addr"] for a in fixed.addresses[f"boot-{project}"]] == ["192.168.50.200"]

    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, wait=90)
    kept = conn.network.get_port(own.id)
    assert kept.device_id == "" and kept.device_owner == "" and kept.status == "DOWN"
    assert admin.network.get_port(own.id).binding_host_id == ""
    assert conn.network.find_port(made.id) is None
    conn.compute.delete_server(fixed)
    conn.compute.wait_for_delete(fixed, wait=90)
    conn.network.delete_port(kept)
    conn.network.delete_network(net)


def _instances(rf: Stack, project: str) -> int:
    with rf.db.snapshot() as s:
        return int(
            s.scalar(
                select(func.count()).select_from(Instance).where(Instance.project_id == project)
            )
            or 0
        )


def _ports(rf: Stack) -> int:
    with rf.db.snapshot() as s:
        return int(s.scalar(select(func.count()).select_from(Port)) or 0)


def test_boot_refuses_networks_and_ports_it_may_not_use(rf: Stack, project: str) -> None:
    token = f"alice:{project}"
    conn = connect(rf, token)
    other = connect(rf, f"bob:{project}-b")
    net = network_with_subnet(conn, f"nics-{project}", "192.168.60.0/24")
    theirs = network_with_subnet(other, f"theirs-{project}", "192.168.61.0/24")
    their_port = other.network.create_port(network_id=theirs.id)
    bare = conn.network.create_network(name=f"bare-{project}")
    taken = conn.network.create_port(network_id=net.id, device_id="elsewhere")
    missing = "9c4e6a52-0000-4000-8000-000000000001"
    before = (_instances(rf, project), _ports(rf))

    def refused(networks: Any, code: int) -> str:
        resp = requests.post(
            rf.api_endpoint() + "/servers",
            json={"server": {"name": "x", "flavorRef": "1", "networks": networks}},
            headers={"X-Auth-Token": token, "OpenStack-API-Version": "compute 2.90"},
            timeout=60,
        )
        assert resp.status_code == code, resp.text
        message: str = next(iter(resp.json().values()))["message"]
        return message

    assert refused([{"uuid": missing}], 400) == f"Network {missing} could not be found."
    assert refused([{"uuid": theirs.id}], 400) == f"Network {theirs.id} could not be found."
    assert refused([{"port": taken.id}], 409) == f"Port {taken.id} is still in use."
    assert refused([{"port": their_port.id}], 400) == f"Port id {their_port.id} could not be found."
    assert refused([{"uuid": bare.id}], 400) == (
        f"Network {bare.id} requires a subnet in order to boot instances on."
    )
    used = taken.fixed_ips[0]["ip_address"]
    assert refused([{"uuid": net.id, "fixed_ip": used}], 400) == (
        f"Fixed IP address {used} is already in use on instance elsewhere."
    )
    assert "not in a subnet" in refused([{"uuid": net.id, "fixed_ip": "10.99.0.5"}], 400)
    assert "fixed_ip" in refused([{"uuid": net.id, "fixed_ip": "nope"}], 400)
    # A good NIC before a bad one: nothing is made for either.
    assert refused([{"uuid": net.id}, {"uuid": missing}], 400).startswith("Network")
    assert (_instances(rf, project), _ports(rf)) == before


@pytest.mark.stacks("sqlite-redis")
def test_openstack_cli_networks_and_servers_on_them(
    rf: Stack, project: str, tmp_path: Path
) -> None:
    token = f"alice:{project}"

    def run(*args: str) -> Any:
        done = network_osc(rf, *args, token=token)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if "-f" in args else done.stdout

    net = run("network", "create", f"cli-{project}", "-f", "json")
    assert net["status"] == "ACTIVE" and net["project_id"] == project
    sub = run(
        "subnet", "create", "--network", f"cli-{project}", "--subnet-range", "192.168.70.0/24",
        f"cli-sub-{project}", "-f", "json",
    )  # fmt: skip
    assert sub["cidr"] == "192.168.70.0/24" and sub["network_id"] == net["id"]
    listed = {n["Name"]: n for n in run("network", "list", "-f", "json")}
    assert listed[f"cli-{project}"]["Subnets"] == [sub["id"]]
    assert run("network", "show", f"cli-{project}", "-f", "json")["subnets"] == [sub["id"]]
    port = run("port", "create", "--network", f"cli-{project}", f"cli-port-{project}", "-f", "json")
    assert port["fixed_ips"][0]["ip_address"] == "192.168.70.2"

    raw = tmp_path / "image.raw"
    raw.write_bytes(b"\0" * 1048576)
    image = ImageStore(rf.settings.images_dir()).add(f"cli-{project}", raw, disk_format="raw")
    on_net = run(
        "server", "create", "--flavor", "1", "--image", image.id, "--wait",
        "--nic", f"net-id={net['id']}", f"cli-net-{project}", "-f", "json",
    )  # fmt: skip
    on_port = run(
        "server", "create", "--flavor", "1", "--image", image.id, "--wait",
        "--nic", f"port-id={port['id']}", f"cli-port-{project}", "-f", "json",
    )  # fmt: skip
    assert on_net["status"] == on_port["status"] == "ACTIVE"
    [made] = run("port", "list", "--server", on_net["id"], "-f", "json")
    assert made["Fixed IP Addresses"][0]["ip_address"] == "192.168.70.3"
    [given] = run("port", "list", "--server", on_port["id"], "-f", "json")
    assert given["ID"] == port["id"]
    shown = run("server", "show", on_port["id"], "-f", "json")
    assert shown["addresses"] == {f"cli-{project}": ["192.168.70.2"]}

    in_use = network_osc(rf, "network", "delete", f"cli-{project}", token=token)
    assert in_use.returncode != 0
    run("server", "delete", "--wait", on_net["id"], on_port["id"])
    kept = run("port", "show", port["id"], "-f", "json")
    assert kept["device_id"] == "" and kept["status"] == "DOWN"
    assert run("port", "list", "--network", f"cli-{project}", "-f", "json") == [
        {**given, "Status": "DOWN"}
    ]
    run("port", "delete", port["id"])
    run("network", "delete", f"cli-{project}")
    gone = network_osc(rf, "network", "show", net["id"], token=token)
    assert gone.returncode != 0 and "No Network found" in gone.stderr
