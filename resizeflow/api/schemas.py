"""Request bodies, after Nova's JSON schemas: unknown properties are refused."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from resizeflow import errors
from resizeflow.api.faults import HTTPFault, body_loc, field_value, invalid_input, shown_value
from resizeflow.api.microversion import Version

Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]
MetaKey = Annotated[str, StringConstraints(min_length=1, max_length=255)]
MetaValue = Annotated[str, StringConstraints(max_length=255)]
FlavorRef = (
    Annotated[str, StringConstraints(min_length=1, max_length=255)]
    | Annotated[StrictInt, Field(ge=0)]
)
Count = Annotated[StrictInt, Field(ge=1, le=1)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=60, pattern=r"^[^,/]*$")]
Fqdn = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9.:_-]*$")
]

# Nova's parameter_types.fqdn, as its migrate schema (2.56) takes a host.
NovaFqdn = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[a-zA-Z0-9-._]*$")
]


# os-getConsoleOutput's length written as a string.
CONSOLE_LENGTH = "^-?[0-9]+$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class NetworkRequest(Strict):
    uuid: Name | None = None
    port: Name | None = None
    fixed_ip: Name | None = None
    tag: Name | None = None


class SecurityGroup(Strict):
    name: Name


class ServerCreate(Strict):
    name: Name
    flavorRef: FlavorRef
    imageRef: Annotated[str, StringConstraints(max_length=255)] | None = None
    networks: Literal["auto", "none"] | list[NetworkRequest] | None = None
    availability_zone: Name | None = None
    metadata: dict[MetaKey, MetaValue] | None = None
    description: Annotated[str, StringConstraints(max_length=255)] | None = None
    key_name: Name | None = None
    security_groups: list[SecurityGroup] | None = None
    user_data: Annotated[str, StringConstraints(max_length=65535)] | None = None
    config_drive: StrictBool | Literal["", "true", "false", "True", "False"] | None = None
    accessIPv4: Annotated[str, StringConstraints(max_length=64)] | None = None
    accessIPv6: Annotated[str, StringConstraints(max_length=64)] | None = None
    disk_config: Literal["AUTO", "MANUAL"] | None = Field(None, alias="OS-DCF:diskConfig")
    min_count: Count | None = None
    max_count: Count | None = None
    return_reservation_id: StrictBool | None = None
    adminPass: Annotated[str, StringConstraints(max_length=255)] | None = None
    personality: list[dict[str, Any]] | None = None  # until 2.56
    block_device_mapping: list[dict[str, Any]] | None = None
    block_device_mapping_v2: list[dict[str, Any]] | None = None
    tags: Annotated[list[Tag], Field(max_length=50)] | None = None  # 2.52
    trusted_image_certificates: (
        Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(max_length=50)]
        | None
    ) = None  # 2.63
    host: Fqdn | None = None  # 2.74
    hypervisor_hostname: Fqdn | None = None  # 2.74
    hostname: Fqdn | None = None  # 2.90


# The microversion that added each optional boot field (and 2.57 removed personality).
SERVER_CREATE_SINCE = {
    "description": 19,
    "tags": 52,
    "trusted_image_certificates": 63,
    "host": 74,
    "hypervisor_hostname": 74,
    "hostname": 90,
}
SERVER_CREATE_UNTIL = {"personality": 56}


def check_server_create(body: ServerCreateBody, version: Version) -> None:
    """What Nova's create schema for ``version`` refuses that the union model accepts."""
    server = body.server
    for name in sorted(server.model_fields_set):
        since, until = SERVER_CREATE_SINCE.get(name, 1), SERVER_CREATE_UNTIL.get(name, 10**6)
        if not version.at_least(since) or version.at_least(until + 1):
            shown = server.model_dump(by_alias=True, exclude_unset=True)
            raise errors.ValidationError(
                field="server",
                value=repr(shown),
                reason=f"Additional properties are not allowed ('{name}' was unexpected)",
            )
    if isinstance(server.networks, str) and not version.at_least(37):
        raise errors.ValidationError(
            field="networks",
            value=server.networks,  # shown as Nova shows a value: str(), no quotes
            reason=f"{server.networks!r} is not of type 'array'",
        )


class ServerCreateBody(Strict):
    server: ServerCreate
    scheduler_hints: dict[str, Any] | None = Field(None, alias="os:scheduler_hints")
    scheduler_hints_ext: dict[str, Any] | None = Field(None, alias="OS-SCH-HNT:scheduler_hints")


class Resize(Strict):
    flavorRef: FlavorRef
    disk_config: Literal["AUTO", "MANUAL"] | None = Field(None, alias="OS-DCF:diskConfig")


class Migrate(Strict):
    # Nova's parameter_types.fqdn, as its migrate schema takes it (2.56).
    host: (
        Annotated[
            str, StringConstraints(min_length=1, max_length=255, pattern=r"^[a-zA-Z0-9-._]*$")
        ]
        | None
    ) = None


class Reboot(Strict):
    type: Literal["HARD", "Hard", "hard", "SOFT", "Soft", "soft"]


class ResetState(Strict):
    state: Literal["active", "error"]


