"""A started worker whose disks move over SSH warns once, in one line, when other
hosts could not reach its migration address, and keeps serving (a real worker
process on a private redis-server). The checks themselves are in
tests/unit/test_address_check.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

from resizeflow.devstack.stack import PRIVATE_REDIS, TEST_DRIVER_ENV, build


def test_a_started_worker_warns_once_and_keeps_serving(tmp_path: Path) -> None:
    env = {
        **TEST_DRIVER_ENV,
        "RESIZEFLOW_REMOTE_FILESYSTEM_TRANSPORT": "rsync",
        "RESIZEFLOW_SSH_CONNECT_TIMEOUT": "2",
    }
    local = build(tmp_path / "state", broker=PRIVATE_REDIS, env=env, log_dir=tmp_path / "logs")
    try:
        started = time.monotonic()
        node = local.start_worker("rf-nowhere", "--loglevel", "INFO")
        assert time.monotonic() - started < 60
        # Still serving after its warning.
        assert local.app.control.ping(destination=[node], timeout=2)
        text = local.sup.log_path("worker-rf-nowhere").read_text()
    finally:
        local.close()
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    warnings = [r["event"] for r in records if r["level"] == "warning"]
    ours = [w for w in warnings if "cannot copy disks" in w]
    assert len(ours) == 1, warnings
    assert ours[0].startswith(
        "host rf-nowhere: other hosts cannot copy disks to this one over SSH (rsync): "
        "rf-nowhere does not resolve ("
    )
    assert "; set RESIZEFLOW_MIGRATION_ADDRESS (unset: the host name), or " in ours[0]
