"""The DHCP agent (``resizeflow network``): dnsmasq per network, as Neutron's DHCP agent.

:mod:`~resizeflow.dhcp.agent` is its reconcile loop, :mod:`~resizeflow.dhcp.dnsmasq`
what it runs, :mod:`~resizeflow.dhcp.netns` the namespaces dnsmasq runs in.
"""
