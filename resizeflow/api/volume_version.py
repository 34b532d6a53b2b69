"""Block Storage API microversions: what a ``/volume`` request asks for and what is honoured.

Cinder names its version ``volume 3.x`` in ``OpenStack-API-Version`` (or the
legacy ``OpenStack-Volume-microversion``); none asked is 3.0, ``latest`` the
maximum. The attachments API needs 3.27, its ``os-complete`` action 3.44.
"""

from __future__ import annotations

from collections.abc import Mapping

from resizeflow.api import microversion
from resizeflow.api.microversion import HEADER, Version

MIN_VERSION = (3, 0)
MAX_VERSION = (3, 60)
ATTACHMENTS = (3, 27)
ATTACHMENT_COMPLETE = (3, 44)
LEGACY_HEADER = "OpenStack-Volume-microversion"
PREFIX = "/volume"


def is_volume_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def negotiate(headers: Mapping[str, str]) -> Version:
    return microversion.choose(
        microversion.requested(headers, "volume", LEGACY_HEADER), MIN_VERSION, MAX_VERSION
    )


def response_headers(version: Version) -> dict[str, str]:
    return {HEADER: f"volume {version}", "Vary": HEADER}


def at_least(version: Version, wanted: tuple[int, int]) -> bool:
    return (version.major, version.minor) >= wanted
