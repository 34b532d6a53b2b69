"""The host side: what a compute host does to its hypervisor, its disks and its NICs.

Named after Nova's ``nova/virt``, where the hypervisor drivers live. Everything
here runs on the compute host itself, inside its worker:

- the libvirt driver (:mod:`~resizeflow.virt.libvirt`), its connection
  (:mod:`~resizeflow.virt.connection`) and the instance directories it keeps
  (:mod:`~resizeflow.virt.layout`);
- the two kinds of host it runs on, behind one strategy
  (:mod:`~resizeflow.virt.strategy`): libvirt's test driver
  (:mod:`~resizeflow.virt.testdriver`) or a real QEMU or KVM hypervisor
  (:mod:`~resizeflow.virt.realhost`), with Nova's disk layout
  (:mod:`~resizeflow.virt.disks`), domain XML (:mod:`~resizeflow.virt.domain_xml`)
  and taps on a bridge (:mod:`~resizeflow.virt.vifs`);
- disks crossing to other hosts (:mod:`~resizeflow.virt.remotefs`,
  :mod:`~resizeflow.virt.imagecopy`).

Only this package talks to libvirt. The API and the service layer never load
it; the steps reach it through the :class:`~resizeflow.virt.base.VirtDriver`
Protocol. It may read what the OpenStack stand-ins below it describe (an
image, a port: :mod:`resizeflow.openstack`), as Nova's virt driver asks Glance
and Neutron, but never the database.
"""
