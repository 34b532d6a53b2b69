"""``resizeflow api`` with noauth: localhost only, unless RESIZEFLOW_NOAUTH_ANY_ADDRESS says so.

Real processes: the refusal is the process's exit before it listens; the
override is a process that listens on every address and says so in its log.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

RESIZEFLOW = Path(sys.executable).with_name("resizeflow")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def api(tmp_path: Path, bind: str, port: int, **settings: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESIZEFLOW_")}
    env.update(
        RESIZEFLOW_STATE_DIR=str(tmp_path),
        RESIZEFLOW_LOG_FORMAT="text",
        RESIZEFLOW_AUTH="noauth",
        **{f"RESIZEFLOW_{k.upper()}": v for k, v in settings.items()},
    )
    return subprocess.Popen(
        [str(RESIZEFLOW), "api", "--bind", bind, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "192.0.2.10", "rf.example"])
def test_noauth_refuses_an_address_beyond_localhost(tmp_path: Path, bind: str) -> None:
    proc = api(tmp_path, bind, free_port())
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert f"refusing to serve the API on {bind} with RESIZEFLOW_AUTH=noauth" in out


def test_noauth_on_every_address_when_told_to_with_a_warning(tmp_path: Path) -> None:
    port = free_port()
    proc = api(tmp_path, "0.0.0.0", port, noauth_any_address="true")
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the API never listened"
                time.sleep(0.2)
        assert r.status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "WARNING" in out and "serving the API on 0.0.0.0 with RESIZEFLOW_AUTH=noauth" in out


def test_noauth_on_loopback_addresses_needs_no_override(tmp_path: Path) -> None:
    port = free_port()
    proc = api(tmp_path, "127.0.0.2", port)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                assert httpx.get(f"http://127.0.0.2:{port}/", timeout=2).status_code == 200
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the API never listened"
                time.sleep(0.2)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "noauth" not in out
