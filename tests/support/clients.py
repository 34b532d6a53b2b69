"""python-openstackclient's ``openstack`` command, pointed at a stack's API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.stack import Stack


def osc(
    rf: Stack,
    *args: str,
    token: str = "admin:admin",
    timeout: float = 120,
    env: dict[str, str] | None = None,
    endpoint: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``openstack <args>`` with the admin_token plugin at ``endpoint``, by
    default the stack's compute endpoint."""
    exe = Path(sys.executable).with_name("openstack")
    cmd = [
        str(exe),
        "--os-auth-type",
        "admin_token",
        "--os-endpoint",
        endpoint or rf.api_endpoint(),
        "--os-token",
        token,
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def service_endpoint(rf: Stack, prefix: str) -> str:
    """Where the stack's API serves another OpenStack service (``volume``, ``network``)."""
    return rf.api_endpoint().removesuffix("/v2.1") + f"/{prefix}/"


def volume_endpoint(rf: Stack) -> str:
    """Where the stack's API serves Cinder's Block Storage API."""
    return service_endpoint(rf, "volume")


def network_endpoint(rf: Stack) -> str:
    """Where the stack's API serves Neutron's Networking API."""
    return service_endpoint(rf, "network")


def _service_osc(
    rf: Stack,
    overrides: dict[str, str],
    versions: tuple[str, ...],
    args: tuple[str, ...],
    token: str,
) -> subprocess.CompletedProcess[str]:
    """The ``openstack`` CLI: compute at the API, each other service at the
    endpoint its ``OS_<SERVICE>_ENDPOINT_OVERRIDE`` names (openstacksdk reads
    them from the environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(overrides)
    return osc(rf, *versions, *args, token=token, env=env)


def volume_osc(rf: Stack, *args: str, token: str) -> subprocess.CompletedProcess[str]:
    """The ``openstack`` CLI on the stack: compute at the API, block storage at ``/volume``."""
    # OSC's volume commands build an identity v3 client even when they ask it
    # nothing (no --project, no --user): with no Keystone here, it is pinned
    # to v3 at the API's root, and never called.
    overrides = {
        "OS_BLOCK_STORAGE_ENDPOINT_OVERRIDE": volume_endpoint(rf),
        "OS_IDENTITY_ENDPOINT_OVERRIDE": rf.api_endpoint().removesuffix("/v2.1") + "/",
    }
    versions = ("--os-volume-api-version", "3", "--os-identity-api-version", "3")
    return _service_osc(rf, overrides, versions, args, token)


def network_osc(rf: Stack, *args: str, token: str) -> subprocess.CompletedProcess[str]:
    """The ``openstack`` CLI on the stack: compute at the API, networking at
    ``/network``, found there through its version document."""
    overrides = {"OS_NETWORK_ENDPOINT_OVERRIDE": network_endpoint(rf)}
    return _service_osc(rf, overrides, (), args, token)
