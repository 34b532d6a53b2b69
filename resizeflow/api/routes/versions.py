"""Version discovery at ``/`` and ``/v2.1/``, unauthenticated as in Nova."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from resizeflow.api.deps import Base
from resizeflow.api.microversion import MAX_VERSION, MIN_VERSION, fmt

router = APIRouter(tags=["versions"])


def version_doc(base: str) -> dict[str, Any]:
    return {
        "id": "v2.1",
        "status": "CURRENT",
        "version": fmt(MAX_VERSION),
        "min_version": fmt(MIN_VERSION),
        "updated": "2013-07-23T11:33:21Z",
        "links": [
            {"rel": "self", "href": f"{base}/v2.1/"},
            {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"},
        ],
        "media-types": [
            {
                "base": "application/json",
                "type": "application/vnd.openstack.compute+json;version=2.1",
            }
        ],
    }


def legacy_v2(base: str) -> dict[str, Any]:
    """Nova's entry for the v2.0 API, deprecated: listed as Nova lists it, not served here."""
    return {
        "id": "v2.0",
        "status": "DEPRECATED",
        "version": "",
        "min_version": "",
        "updated": "2025-07-04T12:00:00Z",
        "links": [{"rel": "self", "href": f"{base}/v2/"}],
    }


@router.get("/")
def versions(base: Base) -> dict[str, Any]:
    """Every API version, as Nova lists them: each with its self link only."""
    current = {k: v for k, v in version_doc(base).items() if k != "media-types"}
    current["links"] = current["links"][:1]
    return {"versions": [legacy_v2(base), current]}


@router.get("/v2.1")
@router.get("/v2.1/")
def current_version(base: Base) -> dict[str, Any]:
    """The v2.1 API and the microversions it honours."""
    return {"version": version_doc(base)}
