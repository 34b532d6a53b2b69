"""One host's connection to libvirt, and how its errors and states read.

The driver and both kinds of host (:mod:`resizeflow.virt.testdriver`,
:mod:`resizeflow.virt.realhost`) call libvirt through :class:`LibvirtConnection`:
it opens the connection lazily, once per process, and turns libvirt's errors
into resizeflow's, a broken connection being transient (the retry opens a new
one).
"""

from __future__ import annotations

import threading
import uuid as uuidlib
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import libvirt

from resizeflow.errors import InvalidUUID, TransientError, VirtError
from resizeflow.states import PowerState
from resizeflow.virt.base import DomainInfo

_TRANSIENT_CODES = frozenset(
    {
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_ERR_RPC,
        libvirt.VIR_ERR_INTERNAL_ERROR,
        libvirt.VIR_ERR_OPERATION_TIMEOUT,
    }
)
# The codes of a domain that is not (or no longer) defined.
MISSING = frozenset({libvirt.VIR_ERR_NO_DOMAIN})
# A shutdown or destroy of a domain that is not running.
NOT_RUNNING = MISSING | {libvirt.VIR_ERR_OPERATION_INVALID}
# A domain's persistent definition, rather than what it runs with.
XML_INACTIVE = libvirt.VIR_DOMAIN_XML_INACTIVE
_POWER_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: PowerState.NOSTATE,
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.SHUTDOWN,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.SUSPENDED,
}


def power_state(raw: int) -> PowerState:
    """Nova's power state of a libvirt domain state."""
    return _POWER_STATES.get(raw, PowerState.NOSTATE)


def canonical_uuid(value: str) -> str:
    """``value`` if it is a UUID in canonical lowercase form, else InvalidUUID."""
    try:
        canonical = str(uuidlib.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise InvalidUUID(uuid=value) from None
    if canonical != value:
        raise InvalidUUID(uuid=value)
    return canonical


def _silence(_opaque: Any, _err: Any) -> None:
    """Errors arrive as exceptions; libvirt's default handler would also print them."""


def _code(exc: Any) -> int:
    return int(exc.get_error_code() or 0)


def _translate(exc: Any) -> VirtError | TransientError:
    reason = exc.get_error_message() or str(exc)
    if _code(exc) in _TRANSIENT_CODES or exc.get_error_domain() == libvirt.VIR_FROM_RPC:
        return TransientError(reason=reason)
    return VirtError(reason=reason)


class LibvirtConnection:
    """The libvirt connection of one driver, shared by its threads."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._lock = threading.Lock()
        self._conn_obj: Any = None

    def conn(self) -> Any:
        with self._lock:
            if self._conn_obj is None:
                libvirt.registerErrorHandler(_silence, None)
                try:
                    self._conn_obj = libvirt.open(self.uri)
                except libvirt.libvirtError as exc:
                    raise _translate(exc) from exc
            return self._conn_obj

    def reset(self) -> None:
        with self._lock:
            conn, self._conn_obj = self._conn_obj, None
        if conn is not None:
            with suppress(libvirt.libvirtError):
                conn.close()

    def call(self, fn: Callable[..., Any], *args: Any, ok: frozenset[int] = frozenset()) -> Any:
        """``fn(*args)``; None if libvirt fails with a code in ``ok``."""
        try:
            return fn(*args)
        except libvirt.libvirtError as exc:
            if _code(exc) in ok:
                return None
            error = _translate(exc)
            if isinstance(error, TransientError):
                # A broken connection stays broken; the retry must open a new one.
                self.reset()
            raise error from exc

    def lookup(self, domain_uuid: str) -> Any:
        """The domain with this libvirt UUID; None if it is not defined."""
        return self.call(lambda: self.conn().lookupByUUIDString(domain_uuid), ok=MISSING)

    def define(self, xml: str) -> Any:
        """Define (or redefine) a domain from its XML."""
        return self.call(lambda: self.conn().defineXML(xml))

    def is_active(self, dom: Any) -> bool:
        """Whether the domain runs; False once it is gone."""
        return bool(self.call(dom.isActive, ok=MISSING))

    def live_xml(self, dom: Any) -> str | None:
        """The XML the domain runs with; None when it is not running (or gone)."""
        if not self.is_active(dom):
            return None
        xml: str | None = self.call(dom.XMLDesc, 0, ok=MISSING)
        return xml

    def state(self, dom: Any) -> PowerState:
        """The domain's power state; NOSTATE once it is gone."""
        raw = self.call(dom.state, ok=MISSING)
        return power_state(raw[0]) if raw else PowerState.NOSTATE

    def capabilities(self, virt_type: str) -> str | None:
        """libvirtd's domain capabilities for ``virt_type`` on x86_64; None if it has none."""
        xml: str | None = self.call(
            lambda: self.conn().getDomainCapabilities(None, "x86_64", None, virt_type, 0),
            ok=frozenset({libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_CONFIG_UNSUPPORTED}),
        )
        return xml

    def domains(self, instance_uuid: Callable[[str], str | None]) -> list[DomainInfo]:
        """The domains whose names ``instance_uuid`` maps to an instance's uuid."""
        result = []
        for dom in self.call(lambda: self.conn().listAllDomains(0)):
            # A domain undefined while we list it is simply skipped.
            info = self.call(lambda d=dom: (d.name(), d.info()), ok=MISSING)
            uuid = instance_uuid(info[0]) if info is not None else None
            if info is None or uuid is None:
                continue
            name, (state, max_kib, _cur, vcpus, _cpu) = info
            result.append(
                DomainInfo(uuid, name, power_state(state), int(vcpus), int(max_kib) // 1024)
            )
        return result
