"""Drivers: the hypervisor, networking, volumes, placement, quota and notifications."""
