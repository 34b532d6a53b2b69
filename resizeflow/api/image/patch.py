"""Glance's image update: a JSON patch (RFC 6902 subset) of ``add``, ``replace`` and ``remove``.

Each operation names one top-level field (``/name``, ``/min_disk``) or extra
property (``/os_command_line``); ``/tags`` takes a whole list. The patched
image is validated as a whole against the image schema before anything is
written, so a patch applies entirely or not at all.
"""

from __future__ import annotations

from typing import Any

from resizeflow.api.image.faults import GlanceFault
from resizeflow.api.image.schema import BASE, check_writable, validate

MEDIA_TYPES = (
    "application/openstack-images-v2.0-json-patch",
    "application/openstack-images-v2.1-json-patch",
)
OPERATIONS = ("add", "remove", "replace")
# Only a queued image (no data yet) may change what its data is.
FORMAT_KEYS = ("disk_format", "container_format")


def _pointer(raw: Any) -> str:
    if not isinstance(raw, str):
        raise GlanceFault(400, "Unable to find 'path' in JSON Schema change")
    if not raw.startswith("/"):
        raise GlanceFault(400, f'Pointer `{raw}` does not start with "/".')
    if "//" in raw:
        raise GlanceFault(400, f'Pointer `{raw}` contains adjacent "/".')
    if len(raw) > 1 and raw.endswith("/"):
        raise GlanceFault(400, f'Pointer `{raw}` end with "/".')
    key = raw[1:].replace("~1", "/").replace("~0", "~")
    if not key or "/" in raw[1:]:
        raise GlanceFault(400, f"Invalid JSON pointer for this resource: '{raw}'")
    return key


def apply(image: dict[str, Any], changes: Any, status: str) -> dict[str, Any]:
    """The image's writable fields and properties after ``changes``; raises GlanceFault."""
    if not isinstance(changes, list):
        raise GlanceFault(400, "Request body must be a JSON array of operation objects.")
    result = dict(image)
    for change in changes:
        if not isinstance(change, dict):
            raise GlanceFault(400, "Operations must be JSON objects.")
        op = change.get("op")
        if op not in OPERATIONS:
            raise GlanceFault(
                400,
                f"Invalid operation: `{op}`. It must be one of the following: "
                f"{', '.join(OPERATIONS)}.",
            )
        key = _pointer(change.get("path"))
        check_writable(key)
        if op != "remove" and "value" not in change:
            raise GlanceFault(400, f'Operation "{op}" requires a member named "value".')
        if key in FORMAT_KEYS and status != "queued":
            raise GlanceFault(403, f"Attribute {key} can be only replaced for a queued image.")
        if op == "remove":
            if key in BASE:
                raise GlanceFault(403, f"Property {key} may not be removed.")
            if key not in result:
                raise GlanceFault(409, f"Property {key} does not exist.")
            del result[key]
        elif op == "add" and key not in BASE and key in result:
            raise GlanceFault(409, f"Property {key} already present.")
        else:
            result[key] = change["value"]
    validate(result)
    return result
