"""The Networking API's pure parts: allocation pools, and reading attributes and filters."""

from __future__ import annotations

import pytest

from resizeflow.api.network import schema
from resizeflow.openstack.neutron import allocation_pools
from resizeflow.openstack.neutron_errors import BadRequest, InvalidInput


@pytest.mark.parametrize(
    ("cidr", "gateway", "pools"),
    [
        ("10.0.0.0/24", "10.0.0.1", (("10.0.0.2", "10.0.0.254"),)),
        ("10.0.0.0/24", "10.0.0.100", (("10.0.0.1", "10.0.0.99"), ("10.0.0.101", "10.0.0.254"))),
        ("10.0.0.0/24", "10.0.0.254", (("10.0.0.1", "10.0.0.253"),)),
        ("10.0.0.0/24", None, (("10.0.0.1", "10.0.0.254"),)),
        ("10.0.0.0/31", None, (("10.0.0.0", "10.0.0.1"),)),
    ],
)
def test_the_pool_is_the_host_addresses_but_the_gateway(
    cidr: str, gateway: str | None, pools: tuple[tuple[str, str], ...]
) -> None:
    assert allocation_pools(cidr, gateway) == pools


def test_a_mac_is_a_unicast_one_written_in_lower_case_with_colons() -> None:
    assert schema.mac_address("02-00-00-AA-BB-CC") == "02:00:00:aa:bb:cc"
    for bad in ("01:00:5e:00:00:01", "00:00:00:00:00:00", "02:00:00:aa:bb", 7):
        with pytest.raises(BadRequest, match="Invalid input for mac_address"):
            schema.mac_address(bad)


def test_a_cidr_is_ipv4_with_its_host_bits_cleared() -> None:
    assert str(schema.cidr("192.168.1.77/24")) == "192.168.1.0/24"
    with pytest.raises(BadRequest, match="is not a valid IP subnet"):
        schema.cidr("192.168.1.77")
    with pytest.raises(InvalidInput):
        schema.cidr("fd00::/64")
    with pytest.raises(InvalidInput, match="IPv6"):
        schema.ip_version(6)


def test_filters_read_values_and_fields_and_ignore_the_unknown() -> None:
    got = schema.listing(
        [("shared", "True"), ("fields", "id,name"), ("fields", "mtu"), ("tenant_id", "p"),
         ("sort_key", "name")],
        schema.NETWORK_QUERY,
    )  # fmt: skip
    assert got.filters == {"shared": [True], "project_id": ["p"]}
    assert got.fields == ("id", "name", "mtu")
    ports = schema.listing([("fixed_ips", "ip_address=10.0.0.5")], schema.PORT_QUERY)
    assert ports.filters == {"ip_address": ["10.0.0.5"]}
    # binding:host_id is an admin's filter: the table a non-admin gets lacks it.
    assert schema.listing([("binding:host_id", "h")], schema.PORT_QUERY).filters == {}
    with pytest.raises(BadRequest, match="cannot be converted to boolean"):
        schema.listing([("shared", "maybe")], schema.NETWORK_QUERY)
