"""The migration address check against a real sshd on a test host of its own.
The checks themselves are in tests/unit/test_address_check.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from resizeflow import worker
from resizeflow.conf import Settings
from resizeflow.devstack.hosts import Hosts
from tests.unit.test_address_check import free_port


@pytest.mark.hosts
def test_a_host_with_its_own_sshd_passes_and_a_wrong_port_is_named(two_hosts: Hosts) -> None:
    """Against a real sshd: the address a deployed host advertises answers; the
    same address on a port nothing listens on is named with both settings."""
    a = two_hosts.hosts[0]
    settings = Settings.from_env(
        two_hosts.env(a) | {"RESIZEFLOW_LIBVIRT_URI": "qemu:///system"},
        state_dir=two_hosts.root / "state-check",
    )
    assert settings.disk_transport == "rsync"
    assert worker.check_migration_address(settings) is None
    wrong = replace(settings, ssh_port=free_port())
    line = worker.check_migration_address(wrong)
    assert line is not None
    assert f"no SSH server answers at {a.address} port {wrong.ssh_port}" in line
    assert "; set RESIZEFLOW_MIGRATION_ADDRESS or RESIZEFLOW_SSH_PORT, or " in line
