"""What Nova asks of the OpenStack services around it, as resizeflow provides it.

Nova's compute does not keep allocations, ports, volumes, quotas, images or
notifications itself: it asks Placement, Neutron, Cinder, its quota engine,
Glance and the message bus. resizeflow has no such neighbours, so this
package stands in for them, named for the services they replace:

- :mod:`~resizeflow.openstack.placement`: Placement's allocations and claims, as rows;
- :mod:`~resizeflow.openstack.network`: Neutron's ports and their host bindings, as rows;
- :mod:`~resizeflow.openstack.volume`: Cinder's attachments and connections, as rows;
- :mod:`~resizeflow.openstack.quota`: Nova's quota limits and usage, from rows;
- :mod:`~resizeflow.openstack.images`: Glance's file store, a directory of images;
- :mod:`~resizeflow.openstack.notifier` and :mod:`~resizeflow.openstack.payloads`:
  Nova's versioned notifications, on the broker, in Nova's envelope and objects.

The row-backed stand-ins are bound to the caller's session, so their changes
commit or roll back with the step or the request. Nothing here touches a
hypervisor (that is :mod:`resizeflow.virt`, on the host side); the service
layer and the steps both use these.
"""
