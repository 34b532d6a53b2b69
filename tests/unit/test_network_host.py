"""The pure parts of the network host side: names, flood lists, dnsmasq's files and argv."""

from __future__ import annotations

from pathlib import Path

import pytest

from resizeflow.conf import Settings
from resizeflow.conf.netnames import check_length, check_template, device_name, own_names
from resizeflow.dhcp import agent, dnsmasq
from resizeflow.errors import ConfigError
from resizeflow.openstack.base import TunnelPeer
from resizeflow.virt.vifs import HostNetworking, flood_changes, parse_flood_entries

V = "RESIZEFLOW_"


def test_templates_name_a_device_per_network_and_host() -> None:
    assert device_name("brq{vni}", vni=1001, host="cn-1") == "brq1001"
    assert device_name("b{host}-{vni}", vni=7, host="cn") == "bcn-7"
    assert check_template("vxlan-{vni}") == "vxlan-{vni}"
    for bad, why in (("br0", "must contain"), ("b{vni}{uuid}", "unknown field"), ("b{", "not")):
        with pytest.raises(ValueError, match=why):
            check_template(bad)


def test_the_longest_vni_must_fit_an_interface_name() -> None:
    check_length("vxlan--{vni}", V + "VXLAN_DEVICE", "h")  # 15 characters fit
    with pytest.raises(ConfigError, match=r"'vxlan---16777215' \(16 characters\)"):
        check_length("vxlan---{vni}", V + "VXLAN_DEVICE", "h")


def test_a_name_of_sixteen_characters_is_refused_at_load() -> None:
    assert Settings.from_env({V + "VXLAN_DEVICE": "vxlan--{vni}"}).vxlan_device == "vxlan--{vni}"
    with pytest.raises(ConfigError, match="at most 15") as info:
        Settings.from_env({V + "VXLAN_DEVICE": "vxlan---{vni}"})
    assert "VXLAN_DEVICE='vxlan---{vni}'" in info.value.message
    with pytest.raises(ConfigError, match="on host compute-12345"):
        Settings.from_env({V + "BRIDGE": "b{host}{vni}", V + "HOST": "compute-12345"})


def test_a_host_tells_its_own_bridges_and_their_networks() -> None:
    net = HostNetworking(host="cn-1", bridge_template="b{host}x{vni}")
    assert net.bridge(42) == "bcn-1x42" and net.vni_of("bcn-1x42") == 42
    assert net.vni_of("bcn-2x42") is None and not net.owns_bridge("bcn-1x")
    assert own_names("brq{vni}", "h").fullmatch("brq1001x") is None
    assert HostNetworking(host="h").vni_of("brq16777215") == 16777215


def test_a_host_floods_to_every_endpoint_but_its_own() -> None:
    net = HostNetworking(host="a", local_ip="127.0.0.11", port=4790)
    peers = [
        TunnelPeer("a", "127.0.0.11", 4790),
        TunnelPeer("b", "127.0.0.12", 4791),
        TunnelPeer("c", "127.0.0.13", 4789),
        # The same endpoint under another name (an old host name): still this host.
        TunnelPeer("a-old", "127.0.0.11", 4790),
    ]
    assert net.remotes(peers) == {("127.0.0.12", 4791), ("127.0.0.13", 4789)}


def test_flood_entries_are_read_with_the_devices_own_port_where_omitted() -> None:
    shown = (
        '[{"mac":"00:00:00:00:00:00","dst":"127.0.0.12","port":4791,"flags":["self"]},'
        '{"mac":"00:00:00:00:00:00","dst":"127.0.0.13","flags":["self"]},'
        '{"mac":"fa:16:3e:00:00:01","dst":"127.0.0.14","flags":["self"]},'
        '{"mac":"33:33:00:00:00:01","flags":["self"]}]'
    )
    assert parse_flood_entries(shown, 4790) == {("127.0.0.12", 4791), ("127.0.0.13", 4790)}
    assert parse_flood_entries("", 4789) == set()


def test_flood_changes_add_the_new_peers_and_remove_the_gone() -> None:
    current = {("127.0.0.12", 4791), ("127.0.0.13", 4789)}
    wanted = {("127.0.0.13", 4789), ("127.0.0.14", 4789), ("127.0.0.12", 4792)}
    add, gone = flood_changes(current, wanted)
    assert add == {("127.0.0.14", 4789), ("127.0.0.12", 4792)}
    assert gone == {("127.0.0.12", 4791)}
    assert flood_changes(wanted, wanted) == (set(), set())


def test_the_hosts_file_is_one_mac_and_ip_a_line_sorted() -> None:
    twice = ("fa:16:3e:00:00:01", "10.0.0.2")
    text = dnsmasq.hosts_text([("FA:16:3E:00:00:02", "10.0.0.3"), twice, twice])
    assert text == "fa:16:3e:00:00:01,10.0.0.2\nfa:16:3e:00:00:02,10.0.0.3\n"
    assert dnsmasq.hosts_text([]) == ""


def test_the_hosts_file_is_replaced_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    assert dnsmasq.write_hosts(path, "a,1\n") is True
    assert dnsmasq.write_hosts(path, "a,1\n") is False
    assert dnsmasq.write_hosts(path, "") is True and path.read_text() == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hosts"]


def _cfg(tmp_path: Path, gateway: str | None) -> dnsmasq.DhcpConfig:
    return dnsmasq.DhcpConfig("ns-0123", "10.1.0.0/22", gateway, 1450, tmp_path)


def test_dnsmasq_serves_dhcp_only_to_known_macs_on_its_one_interface(tmp_path: Path) -> None:
    argv = dnsmasq.argv(_cfg(tmp_path, "10.1.0.1"))
    assert argv[0] == "dnsmasq"
    for flag in (
        "--port=0",
        "--bind-interfaces",
        "--interface=ns-0123",
        "--conf-file=/dev/null",
        "--dhcp-range=set:net,10.1.0.0,static,255.255.252.0,86400s",
        f"--dhcp-hostsfile={tmp_path / 'hosts'}",
        f"--pid-file={tmp_path / 'pid'}",
        f"--dhcp-leasefile={tmp_path / 'leases'}",
        "--dhcp-option-force=tag:net,option:router,10.1.0.1",
        "--dhcp-option-force=tag:net,option:mtu,1450",
    ):
        assert flag in argv, flag
    # No gateway: an empty router option, so no router at all rather than dnsmasq's own.
    none = dnsmasq.argv(_cfg(tmp_path, None))
    assert "--dhcp-option-force=tag:net,option:router" in none
    assert not any(a.startswith("--dhcp-option-force=tag:net,option:router,") for a in none)


def test_the_agents_names_fit_where_they_go() -> None:
    port = "0123456789abcdef-0000"
    inside, outside = agent.veth_names(port)
    assert (inside, outside) == ("ns-0123456789a", "tap0123456789a")
    assert max(len(inside), len(outside)) <= 15
    net = "deadbeef-1111-2222-3333-444444444444"
    assert agent.namespace("network-1", net) == "rfdhcp-network-1-deadbeef"
    assert agent.device_id("network-1", net) == f"dhcp-network-1-{net}"
    assert agent.namespace("n", net).startswith(agent.namespace_prefix("n"))
