"""Where a compute host keeps its instances, and what it calls their domains.

Each instance lives in ``<instances_dir>/<uuid>``, with ``<uuid>_resize``
beside it while a resize keeps the old disks, and the ``libvirt.xml`` it was
last defined from. Its domain is named from Nova's ``instance_name_template``.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid as uuidlib
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from resizeflow.errors import ConfigError, InvalidUUID
from resizeflow.virt.connection import canonical_uuid

RESIZE_SUFFIX = "_resize"
# The root disk's file in an instance dir, on the test driver and on a real host alike.
ROOT_DISK = "disk"
CONSOLE_LOG = "console.log"
DOMAIN_XML_FILE = "libvirt.xml"
_CLEANUP_ATTEMPTS = 5
_CLEANUP_DELAY = 0.2


@dataclass(frozen=True)
class HostLayout:
    """One host's instance directories and domain names."""

    instances_dir: Path
    hostname: str
    name_template: str = "instance-{uuid}"

    def __post_init__(self) -> None:
        if "{uuid}" not in self.name_template:
            raise ConfigError(f"instance name template {self.name_template!r} lacks {{uuid}}")

    def dir(self, uuid: str, suffix: str = "") -> Path:
        """The instance's directory (or its ``_resize`` one); InvalidUUID for anything else."""
        path = (self.instances_dir / (canonical_uuid(uuid) + suffix)).resolve()
        if path.parent != self.instances_dir:
            raise InvalidUUID(uuid=uuid)
        return path

    def domain_name(self, uuid: str) -> str:
        """Nova's ``instance_name_template``, filled in for this host."""
        return self.name_template.format(uuid=uuid, host=self.hostname)

    def domain_uuid(self, uuid: str) -> str:
        """The libvirt domain's UUID: the instance's, as in Nova.

        NOTE: unless the name template holds ``{host}``: then one libvirtd
        serves several compute hosts (a test machine, the demo), and the
        source and dest domains of one resize must not be the same domain,
        so each host's domain gets a UUID derived from its name.
        """
        if "{host}" not in self.name_template:
            return uuid
        return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, "libvirt:" + self.domain_name(uuid)))

    def instance_uuid(self, name: str) -> str | None:
        """The instance a domain of this host belongs to, from its name; None if not ours."""
        candidate = name[-36:]
        try:
            canonical_uuid(candidate)
        except InvalidUUID:
            return None
        return candidate if self.domain_name(candidate) == name else None

    def dir_uuids(self, suffix: str) -> list[str]:
        """The instances with a directory named ``<uuid><suffix>`` here."""
        if not self.instances_dir.is_dir():
            return []
        found = []
        for entry in sorted(self.instances_dir.iterdir()):
            if entry.is_dir() and entry.name.endswith(suffix):
                with suppress(InvalidUUID):
                    found.append(canonical_uuid(entry.name.removesuffix(suffix)))
        return found


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def rmtree_with_retries(path: Path) -> None:
    # Mirrors Nova's _cleanup_resize: NFS and busy files can fail a first rmtree.
    for attempt in range(1, _CLEANUP_ATTEMPTS + 1):
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if attempt == _CLEANUP_ATTEMPTS:
                raise
            time.sleep(_CLEANUP_DELAY)


def read_tail(base: Path, wanted: int) -> bytes:
    """The last ``wanted`` bytes of a log and the files it was rotated into.

    As Nova reads a console log: ``base``, then ``base.0``, ``base.1``...,
    newest text last; nothing yet written is an empty log.
    """
    output, path, n = b"", base, 0
    while wanted > 0 and path.exists():
        with path.open("rb") as log_file:
            size = log_file.seek(0, os.SEEK_END)
            log_file.seek(max(0, size - wanted))
            chunk = log_file.read(wanted)
        output = chunk + output
        wanted -= len(chunk)
        path, n = base.with_name(f"{base.name}.{n}"), n + 1
    return output
