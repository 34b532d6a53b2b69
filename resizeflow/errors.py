"""The one exception root, in the manner of Nova's ``NovaException``.

Every error carries the HTTP code it maps to and a message template filled from
keyword arguments. Messages are Nova's own where Nova has one, so clients that
match on them keep working.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ResizeflowError(Exception):
    code: ClassVar[int] = 500
    msg_fmt: ClassVar[str] = "An unknown exception occurred."

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        self.kwargs = kwargs
        if message is None:
            try:
                message = self.msg_fmt % kwargs
            except (KeyError, TypeError):
                message = self.msg_fmt
        self.message = message
        super().__init__(message)


class ConfigError(ResizeflowError):
    msg_fmt = "Invalid configuration."


# --- 400 ---------------------------------------------------------------------
class Invalid(ResizeflowError):
    code = 400
    msg_fmt = "Bad Request - Invalid Parameters"


class InvalidVolume(Invalid):
    """A volume in a state the request cannot act on (Cinder's InvalidVolume)."""

    msg_fmt = "Invalid volume: %(reason)s"


class InstanceNotResized(Invalid):
    """No migration in status ``finished``: Nova's API turns this into a 400."""

    msg_fmt = "Instance has not been resized."


class CannotResizeToSameFlavor(Invalid):
    msg_fmt = "When resizing, instances must change flavor!"


class CannotResizeDisk(Invalid):
    msg_fmt = "Server disk was unable to be resized because: %(reason)s"


class ImageNotFound(Invalid):
    """An ``imageRef`` that names no image: Nova's servers API answers 400, not 404."""

    msg_fmt = "Can not find requested image"


class FlavorDiskSmallerThanImage(Invalid):
    msg_fmt = (
        "Flavor's disk is too small for requested image. Flavor disk "
        "is %(flavor_size)i bytes, image is %(image_size)i bytes."
    )


class FlavorDiskSmallerThanMinDisk(Invalid):
    msg_fmt = (
        "Flavor's disk is smaller than the minimum size specified in image metadata. "
        "Flavor disk is %(flavor_size)i bytes, minimum size is %(image_min_disk)i bytes."
    )


class InvalidUUID(Invalid):
    msg_fmt = "Expected a uuid but received %(uuid)s."


class ValidationError(Invalid):
    """A request body or query that does not match its schema; names the field."""

    msg_fmt = "Invalid input for field/attribute %(field)s. Value: %(value)s. %(reason)s"


class CannotMigrateToSameHost(Invalid):
    msg_fmt = "Cannot migrate to the host where the server exists."


class InvalidFlavor(Invalid):
    msg_fmt = "Invalid flavor: %(reason)s"


# --- 401 ---------------------------------------------------------------------
class Unauthorized(ResizeflowError):
    code = 401
    msg_fmt = "The request you have made requires authentication."


# --- 403 ---------------------------------------------------------------------
class Forbidden(ResizeflowError):
    code = 403
    msg_fmt = "Forbidden"


class PolicyNotAuthorized(Forbidden):
    msg_fmt = "Policy doesn't allow %(action)s to be performed."


class OverQuota(Forbidden):
    msg_fmt = (
        "Quota exceeded for %(overs)s: Requested %(req)s, but already used %(used)s "
        "of %(allowed)s %(overs)s"
    )


# --- 404 ---------------------------------------------------------------------
class NotFound(ResizeflowError):
    code = 404
    msg_fmt = "Resource could not be found."


class VolumeNotFound(NotFound):
    msg_fmt = "Volume %(volume_id)s could not be found."


class VolumeAttachmentNotFound(NotFound):
    msg_fmt = "Volume attachment could not be found with filter: attachment_id = %(attachment_id)s."


class InstanceNotFound(NotFound):
    msg_fmt = "Instance %(instance_id)s could not be found."


class FlavorNotFound(NotFound):
    msg_fmt = "Flavor %(flavor_id)s could not be found."


class MigrationNotFound(NotFound):
    msg_fmt = "Migration %(migration_id)s could not be found."


class ComputeHostNotFound(NotFound):
    msg_fmt = "Compute host %(host)s could not be found."


class InstanceActionNotFound(NotFound):
    msg_fmt = "Action for request_id %(request_id)s on instance %(instance_uuid)s not found"


class HypervisorNotFound(NotFound):
    msg_fmt = "Hypervisor %(hypervisor)s could not be found."


# --- 409 ---------------------------------------------------------------------
class Conflict(ResizeflowError):
    code = 409
    msg_fmt = "Conflict."


class InstanceIsLocked(Conflict):
    msg_fmt = "Instance %(instance_uuid)s is locked"


class InstanceInvalidState(Conflict):
    msg_fmt = (
        "Instance %(instance_uuid)s in %(attr)s %(state)s. Cannot %(method)s while the "
        "instance is in this state."
    )


class UnexpectedTaskState(Conflict):
    msg_fmt = "Unexpected task state: expecting %(expected)s but the actual state is %(actual)s"


class InstanceUpdateConflict(ResizeflowError):
    """Nova's compute finding the task state changed under a method (its
    UnexpectedTaskStateError): a 500 in the fault it leaves."""

    msg_fmt = (
        "Conflict updating instance %(instance_uuid)s. Expected: %(expected)s. Actual: %(actual)s"
    )


class ServiceUnavailable(Conflict):
    msg_fmt = "Service is unavailable at this time."


class HostDidNotAnswer(ServiceUnavailable):
    """A host's worker took no request of ours within the time a caller waits."""

    msg_fmt = "Service is unavailable at this time."


class InstanceNotReady(Conflict):
    msg_fmt = "Instance %(instance_id)s is not ready"


class WorkflowNotFailed(Conflict):
    msg_fmt = "Migration %(migration_id)s is %(status)s: only a failed workflow can be %(verb)s."


class WorkflowStepRunning(Conflict):
    msg_fmt = (
        "Step %(step)s of migration %(migration_id)s is still running on %(host)s; "
        "try again once it has ended."
    )


class InvalidStateTransition(Conflict):
    msg_fmt = "%(kind)s cannot move from %(old)s to %(new)s."


class NoValidHost(ResizeflowError):
    """Scheduling found no host: Nova's NoValidHost, whose code (500) its faults record.

    Never an API answer as such: a boot refuses it with a 400, and a move
    records it as the server's fault.
    """

    msg_fmt = "No valid host was found. %(reason)s"


class FlavorExists(Conflict):
    msg_fmt = "Flavor with name %(name)s already exists."


class FlavorIdExists(Conflict):
    msg_fmt = "Flavor with ID %(flavor_id)s already exists."


class ClaimFailed(Conflict):
    msg_fmt = "Claim on %(node)s failed: %(reason)s"


# --- 500: raised inside workers ----------------------------------------------
class StepFailed(ResizeflowError):
    """A step failed in a way that retrying cannot fix."""

    msg_fmt = "Step %(step)s failed: %(reason)s"


class TransientError(ResizeflowError):
    """Worth retrying: a broker, database or hypervisor connection hiccup."""

    msg_fmt = "Transient failure: %(reason)s"


class LeaseLost(ResizeflowError):
    """Another copy of a step took it over while this one worked on the hypervisor."""

    msg_fmt = "Step %(step)s was taken over by %(holder)s; this copy commits nothing."


class WorkflowAborted(ResizeflowError):
    """The workflow was errored out or finished elsewhere; later steps must not run."""

    msg_fmt = "Workflow for migration %(migration_id)s is %(status)s; step %(step)s skipped."


class InstanceFaultRollback(ResizeflowError):
    """Nova's: work failed before it touched the guest, so the server is put back.

    The server keeps its vm_state instead of going to ERROR, and the resize is
    rolled back. ``inner`` is the failure itself: the fault records it, and it
    alone decides whether another try is worth it.
    """

    msg_fmt = "%(inner)s"

    def __init__(self, inner: Exception) -> None:
        super().__init__(getattr(inner, "message", None) or str(inner), inner=inner)
        self.inner = inner


class VolumeSizeExceedsFreeSpace(ResizeflowError):
    """A volume larger than the storage host can hold: refused before anything is recorded."""

    code = 413
    msg_fmt = (
        "Requested volume size %(size)dG is larger than the free space of storage host "
        "%(host)s (%(free)dG)."
    )


class StorageError(ResizeflowError):
    """The storage host's daemon refused or failed an operation."""

    msg_fmt = "Block storage failed: %(reason)s"


class VirtError(ResizeflowError):
    msg_fmt = "Hypervisor error: %(reason)s"


class DiskNotFound(VirtError):
    msg_fmt = "No disk at %(location)s"


# --- hosts talking to hosts over SSH (resizeflow/virt/remotefs/) ---------
class RemoteHostUnreachable(TransientError):
    """SSH could not reach a host, or the connection dropped: worth retrying."""

    msg_fmt = "Cannot reach host %(host)s (%(address)s) over SSH: %(reason)s"


class RemoteFilesystemError(VirtError):
    """A remote file operation failed in a way another try will not fix."""

    msg_fmt = "%(op)s on host %(host)s failed: %(reason)s"


class RemoteDiskFull(RemoteFilesystemError):
    """The dest filesystem cannot hold the copy: final, someone must make room."""

    msg_fmt = "Not enough space on host %(host)s for %(path)s: %(reason)s"


class GuestNotRunning(VirtError):
    """A started guest that libvirt never reported running: not worth retrying."""

    msg_fmt = (
        "Instance %(uuid)s did not reach running within %(timeout)s seconds "
        "(last power state: %(state)s)"
    )


# -- a boot's NICs, worded as Nova words them ------------------------------------
class FixedIpsExhausted(ResizeflowError):
    code = 409
    msg_fmt = "Zero fixed IPs available in network %(network)s (%(cidr)s)."


class NetworkNotFound(ResizeflowError):
    code = 400
    msg_fmt = "Network %(network)s could not be found."


class NoSubnet(ResizeflowError):
    code = 400
    msg_fmt = "Network %(network)s requires a subnet in order to boot instances on."


class PortNotFound(ResizeflowError):
    code = 400
    msg_fmt = "Port id %(port)s could not be found."


class PortNotUsable(ResizeflowError):
    code = 400
    msg_fmt = "Port %(port)s not usable for instance %(instance)s."


class FixedIpAlreadyInUse(ResizeflowError):
    code = 400
    msg_fmt = "Fixed IP address %(address)s is already in use on instance %(instance)s."


class FixedIpNotInNetwork(ResizeflowError):
    code = 400
    msg_fmt = "Fixed IP address %(address)s is not in a subnet of network %(network)s."


class PortInUse(ResizeflowError):
    code = 409
    msg_fmt = "Port %(port)s is still in use."


class VniExhausted(ResizeflowError):
    code = 503
    msg_fmt = "Unable to create the network. No tenant network is available for allocation."
