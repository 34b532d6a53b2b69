"""Request bodies, after Nova's JSON schemas: unknown properties are refused."""

from __future__ import annotations

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
from resizeflow.api.microversion import Version

Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]
MetaKey = Annotated[str, StringConstraints(min_length=1, max_length=255)]
MetaValue = Annotated[str, StringConstraints(max_length=255)]
FlavorRef = (
    Annotated[str, StringConstraints(min_length=1, max_length=255)]
    | Annotated[StrictInt, Field(ge=0)]
)
Count = Annotated[StrictInt, Field(ge=1, le=1)]


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


class ServerCreateBody(Strict):
    server: ServerCreate
    scheduler_hints: dict[str, Any] | None = Field(None, alias="os:scheduler_hints")


class Resize(Strict):
    flavorRef: FlavorRef
    disk_config: Literal["AUTO", "MANUAL"] | None = Field(None, alias="OS-DCF:diskConfig")


class Lock(Strict):
    locked_reason: Annotated[str, StringConstraints(max_length=255)] | None = None


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
    confirmResize: Any = None
    revertResize: Any = None
    os_stop: Any = Field(None, alias="os-stop")
    os_start: Any = Field(None, alias="os-start")
    lock: Any = None
    unlock: Any = None

    @field_validator("resize", mode="before")
    @classmethod
    def _resize_is_an_object(cls, value: Any) -> Any:
        # Present means an object: {"resize": null} is a schema violation, as in Nova.
        if value is None:
            raise ValueError("None is not of type 'object'")
        return value


_LOCK = TypeAdapter(Lock | None)


def validate_action(key: str, value: Any, version: Version) -> Any:
    """The action's value, checked by its schema at ``version`` where Nova has one."""
    if key == "lock":
        if not version.at_least(73):
            return None  # Nova has no lock schema before 2.73: the value is ignored
        try:
            checked = _LOCK.validate_python(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(["lock", *(str(p) for p in first["loc"] if p != "Lock")])
            raise errors.ValidationError(
                field=field, value=first.get("input"), reason=first["msg"]
            ) from None
        return None if checked is None else checked.model_dump(exclude_none=True)
    return value


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


class FlavorCreateBody(Strict):
    flavor: FlavorCreate
