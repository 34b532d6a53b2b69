"""What an image's fields may hold, as Glance's image schema says, and which are not writable.

Glance validates a create, and each image a patch would produce, against
its JSON schema, and words a failure ``Provided object does not match
schema 'image': <jsonschema's reason>``. Extra properties are strings.
"""

from __future__ import annotations

from typing import Any

import jsonschema

from resizeflow.api.image.faults import GlanceFault
from resizeflow.openstack.images import CONTAINER_FORMATS, DISK_FORMATS, VISIBILITIES

UUID_PATTERN = (
    "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"
)
IMAGE_SCHEMA: dict[str, Any] = {
    "name": "image",
    "type": "object",
    "properties": {
        "id": {"type": "string", "pattern": UUID_PATTERN},
        "name": {"type": ["null", "string"], "maxLength": 255},
        "visibility": {"type": "string", "enum": list(VISIBILITIES)},
        "protected": {"type": "boolean"},
        "owner": {"type": ["null", "string"], "maxLength": 255},
        "container_format": {
            "type": ["null", "string"],
            "enum": [None, *CONTAINER_FORMATS],
        },
        "disk_format": {"type": ["null", "string"], "enum": [None, *DISK_FORMATS]},
        "min_ram": {"type": "integer"},
        "min_disk": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 255}},
    },
    "additionalProperties": {"type": "string"},
}
# Fields the server sets: a request that sets one is forbidden.
READONLY = (
    "created_at", "updated_at", "status", "checksum", "size", "virtual_size", "direct_url",
    "self", "file", "schema", "id", "os_hash_algo", "os_hash_value", "stores",
)  # fmt: skip
RESERVED = ("location", "deleted", "deleted_at")
# Fields of the image itself; any other key is an extra property.
BASE = (
    "name", "disk_format", "container_format", "visibility", "protected", "owner",
    "min_ram", "min_disk", "tags",
)  # fmt: skip


def validate(image: dict[str, Any]) -> None:
    try:
        jsonschema.validate(image, IMAGE_SCHEMA)
    except jsonschema.ValidationError as exc:
        raise GlanceFault(
            400, f"Provided object does not match schema 'image': {exc.message}"
        ) from None


def check_writable(key: str) -> None:
    if key in READONLY:
        raise GlanceFault(403, f"Attribute '{key}' is read-only.")
    if key in RESERVED or key.startswith("os_glance"):
        raise GlanceFault(403, f"Attribute '{key}' is reserved.")
