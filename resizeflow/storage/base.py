"""What a block-storage backend does, as a small Protocol over frozen values.

The Cinder service (:mod:`resizeflow.openstack.cinder`) and, through it, the
API and the compute steps see only this. The storage host's own backend
(:mod:`resizeflow.storage.qsd`) implements it, and so does the client that
reaches that backend over the broker (:mod:`resizeflow.storage.client`); a
real Cinder (openstacksdk plus os-brick) would be one more implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

GIB = 1024**3


@dataclass(frozen=True)
class ConnectionInfo:
    """How one host reaches one volume: Cinder's ``connection_info`` for an NBD export.

    The export name is the capability: it is unguessable, made for this host
    only, and removed when the host's connection is terminated.
    """

    host: str
    port: int
    name: str
    volume_id: str
    access_mode: str = "rw"
    driver_volume_type: str = "nbd"

    def to_dict(self) -> dict[str, Any]:
        """The Cinder-shaped dict the virt driver and the attachments API receive."""
        return {
            "driver_volume_type": self.driver_volume_type,
            "data": {
                "host": self.host,
                "port": self.port,
                "name": self.name,
                "volume_id": self.volume_id,
                "access_mode": self.access_mode,
            },
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ConnectionInfo:
        data = raw["data"]
        return cls(
            host=str(data["host"]),
            port=int(data["port"]),
            name=str(data["name"]),
            volume_id=str(data["volume_id"]),
            access_mode=str(data.get("access_mode", "rw")),
            driver_volume_type=str(raw["driver_volume_type"]),
        )

    @property
    def url(self) -> str:
        """The export as QEMU's tools name it (``qemu-img info nbd://...``)."""
        return f"nbd://{self.host}:{self.port}/{self.name}"


@dataclass(frozen=True)
class Capacity:
    """What the storage host can still give: bytes that no volume has been promised."""

    total_bytes: int
    free_bytes: int

    @property
    def free_gb(self) -> int:
        return self.free_bytes // GIB


class BlockStorage(Protocol):
    """A storage host's volumes and the per-host connections to them.

    Every operation is idempotent: creating a volume that exists with that
    size, deleting one that is gone, initializing a connection that exists
    (the same ``ConnectionInfo`` comes back) and terminating one that does not
    exist all succeed without a second effect, so a redelivered step may call
    them again.
    """

    def create_volume(self, volume_id: str, size_gb: int) -> None: ...

    def delete_volume(self, volume_id: str) -> None:
        """Terminate every connection to the volume, then remove its data."""
        ...

    def initialize_connection(self, volume_id: str, host: str) -> ConnectionInfo: ...

    def terminate_connection(self, volume_id: str, host: str) -> None:
        """Remove ``host``'s access now: a client it has connected is cut off."""
        ...

    def connections(self, volume_id: str) -> list[str]:
        """The hosts that can reach the volume now, sorted."""
        ...

    def capacity(self) -> Capacity: ...
