"""Neutron's errors: the type name, code and message its API answers each with.

Messages are Neutron's own where Neutron has one, so clients that match on
them keep working.
"""

from __future__ import annotations

from typing import ClassVar

from resizeflow.errors import ResizeflowError


class NeutronError(ResizeflowError):
    """An error the Networking API answers with Neutron's type name, code and message."""

    kind: ClassVar[str] = "NeutronError"


class NetworkNotFound(NeutronError):
    code, kind = 404, "NetworkNotFound"
    msg_fmt = "Network %(id)s could not be found."


class SubnetNotFound(NeutronError):
    code, kind = 404, "SubnetNotFound"
    msg_fmt = "Subnet %(id)s could not be found."


class PortNotFound(NeutronError):
    code, kind = 404, "PortNotFound"
    msg_fmt = "Port %(id)s could not be found."


class NetworkInUse(NeutronError):
    code, kind = 409, "NetworkInUse"
    msg_fmt = (
        "Unable to complete operation on network %(id)s. "
        "There are one or more ports still in use on the network."
    )


class SubnetInUse(NeutronError):
    code, kind = 409, "SubnetInUse"
    msg_fmt = (
        "Unable to complete operation on subnet %(id)s: "
        "One or more ports have an IP allocation from this subnet."
    )


class PortBoundToServer(NeutronError):
    code, kind = 409, "PortInUse"
    msg_fmt = (
        "Port %(id)s is the NIC of server %(server)s and cannot be deleted here: "
        "interfaces are not detached from servers; delete the server instead."
    )


class MacAddressInUse(NeutronError):
    code, kind = 409, "MacAddressInUse"
    msg_fmt = "Unable to complete operation for network %(net)s. The mac address %(mac)s is in use."


class IpAddressAlreadyAllocated(NeutronError):
    code, kind = 409, "IpAddressAlreadyAllocated"
    msg_fmt = "IP address %(ip)s already allocated in subnet %(subnet)s"


class IpAddressGenerationFailure(NeutronError):
    code, kind = 409, "IpAddressGenerationFailure"
    msg_fmt = "No more IP addresses available on network %(net)s."


class InvalidInput(NeutronError):
    code, kind = 400, "InvalidInput"
    msg_fmt = "Invalid input for operation: %(reason)s."


class BadRequest(NeutronError):
    code, kind = 400, "HTTPBadRequest"
    msg_fmt = "%(reason)s"


class InvalidIpForSubnet(NeutronError):
    code, kind = 400, "InvalidIpForSubnet"
    msg_fmt = "IP address %(ip)s is not a valid IP for the specified subnet."


class InvalidIpForNetwork(NeutronError):
    code, kind = 400, "InvalidIpForNetwork"
    msg_fmt = "IP address %(ip)s is not a valid IP for any of the subnets on the specified network."


class PolicyNotAuthorized(NeutronError):
    code, kind = 403, "PolicyNotAuthorized"
    msg_fmt = "(rule:%(action)s) is disallowed by policy"
