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


@router.get("/")
def versions(base: Base) -> dict[str, Any]:
    """Every API version served here."""
    return {"versions": [version_doc(base)]}


@router.get("/v2.1")
@router.get("/v2.1/")
def current_version(base: Base) -> dict[str, Any]:
    """The v2.1 API and the microversions it honours."""
    return {"version": version_doc(base)}
