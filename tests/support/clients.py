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


def volume_endpoint(rf: Stack) -> str:
    """Where the stack's API serves Cinder's Block Storage API."""
    return rf.api_endpoint().removesuffix("/v2.1") + "/volume/"


def volume_osc(rf: Stack, *args: str, token: str) -> subprocess.CompletedProcess[str]:
    """The ``openstack`` CLI on the stack: compute at the API, block storage at ``/volume``."""
    # The block-storage endpoint, as openstacksdk reads an override from the
    # environment. OSC's volume commands build an identity v3 client even when
    # they ask it nothing (no --project, no --user): with no Keystone here, it
    # is pinned to v3 at the API's root, and never called.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["OS_BLOCK_STORAGE_ENDPOINT_OVERRIDE"] = volume_endpoint(rf)
    env["OS_IDENTITY_ENDPOINT_OVERRIDE"] = rf.api_endpoint().removesuffix("/v2.1") + "/"
    versions = ("--os-volume-api-version", "3", "--os-identity-api-version", "3")
    return osc(rf, *versions, *args, token=token, env=env)
