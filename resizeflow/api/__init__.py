"""The OpenStack Compute v2.1 REST API in front of the compute service layer.

``resizeflow api --bind 127.0.0.1 --port 8774`` serves it at ``/v2.1``
(``/v2.1/{project_id}/...`` is accepted too), with discovery at ``/`` and
``/v2.1/`` and microversions 2.1 to 2.96 (see :mod:`.microversion`):

- ``/servers``, ``/servers/detail``, ``/servers/{id}``: boot, list, show, delete;
- ``/servers/{id}/action``: resize, migrate, confirmResize, revertResize,
  os-stop, os-start, reboot, os-resetState, os-getConsoleOutput, lock, unlock;
- ``/servers/{id}/os-instance-actions[/{request_id}]``: Nova's events, one per
  Nova method (the step journal has every step);
- ``/servers/{id}/migrations[/{id}]``: live migrations in progress (none here);
- ``/flavors``, ``/flavors/detail``, ``/flavors/{id}``: create and delete for admins;
- ``/os-migrations``, ``/os-hypervisors[/detail]``, ``/os-services``,
  ``/os-aggregates``: admin;
- ``/os-resizeflow/workflows/{migration_id}``: the step journal (an extension, admin);
- ``/openapi.json``: the OpenAPI document.

It parses, authenticates (:mod:`.auth`), authorises (Nova's policy, in
:mod:`resizeflow.compute.policy`) and maps errors to Nova's fault bodies
(:mod:`.faults`). It never loads libvirt or the step code; import-linter
enforces this.
"""
