"""The Block Storage API's pure rules: its versions, its paths, the connection_info shape."""

from __future__ import annotations

import pytest

from resizeflow import errors
from resizeflow.api import volume_version
from resizeflow.api.microversion import Version
from resizeflow.api.middleware import strip_project_id
from resizeflow.storage.base import ConnectionInfo


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, Version(3, 0)),
        ({"openstack-api-version": "volume 3.27"}, Version(3, 27)),
        ({"openstack-api-version": "compute 2.90, volume 3.44"}, Version(3, 44)),
        ({"openstack-api-version": "compute 2.90"}, Version(3, 0)),
        ({"openstack-volume-microversion": "3.50"}, Version(3, 50)),
        ({"openstack-api-version": "volume latest"}, Version(*volume_version.MAX_VERSION)),
    ],
)
def test_the_volume_version_asked_for(headers: dict[str, str], expected: Version) -> None:
    assert volume_version.negotiate(headers) == expected


@pytest.mark.parametrize(("raw", "code"), [("3.61", 406), ("2.1", 406), ("3.x", 400)])
def test_a_volume_version_not_served_is_refused(raw: str, code: int) -> None:
    with pytest.raises(errors.ResizeflowError) as info:
        volume_version.negotiate({"openstack-api-version": f"volume {raw}"})
    assert info.value.code == code


@pytest.mark.parametrize(
    ("path", "routed"),
    [
        ("/volume/v3/p1/volumes", "/volume/v3/volumes"),
        ("/volume/v3/p1/volumes/detail", "/volume/v3/volumes/detail"),
        ("/volume/v3/p1/attachments/a", "/volume/v3/attachments/a"),
        ("/volume/v3/volumes", "/volume/v3/volumes"),
        ("/volume/v3/attachments", "/volume/v3/attachments"),
        ("/volume/v3/", "/volume/v3/"),
        ("/v2.1/p1/servers", "/v2.1/servers"),
    ],
)
def test_a_project_in_the_path_is_routed_without_it(path: str, routed: str) -> None:
    assert strip_project_id(path) == routed


def test_connection_info_is_cinders_shape_both_ways() -> None:
    info = ConnectionInfo(host="192.0.2.10", port=10809, name="n4m3", volume_id="v")
    raw = info.to_dict()
    assert raw == {
        "driver_volume_type": "nbd",
        "data": {
            "host": "192.0.2.10",
            "port": 10809,
            "name": "n4m3",
            "volume_id": "v",
            "access_mode": "rw",
        },
    }
    assert ConnectionInfo.from_dict(raw) == info
    assert info.url == "nbd://192.0.2.10:10809/n4m3"
