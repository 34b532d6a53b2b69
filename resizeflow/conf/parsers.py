"""The parsers of the settings' raw values: each takes the environment's string
and returns the value, or raises ValueError (or ConfigError) saying what is wrong,
which :class:`~resizeflow.conf.Settings` reports with the variable's name."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable

_HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_DNS_RE = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def _int(lo: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if lo is not None and value < lo:
            raise ValueError(f"must be >= {lo}")
        return value

    return parse


def _float(lo: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        if value < lo:
            raise ValueError(f"must be >= {lo}")
        return value

    return parse


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _host(raw: str) -> str:
    if not _HOST_RE.fullmatch(raw):
        raise ValueError("a host name is letters, digits, '.', '-' and '_', at most 63 characters")
    return raw


def _url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw == "" and "sqlite" in schemes:
            return raw  # the database default: SQLite under the state dir
        scheme = raw.split("://", 1)[0] if "://" in raw else ""
        if not scheme or scheme.split("+", 1)[0] not in schemes:
            raise ValueError(f"expected a URL with scheme {', '.join(schemes)}")
        return raw

    return parse


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return raw

    return parse


def _pool(raw: str) -> str:
    if raw not in {"threads", "prefork", "solo"}:
        raise ValueError("expected threads, prefork or solo")
    return raw


def _auth(raw: str) -> str:
    if raw not in {"noauth", "tokens", "keystone"}:
        raise ValueError("expected noauth, tokens or keystone")
    return raw


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be a TCP port, 0 to 65535")
    return value


def _tristate(raw: str) -> bool | None:
    """``auto`` (or empty) is None: decide at run time; otherwise a boolean override."""
    return None if raw.strip().lower() in {"", "auto"} else _bool(raw)


def _address(raw: str) -> str:
    """A migration address: an IP literal or a DNS name, or empty for the host name."""
    if raw == "":
        return raw
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        pass
    if not _DNS_RE.fullmatch(raw):
        raise ValueError("expected an IP address or a DNS name")
    return raw


def _transport(raw: str) -> str:
    """A disk transport, or ``auto`` (also empty): follow the hypervisor."""
    if raw.strip().lower() in {"", "auto"}:
        return "auto"
    if raw not in {"rsync", "scp", "local"}:
        raise ValueError("expected auto, rsync, scp or local")
    return raw


def _plain_path(raw: str) -> str:
    # ssh's -o values and rsync's -e command are split on whitespace, so a
    # path with blanks or quotes would be cut in two rather than fail cleanly.
    if any(c.isspace() or c in "'\"\\" for c in raw):
        raise ValueError("must not contain whitespace, quotes or backslashes")
    return raw


def _virt_type(raw: str) -> str:
    if raw not in {"", "kvm", "qemu", "test"}:
        raise ValueError("expected kvm, qemu or test (empty: detect)")
    return raw


def _cidr(raw: str) -> str:
    net = ipaddress.ip_network(raw, strict=True)
    if net.version != 4 or net.num_addresses < 8:
        raise ValueError("expected an IPv4 subnet of at least 8 addresses, e.g. 10.0.0.0/24")
    return str(net)


def _opt_int(raw: str) -> int | None:
    return None if raw == "" else _int(0)(raw)
