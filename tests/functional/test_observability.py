"""Flower, /metrics and the logs each show a confirm and a revert."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from base64 import b64encode
from typing import Any

import pytest

from resizeflow import logs
from resizeflow.states import MigrationStatus, VmState
from tests.functional.test_flows import resize_to_verify
from tests.support.stack import Stack, wait_for


def confirm_and_revert(rf: Stack, project: str) -> tuple[int, int]:
    confirmed, reverted = rf.boot(project), rf.boot(project)
    c_mig = resize_to_verify(rf, project, confirmed)
    r_mig = resize_to_verify(rf, project, reverted)
    rf.api.confirm_resize(rf.ctx(project), confirmed)
    rf.api.revert_resize(rf.ctx(project), reverted)
    rf.wait_migration(c_mig, MigrationStatus.CONFIRMED)
    rf.wait_migration(r_mig, MigrationStatus.REVERTED)
    rf.wait_instance(confirmed, VmState.ACTIVE)
    rf.wait_instance(reverted, VmState.ACTIVE)
    return c_mig, r_mig


def log_lines(rf: Stack, host: str) -> list[dict[str, Any]]:
    out = []
    for line in rf.worker_log(host).splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_one_grep_follows_a_workflow_across_hosts(rf: Stack, project: str) -> None:
    c_mig, r_mig = confirm_and_revert(rf, project)
    lines = [entry for host in rf.hosts for entry in log_lines(rf, host)]
    for mig_id, flow in ((c_mig, "confirm"), (r_mig, "revert")):
        mig = rf.migration(mig_id)
        done = {
            (e["step"], e["host"])
            for e in lines
            if e.get("migration_id") == mig_id
            and e["event"].startswith("step ")
            and f".{flow}." in e["step"]
        }
        expected = {(r.step, r.host) for r in rf.journal(mig_id) if r.flow == flow}
        assert done == expected
        # Every line of the workflow carries its identity.
        for e in lines:
            if e.get("migration_id") == mig_id:
                assert e["instance_uuid"] == mig.instance_uuid
                assert e["request_id"].startswith("req-")
    if rf.migration(r_mig).source_compute != rf.migration(r_mig).dest_compute:
        assert len({h for _, h in expected}) == 2


def test_metrics_count_confirms_and_reverts(rf: Stack, project: str) -> None:
    def sample(text: str, name: str, **labels: str) -> float:
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        for line in text.splitlines():
            if line.startswith(f"{name}{{{want}}} ") or (
                not labels and line.startswith(name + " ")
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    import httpx

    # Scraped from the running API's /metrics, without a token, as Prometheus does.
    scrape_url = rf.api_endpoint().removesuffix("/v2.1") + "/metrics"
    before = httpx.get(scrape_url).text
    confirm_and_revert(rf, project)
    resp = httpx.get(scrape_url)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    after = resp.text
    for kind in ("confirm", "revert"):
        for series in ("resizeflow_workflows_started_total", "resizeflow_workflows_finished_total"):
            assert sample(after, series, kind=kind) == sample(before, series, kind=kind) + 1
    assert sample(after, "resizeflow_migrations", status="confirmed") >= 1
    assert sample(after, "resizeflow_migrations", status="reverted") >= 1
    assert 'resizeflow_step_duration_seconds_count{host="' in after
    assert 'step="resizeflow.revert.finish_revert"' in after
    assert 'resizeflow_queue_depth{host="host1"} 0.0' in after


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_flower_shows_confirm_and_revert_tasks(rf: Stack, project: str) -> None:
    port = free_port()
    env = {**rf.env, "RESIZEFLOW_FLOWER_BASIC_AUTH": "ops:s3cret"}
    log = open(rf.state_dir / "flower.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "resizeflow", "flower", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    auth = {"Authorization": "Basic " + b64encode(b"ops:s3cret").decode()}

    def get(path: str, headers: dict[str, str] | None = None) -> Any:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def workers_seen() -> bool:
        try:
            return len(get("/api/workers?refresh=1", auth)) >= 2
        except OSError:
            return False

    try:
        wait_for(workers_seen, 60, "Flower to see the workers")
        with pytest.raises(urllib.error.HTTPError) as denied:
            get("/api/tasks")
        assert denied.value.code == 401
        c_mig, r_mig = confirm_and_revert(rf, project)

        def tasks() -> dict[str, Any]:
            return get("/api/tasks?limit=1000", auth)

        def seen(mig_id: int, flow: str) -> bool:
            names = {
                t["name"]
                for t in tasks().values()
                if t.get("args") in (f"[{mig_id}]", f"({mig_id},)") and t.get("state") == "SUCCESS"
            }
            return {r.step for r in rf.journal(mig_id) if r.flow == flow} <= names

        wait_for(lambda: seen(c_mig, "confirm") and seen(r_mig, "revert"), 30, "Flower's task list")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_credentials_are_masked_in_log_lines() -> None:
    line = logs.redact(
        "connecting to redis://:hunter2@redis:6379/0 and "
        "postgresql+psycopg://rf:pa55word@db/rf?sslpassword=x1"
    )
    assert "hunter2" not in line and "pa55word" not in line and "x1" not in line
    assert "redis://:***@redis:6379/0" in line
    assert "postgresql+psycopg://rf:***@db/rf" in line


# PostgreSQL's trust auth lets a URL carry a password the server ignores; SQLite has none.
@pytest.mark.stacks("postgresql-redis", "postgresql-rabbitmq")
def test_credentials_never_reach_the_logs(rf: Stack, project: str) -> None:
    """A worker whose database URL carries a password never writes it in a log line."""
    import subprocess as sp
    import sys as _sys

    from resizeflow.states import VmState

    secret = "s3cr3t-Pa55"
    url = rf.settings.db_url.replace("postgres@", f"postgres:{secret}@")
    env = {**rf.env, "RESIZEFLOW_DATABASE_URL": url, "RESIZEFLOW_LOG_LEVEL": "DEBUG"}
    upgrade = sp.run(
        [_sys.executable, "-m", "resizeflow", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert upgrade.returncode == 0, upgrade.stderr
    rf.env, saved = env, rf.env
    try:
        rf.start_worker("host3")
    finally:
        rf.env = saved
    try:
        uuid = rf.boot(project, host="host3")
        rf.api.stop(rf.ctx(project), uuid)
        rf.wait_instance(uuid, VmState.STOPPED)
        rf.api.delete(rf.ctx(project), uuid)
        wait_for(lambda: rf.instance(uuid).deleted, what="the delete")
    finally:
        rf.stop_worker("host3")
    log = rf.worker_log("host3")
    assert "host3" in log and '"level": "debug"' in log  # the worker did log, verbosely
    for text in (log, upgrade.stdout, upgrade.stderr):
        assert secret not in text
