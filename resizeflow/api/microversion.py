"""Compute API microversions: what a request asks for and what this API honours.

Every version from 2.1 to 2.96 is served; "Microversions" in docs/api.md lists
the ones that change a response or a request of the endpoints served here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from resizeflow import errors

MIN_VERSION = (2, 1)
MAX_VERSION = (2, 96)
HEADER = "OpenStack-API-Version"
LEGACY_HEADER = "X-OpenStack-Nova-API-Version"
_VERSION_RE = re.compile(r"^([1-9]\d*)\.([1-9]\d*|0)$")


class VersionNotAcceptable(errors.ResizeflowError):
    code = 406
    msg_fmt = (
        "Version %(version)s is not supported by the API. Minimum is %(min)s and maximum "
        "is %(max)s."
    )


def fmt(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int

    def at_least(self, minor: int) -> bool:
        return (self.major, self.minor) >= (2, minor)

    def __str__(self) -> str:
        return fmt((self.major, self.minor))


def requested(
    headers: Mapping[str, str], service: str = "compute", legacy: str = LEGACY_HEADER
) -> str | None:
    """The version of ``service`` a request names, from either header."""
    value = headers.get(HEADER.lower())
    if value is not None:
        for item in value.split(","):
            name, _, ver = item.strip().partition(" ")
            if name.lower() == service:
                return ver.strip()
    return headers.get(legacy.lower())


def negotiate(headers: Mapping[str, str]) -> Version:
    """The version to serve: the minimum when none is asked for, the maximum for 'latest'."""
    return choose(requested(headers), MIN_VERSION, MAX_VERSION)


def choose(raw: str | None, lowest: tuple[int, int], highest: tuple[int, int]) -> Version:
    """The version ``raw`` names within [lowest, highest]; None is lowest, 'latest' highest."""
    if raw is None:
        return Version(*lowest)
    if raw.strip().lower() == "latest":
        return Version(*highest)
    match = _VERSION_RE.match(raw.strip())
    if match is None:
        raise errors.Invalid(
            f"API Version String {raw} is of invalid format. Must be of format MajorNum.MinorNum."
        )
    asked = (int(match.group(1)), int(match.group(2)))
    if not lowest <= asked <= highest:
        raise VersionNotAcceptable(version=raw.strip(), min=fmt(lowest), max=fmt(highest))
    return Version(*asked)


def response_headers(version: Version) -> dict[str, str]:
    return {
        HEADER: f"compute {version}",
        LEGACY_HEADER: str(version),
        "Vary": f"{HEADER}, {LEGACY_HEADER}",
    }
