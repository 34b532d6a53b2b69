"""Files on other compute hosts, the way Nova's remotefs drivers reach them.

One small Protocol (:class:`~resizeflow.virt.remotefs.base.RemoteFilesystem`)
and three transports behind it: rsync and scp over SSH
(:mod:`~resizeflow.virt.remotefs.ssh`), and the local filesystem
(:mod:`~resizeflow.virt.remotefs.local`). The package follows the seams of
the work:

- :mod:`~resizeflow.virt.remotefs.base`: the Protocol, the hosts, the commit rule;
- :mod:`~resizeflow.virt.remotefs.argv`: ssh, rsync and scp command lines, and
  what their failures mean (pure);
- :mod:`~resizeflow.virt.remotefs.runner`: running one, in its own process group;
- :mod:`~resizeflow.virt.remotefs.ssh` and :mod:`~resizeflow.virt.remotefs.local`:
  the transports;
- :mod:`~resizeflow.virt.remotefs.shared`: the shared-storage probe;
- :mod:`~resizeflow.virt.remotefs.address`: whether this host's migration
  address answers.

Failures say which host and why: a connection that cannot be made or that
drops is a :class:`~resizeflow.errors.RemoteHostUnreachable` (transient), a
full dest filesystem a :class:`~resizeflow.errors.RemoteDiskFull` (final),
anything else a final :class:`~resizeflow.errors.RemoteFilesystemError`.
"""

from __future__ import annotations

from resizeflow.conf import Settings
from resizeflow.virt.remotefs.argv import ssh_options
from resizeflow.virt.remotefs.base import RemoteFilesystem
from resizeflow.virt.remotefs.local import LocalFilesystem
from resizeflow.virt.remotefs.ssh import RsyncFilesystem, ScpFilesystem


def remote_filesystem(settings: Settings) -> RemoteFilesystem:
    """The transport of ``settings.disk_transport`` (RESIZEFLOW_REMOTE_FILESYSTEM_TRANSPORT,
    or the hypervisor's default)."""
    if settings.disk_transport == "local":
        return LocalFilesystem()
    opts = ssh_options(settings)
    if settings.disk_transport == "scp":
        return ScpFilesystem(opts)
    return RsyncFilesystem(opts)
