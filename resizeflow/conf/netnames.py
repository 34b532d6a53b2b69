"""The names of a network's devices on a host: its bridge and its VXLAN device.

Both come from templates (RESIZEFLOW_BRIDGE, RESIZEFLOW_VXLAN_DEVICE) with
``{vni}`` (the network's VXLAN id, so every network has its own) and
optionally ``{host}`` (so hosts that share one machine, as the tests' do,
keep apart). A Linux interface name holds at most 15 characters (IFNAMSIZ
less its NUL), so a template is checked at load against the longest VNI,
rather than found too long the day the thousandth network is plugged.
"""

from __future__ import annotations

import re
import string

from resizeflow.errors import ConfigError

# IFNAMSIZ is 16 bytes, the last one the terminating NUL.
IFNAME_MAX = 15
# VXLAN ids are 24 bits: the longest one, in decimal, is the widest a name gets.
MAX_VNI = 2**24 - 1
FIELDS = frozenset({"vni", "host"})


def check_template(template: str) -> str:
    """A device name template: ``{vni}`` in it, no other field than ``{host}``."""
    try:
        named = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"not a name template: {exc}") from None
    if "vni" not in named:
        raise ValueError("must contain {vni}: each network has a device of its own")
    if unknown := named - FIELDS:
        names = ", ".join(sorted(unknown))
        raise ValueError(f"unknown field(s) {names}; only {{vni}} and {{host}}")
    return template


def device_name(template: str, *, vni: int, host: str) -> str:
    """The device of network ``vni`` on ``host``."""
    return template.format(vni=vni, host=host)


def check_length(template: str, var: str, host: str) -> None:
    """Refuse a template whose name for the longest VNI on ``host`` is too long."""
    name = device_name(template, vni=MAX_VNI, host=host)
    if len(name) > IFNAME_MAX:
        raise ConfigError(
            f"{var}={template!r} gives {name!r} ({len(name)} characters) for VNI {MAX_VNI} "
            f"on host {host}: a Linux interface name holds at most {IFNAME_MAX}"
        )


def own_names(template: str, host: str) -> re.Pattern[str]:
    """What the template names on ``host``, for any VNI (group ``vni``): how a
    host tells its own devices, and the network each is for."""
    parts = []
    seen = False
    for literal, name, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if name == "vni":
            # The first {vni} is the network's; a repeat must be the same digits.
            parts.append(r"(?P=vni)" if seen else r"(?P<vni>[0-9]+)")
            seen = True
        elif name == "host":
            parts.append(re.escape(host))
    return re.compile("".join(parts))