class ConsoleOutput(Strict):
    # An integer, or one written as a string; -1 (and null) for every line.
    length: StrictInt | str | None = None

    @field_validator("length", mode="before")
    @classmethod
    def _as_nova_checks_it(cls, value: Any) -> Any:
        """Nova's schema, in its order: the type, the pattern of a string, the minimum.

        Nova's validator reads a string as its number for the minimum, so
        ``"-2"`` is refused as ``-2`` is.
        """
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"{value!r} is not of type 'integer', 'string', 'null'")
        if isinstance(value, str) and re.search(CONSOLE_LENGTH, value) is None:
            raise ValueError(f"{value!r} does not match '{CONSOLE_LENGTH}'")
        if int(value) < -1:
            raise ValueError(f"{int(value)!r} is less than the minimum of -1")
        return value


class Lock(Strict):
    locked_reason: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None


class ActionBody(Strict):
    """One action per request, named by the body's only key.

    Nova validates only the actions that have a request schema: resize
    always, lock from 2.73. The others take any value, ``{}`` as well as
    ``null`` (tempest sends ``{"confirmResize": {}}``).
    """

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={"minProperties": 1, "maxProperties": 1},
    )

    resize: Resize | None = None
    migrate: Any = None  # checked by its schema from 2.56, see validate_action
    reboot: Reboot | None = None
    os_resetState: ResetState | None = Field(None, alias="os-resetState")
    os_getConsoleOutput: ConsoleOutput | None = Field(None, alias="os-getConsoleOutput")
    confirmResize: Any = None
    revertResize: Any = None
    os_stop: Any = Field(None, alias="os-stop")
    os_start: Any = Field(None, alias="os-start")
    lock: Any = None
    unlock: Any = None

    @field_validator("resize", "reboot", "os_resetState", "os_getConsoleOutput", mode="before")
    @classmethod
    def _is_an_object(cls, value: Any) -> Any:
        # Present means an object: {"resize": null} is a schema violation, as in Nova.
        if value is None:
            raise ValueError("None is not of type 'object'")
        return value


# Actions whose schema Nova applies only from a microversion on (before it,
# the value is ignored): an object of this model, or null.
_SINCE: dict[str, tuple[int, TypeAdapter[Any]]] = {
    "lock": (73, TypeAdapter(Lock)),
    "migrate": (56, TypeAdapter(Migrate)),
}


def validate_action(key: str, value: Any, version: Version) -> Any:
    """The action's value, checked by its schema at ``version`` where Nova has one."""
    if key not in _SINCE:
        return value
    since, schema = _SINCE[key]
    if not version.at_least(since) or value is None:
        return None
    if not isinstance(value, dict):
        raise errors.ValidationError(
            field=key,
            value=field_value(value),
            reason=f"{shown_value(value)} is not of type 'object', 'null'",
        )
    try:
        checked = schema.validate_python(value)
    except ValidationError as exc:
        first: dict[str, Any] = dict(exc.errors()[0])
        loc = [key, *body_loc(first["loc"])]
        raise HTTPFault(400, invalid_input(first, {key: value}, loc)) from None
    return checked.model_dump(exclude_none=True)


class WorkflowActionBody(Strict):
    """An operator's verb on a workflow: ``{"retry": null}`` or ``{"abort": null}``."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"minProperties": 1, "maxProperties": 1}
    )

    retry: None = None
    abort: None = None


class FlavorCreate(Strict):
    name: Name
    ram: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]
    vcpus: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]
    disk: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)]
    id: (
        Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\w.\- ]*$")]
        | None
    ) = None
    ephemeral: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] = Field(
        0, alias="OS-FLV-EXT-DATA:ephemeral"
    )
    swap: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] = 0
    rxtx_factor: Annotated[float, Field(gt=0, le=3.4e38)] | None = None
    is_public: StrictBool = Field(True, alias="os-flavor-access:is_public")
    description: Annotated[str, StringConstraints(max_length=65535)] | None = None  # 2.55


class FlavorCreateBody(Strict):
    flavor: FlavorCreate


class VolumeAttachmentCreate(Strict):
    volumeId: Annotated[str, StringConstraints(min_length=1, max_length=36)]
    device: Annotated[str, StringConstraints(max_length=255)] | None = None
    tag: Tag | None = None  # 2.49
    delete_on_termination: StrictBool | None = None  # 2.79


# The microversion that added each optional field of an attach.
VOLUME_ATTACH_SINCE = {"tag": 49, "delete_on_termination": 79}


class VolumeAttachmentBody(Strict):
    volumeAttachment: VolumeAttachmentCreate


def check_volume_attach(body: VolumeAttachmentBody, version: Version) -> None:
    """What Nova's attach schema for ``version`` refuses that the union model accepts."""
    att = body.volumeAttachment
    for name in sorted(att.model_fields_set):
        if not version.at_least(VOLUME_ATTACH_SINCE.get(name, 1)):
            raise errors.ValidationError(
                field="volumeAttachment",
                value=repr(att.model_dump(exclude_unset=True)),
                reason=f"Additional properties are not allowed ('{name}' was unexpected)",
            )
