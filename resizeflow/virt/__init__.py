"""The host side: what a compute host does to its hypervisor, its disks and its NICs.

Named after Nova's ``nova/virt``, where the hypervisor drivers live. Everything
here runs on the compute host itself, inside its worker: the libvirt driver
(:mod:`~resizeflow.virt.libvirt`), the two kinds of host it drives
(:mod:`~resizeflow.virt.hosts`: libvirt's test driver, or a real QEMU/KVM
hypervisor), Nova's disk layout (:mod:`~resizeflow.virt.disks`), its domain
XML (:mod:`~resizeflow.virt.domain_xml`), taps on a bridge
(:mod:`~resizeflow.virt.vifs`), and disks crossing to other hosts
(:mod:`~resizeflow.virt.remotefs`, :mod:`~resizeflow.virt.imagecopy`).

Only this package talks to libvirt. The API and the service layer never load
it; the steps reach it through the :class:`~resizeflow.virt.base.VirtDriver`
Protocol. It may read what the OpenStack services below it describe (an
image, a port: :mod:`resizeflow.openstack`), as Nova's virt driver asks Glance
and Neutron, but never the database.
"""
