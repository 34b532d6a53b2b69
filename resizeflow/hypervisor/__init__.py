"""Host-side tooling for real hypervisors: the libvirtd a compute host needs, and a test guest.

Nothing here talks to libvirt through its API; the virt driver does that. These
modules start and configure the daemon and build guest images from Debian
packages, for CI, the demo and an operator's first host.
"""
