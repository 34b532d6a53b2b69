"""An image as Glance v2 shows it, and the listing's filters, order and pages."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any
from urllib.parse import urlencode

from resizeflow.api.image.faults import GlanceFault
from resizeflow.openstack.images import ImageMeta, isotime

# Glance's limit_param_default and api_limit_max.
DEFAULT_LIMIT = 25
MAX_LIMIT = 1000
SORT_KEYS = (
    "name", "status", "container_format", "disk_format", "size", "id", "created_at", "updated_at",
)  # fmt: skip


def show(m: ImageMeta) -> dict[str, Any]:
    href = f"/v2/images/{m.id}"
    return {
        **m.properties,
        "name": m.name,
        "disk_format": m.disk_format,
        "container_format": m.container_format,
        "visibility": m.visibility,
        "size": m.size,
        "virtual_size": m.virtual_size,
        "status": m.status,
        "checksum": m.checksum,
        "protected": m.protected,
        "min_ram": m.min_ram,
        "min_disk": m.min_disk,
        "owner": m.owner,
        "os_hidden": False,
        "os_hash_algo": m.os_hash_algo,
        "os_hash_value": m.os_hash_value,
        "id": m.id,
        "created_at": isotime(m.created_at),
        "updated_at": isotime(m.updated_at or m.created_at),
        "tags": list(m.tags),
        "self": href,
        "file": f"{href}/file",
        "schema": "/v2/schemas/image",
    }


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise GlanceFault(400, "limit param must be an integer") from None
    if limit < 0:
        raise GlanceFault(400, "limit param must be positive")
    return min(limit, MAX_LIMIT)


def _sorting(params: Mapping[str, list[str]]) -> list[tuple[str, bool]]:
    """(key, descending) pairs, from ``sort=k:dir,...`` or ``sort_key``/``sort_dir``."""
    pairs: list[tuple[str, str]] = []
    if "sort" in params:
        if "sort_key" in params or "sort_dir" in params:
            raise GlanceFault(400, "Old and new sorting syntax cannot be combined")
        for item in params["sort"][-1].strip().split(","):
            key, _, direction = item.partition(":")
            pairs.append((key.strip(), direction.strip() or "desc"))
    else:
        keys, dirs = params.get("sort_key", []), params.get("sort_dir", [])
        if len(dirs) > 1 and len(dirs) != len(keys):
            raise GlanceFault(400, "Number of sort dirs does not match the number of sort keys")
        keys = keys or ["created_at"]
        dirs = dirs or ["desc"]
        # One sort_dir applies to every key; several pair up with the keys.
        pairs = [(k.strip(), dirs[i if len(dirs) > 1 else 0].strip()) for i, k in enumerate(keys)]
    for key, direction in pairs:
        if key not in SORT_KEYS:
            raise GlanceFault(
                400,
                f"Invalid sort key: {key}. "
                f"It must be one of the following: {', '.join(SORT_KEYS)}.",
            )
        if direction not in ("asc", "desc"):
            raise GlanceFault(400, f"Invalid sort direction: {direction}")
    # NOTE: the id last, as Glance adds it, so that a marker names one place in the order.
    return [(k, d == "desc") for k, d in pairs] + [("id", pairs[-1][1] == "desc")]


def _sort_value(m: ImageMeta, key: str) -> tuple[bool, Any]:
    value = getattr(m, key)
    return (value is not None, value if value is not None else "")


def _sorted(images: list[ImageMeta], order: list[tuple[str, bool]]) -> list[ImageMeta]:
    for key, descending in reversed(order):  # a stable sort, least significant key first
        images = sorted(images, key=partial(_sort_value, key=key), reverse=descending)
    return images


def _size_bound(params: Mapping[str, list[str]], name: str) -> int | None:
    if name not in params:
        return None
    raw = params[name][-1]
    try:
        return int(raw)
    except ValueError:
        raise GlanceFault(400, "Unable to filter on a range with a non-numeric value.") from None


def _matches(m: ImageMeta, params: Mapping[str, list[str]]) -> bool:
    for key, values in params.items():
        want = values[-1]
        if key in ("name", "status", "disk_format", "container_format", "owner", "id"):
            if str(getattr(m, key)) != want:
                return False
        elif key == "protected":
            if m.protected != (want == "true"):
                return False
        elif key == "tag":
            if not set(values) <= set(m.tags):
                return False
        elif key in ("size_min", "size_max", "visibility", "member_status", "os_hidden"):
            continue  # handled by the caller
        elif m.properties.get(key) != want:
            return False  # any other parameter is an extra property to match
    size_min, size_max = _size_bound(params, "size_min"), _size_bound(params, "size_max")
    if size_min is not None and (m.size is None or m.size < size_min):
        return False
    return size_max is None or (m.size is not None and m.size <= size_max)


def _visible(m: ImageMeta, visibility: str | None, project: str, admin: bool) -> bool:
    if not m.visible_to(project, admin):
        return False
    if visibility is None or visibility == "all":
        # By default another project's community images are not listed, as in Glance.
        return visibility == "all" or admin or m.visibility != "community" or m.owner == project
    return m.visibility == visibility


_PAGING = ("limit", "marker", "sort", "sort_key", "sort_dir")


def page(
    images: list[ImageMeta], params: Mapping[str, list[str]], project: str, admin: bool
) -> dict[str, Any]:
    """Glance's ``GET /v2/images``: filtered, sorted, one page, with ``first`` and ``next``."""
    visibility = params.get("visibility", [None])[-1]
    if visibility and visibility not in ("community", "public", "private", "shared", "all"):
        raise GlanceFault(400, f"Invalid visibility value: {visibility}")
    if "changes-since" in params:
        raise GlanceFault(400, 'The "changes-since" filter is no longer available on v2.')
    # Glance reads os_hidden in any case, protected only in lower case.
    flags = {"protected": params.get("protected", ["false"])[-1]}
    flags["os_hidden"] = params.get("os_hidden", ["false"])[-1].lower()
    for flag, value in flags.items():
        if value not in ("true", "false"):
            raise GlanceFault(
                400,
                f"Invalid value '{value}' for '{flag}' filter. Valid values are 'true' or 'false'.",
            )
    limit = _limit(params.get("limit", [None])[-1])
    order = _sorting(params)
    filters = {k: v for k, v in params.items() if k not in _PAGING}
    chosen = [
        m
        for m in images
        if _visible(m, visibility, project, admin)
        and _matches(m, filters)
        # No image here is hidden: asking for the hidden ones finds none.
        and flags["os_hidden"] == "false"
    ]
    chosen = _sorted(chosen, order)
    marker = params.get("marker", [None])[-1]
    if marker is not None:
        ids = [m.id for m in chosen]
        if marker not in ids:
            known = next((m for m in images if m.id == marker), None)
            if known is None or not known.visible_to(project, admin):
                raise GlanceFault(400, f"No image found with ID {marker}")
            # A visible marker outside the filter: its place in the order still counts.
            chosen = _sorted([*chosen, known], order)
            ids = [m.id for m in chosen]
        chosen = chosen[ids.index(marker) + 1 :]
    shown = chosen[:limit]
    query = [(k, v) for k, vs in params.items() if k != "marker" for v in vs]
    body: dict[str, Any] = {
        "images": [show(m) for m in shown],
        "first": "/v2/images" + (f"?{urlencode(query)}" if query else ""),
        "schema": "/v2/schemas/images",
    }
    # NOTE: as Glance, a full page has a next link, even when nothing follows it.
    if shown and len(shown) == limit:
        body["next"] = "/v2/images?" + urlencode([*query, ("marker", shown[-1].id)])
    return body
