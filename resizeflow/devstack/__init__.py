"""The development stack: resizeflow and what it needs, started on one machine.

Named after OpenStack's DevStack, which plays the same part for Nova: it is
how a developer, the tests, the chaos harness, the benchmark and the demo get
a whole cloud here, not part of the product that runs in one. It holds:

- the local stack (:mod:`~resizeflow.devstack.stack`, with its process
  :mod:`~resizeflow.devstack.supervisor` and its :mod:`~resizeflow.devstack.brokers`):
  a broker, a database, workers per simulated host, beat, the API and Flower
  as processes;
- for real guests: a test guest built from Debian packages
  (:mod:`~resizeflow.devstack.guest`), compute hosts that share nothing, one
  sshd each (:mod:`~resizeflow.devstack.hosts`), the system libvirtd started
  and configured to work here (:mod:`~resizeflow.devstack.libvirtd`), and what
  ``resizeflow demo --hypervisor qemu`` adds (:mod:`~resizeflow.devstack.qemu_demo`).

The CLI (``resizeflow demo``) and the benchmark use it. The API, the service
layer, the engine (routing, tasks, steps) and the drivers never import it
(an import-linter contract in ``pyproject.toml``). Nothing here talks to
libvirt through its API itself; the virt driver does that.
"""
