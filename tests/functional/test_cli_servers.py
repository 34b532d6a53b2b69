"""The ``resizeflow`` server, flavor, migration and workflow commands, on a real stack.

Each command runs in process (the service layer) and against the API with ``--url``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from click.testing import CliRunner, Result

from resizeflow.cli import api_cmd, main, servers  # noqa: F401  (registers the commands)
from tests.support.stack import Stack


def run(rf: Stack, *args: str, via: str = "local", token: str | None = None) -> Result:
    extra = ["--url", rf.api_endpoint()] if via == "http" else []
    if token is not None:
        extra += ["--token", token]
    result = CliRunner().invoke(main, [*args, *extra], env=rf.env, catch_exceptions=False)
    return result


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("via", ["local", "http"])
def test_boot_resize_confirm_with_wait(rf: Stack, project: str, via: str) -> None:
    token = f"alice:{project}"
    created = run(rf, "server", "create", "vm-cli", "--flavor", "1", "--wait", via=via, token=token)
    assert created.exit_code == 0, created.output
    uuid = created.stdout.splitlines()[0].strip()
    shown = as_json(run(rf, "server", "show", uuid, "--json", via=via, token=token))
    assert shown["status"] == "ACTIVE"

    resized = run(rf, "server", "resize", uuid, "--flavor", "2", "--wait", via=via)
    assert resized.exit_code == 0, resized.output
    # The live display ends on the step journal of the resize.
    for step in ("prep_resize", "resize_instance", "finish_resize"):
        assert step in resized.output
    assert f"resize of {uuid} finished" in resized.output
    assert as_json(run(rf, "server", "show", uuid, "--json", via=via))["status"] == "VERIFY_RESIZE"

    confirmed = run(rf, "server", "confirm-resize", uuid, "--wait", via=via)
    assert confirmed.exit_code == 0, confirmed.output
    assert "finish_confirm" in confirmed.output
    shown = as_json(run(rf, "server", "show", uuid, "--json", via=via))
    assert (shown["status"], shown["flavor"]["original_name"]) == ("ACTIVE", "m1.small")

    migs = as_json(run(rf, "migration", "list", "--server", uuid, "--json", via=via))
    assert [m["status"] for m in migs] == ["confirmed"]
    wf = run(rf, "workflow", "show", str(migs[0]["id"]), via=via)
    assert wf.exit_code == 0, wf.output
    for text in ("confirm_migration", "drop_source_claim", "done", "attempts", "duration"):
        assert text in wf.output
    listed = as_json(run(rf, "server", "list", "--json", via=via, token=token))
    assert [s["id"] for s in listed] == [uuid]


@pytest.mark.parametrize("via", ["local", "http"])
def test_revert_stop_start_delete(rf: Stack, project: str, via: str) -> None:
    uuid = run(rf, "server", "create", "vm", "--flavor", "1", "--wait", via=via).stdout.split()[0]
    assert run(rf, "server", "stop", uuid, "--wait", via=via).exit_code == 0
    assert run(rf, "server", "resize", uuid, "--flavor", "2", "--wait", via=via).exit_code == 0
    reverted = run(rf, "server", "revert-resize", uuid, "--wait", via=via)
    assert reverted.exit_code == 0, reverted.output
    assert "finish_revert" in reverted.output
    shown = as_json(run(rf, "server", "show", uuid, "--json", via=via))
    assert (shown["status"], shown["flavor"]["original_name"]) == ("SHUTOFF", "m1.tiny")
    assert run(rf, "server", "start", uuid, "--wait", via=via).exit_code == 0
    deleted = run(rf, "server", "delete", uuid, "--wait", via=via)
    assert deleted.exit_code == 0, deleted.output
    gone = run(rf, "server", "show", uuid, via=via)
    assert gone.exit_code == 1
    assert gone.output.strip() == f"Error: Instance {uuid} could not be found."


@pytest.mark.parametrize("via", ["local", "http"])
def test_migrate_reboot_console_and_reset_state(rf: Stack, project: str, via: str) -> None:
    uuid = run(rf, "server", "create", "vm", "--flavor", "1", "--wait", via=via).stdout.split()[0]
    source = as_json(run(rf, "server", "show", uuid, "--json", via=via))["OS-EXT-SRV-ATTR:host"]
    moved = run(rf, "server", "migrate", uuid, "--wait", via=via)
    assert moved.exit_code == 0, moved.output
    assert "finish_resize" in moved.output and f"migrate of {uuid} finished" in moved.output
    shown = as_json(run(rf, "server", "show", uuid, "--json", via=via))
    dest = shown["OS-EXT-SRV-ATTR:host"]
    assert (shown["status"], shown["flavor"]["original_name"]) == ("VERIFY_RESIZE", "m1.tiny")
    assert dest != source
    assert run(rf, "server", "confirm-resize", uuid, "--wait", via=via).exit_code == 0

    log = run(rf, "server", "console-log", uuid, via=via)
    assert log.exit_code == 0 and f"started on {dest}" in log.stdout and source not in log.stdout
    assert run(rf, "server", "console-log", uuid, "--lines", "0", via=via).stdout == ""

    assert run(rf, "server", "reset-state", uuid, "--state", "error", via=via).exit_code == 0
    hard = run(rf, "server", "reboot", uuid, "--hard", "--wait", via=via)
    assert hard.exit_code == 0, hard.output
    assert as_json(run(rf, "server", "show", uuid, "--json", via=via))["status"] == "ACTIVE"
    assert run(rf, "server", "console-log", uuid, via=via).stdout.count("started on") == 2

    # Back to its first host, named; the same host is refused as Nova refuses it.
    same = run(rf, "server", "migrate", uuid, "--host", dest, via=via)
    assert same.exit_code == 1
    assert same.stderr.strip() == "Error: Cannot migrate to the host where the server exists."
    back = run(rf, "server", "migrate", uuid, "--host", source, "--wait", via=via)
    assert back.exit_code == 0, back.output
    assert run(rf, "server", "revert-resize", uuid, "--wait", via=via).exit_code == 0
    shown = as_json(run(rf, "server", "show", uuid, "--json", via=via))
    assert (shown["status"], shown["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", dest)


@pytest.mark.parametrize("via", ["local", "http"])
def test_wait_exits_non_zero_when_the_workflow_fails(rf: Stack, project: str, via: str) -> None:
    uuid = run(rf, "server", "create", "vm", "--flavor", "1", "--wait", via=via).stdout.split()[0]
    rf.set_failpoints(
        {"resizeflow.resize.resize_instance": [{"mode": "fatal", "instance_uuid": uuid}]}
    )
    failed = run(rf, "server", "resize", uuid, "--flavor", "2", "--wait", via=via)
    assert failed.exit_code == 1, failed.output
    assert failed.stderr.startswith(f"Error: resize of {uuid} failed at step resize_instance:")
    assert failed.stderr.count("\n") == 1
    assert "failed" in failed.stdout  # the step's row in the live display
    assert "Traceback" not in failed.output


@pytest.mark.parametrize("via", ["local", "http"])
def test_errors_are_one_line(rf: Stack, project: str, via: str) -> None:
    uuid = run(rf, "server", "create", "vm", "--flavor", "1", "--wait", via=via).stdout.split()[0]
    result = run(rf, "server", "confirm-resize", uuid, via=via)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: Cannot 'confirmResize' instance {uuid} while it is in vm_state active\n"
    )
    result = run(rf, "server", "resize", uuid, "--flavor", "nope", via=via)
    assert result.exit_code == 1 and result.output.count("\n") == 1
    result = run(rf, "migration", "list", via=via, token=f"alice:{project}")
    assert result.exit_code == 1
    assert (
        result.output
        == "Error: Policy doesn't allow os_compute_api:os-migrations:index to be performed.\n"
    )
    run(rf, "server", "delete", uuid, "--wait", via=via)


@pytest.mark.parametrize("via", ["local", "http"])
def test_names_power_states_and_plain_progress(rf: Stack, project: str, via: str) -> None:
    """Servers and flavors by name as with the openstack CLI; line-by-line --wait off a tty."""
    token, name = f"alice:{project}", f"web-{project}"
    created = run(
        rf, "server", "create", name, "--flavor", "m1.tiny", "--wait", via=via, token=token
    )
    assert created.exit_code == 0, created.output
    uuid = created.stdout.split()[0]
    listed = run(rf, "server", "list", via=via, token=token)
    assert "Running" in listed.stdout and " 1 " not in listed.stdout

    # An admin names another project's server; the wait prints plain lines.
    resized = run(rf, "server", "resize", name, "--flavor", "m1.small", "--wait", via=via)
    assert resized.exit_code == 0, resized.output
    assert "\x1b" not in resized.stdout
    lines = resized.stdout.splitlines()
    for step in ("prep_resize", "resize_instance", "finish_resize"):
        done = [ln for ln in lines if ln.startswith(f"step {step} on ")]
        assert done and done[-1].endswith(": done (attempt 1)"), lines
    assert lines[-1] == f"resize of {uuid} finished"
    assert len(lines) == len(set(lines)), "a line is printed when something changed"

    assert run(rf, "server", "revert-resize", name, "--wait", via=via).exit_code == 0
    assert run(rf, "server", "stop", name, "--wait", via=via, token=token).exit_code == 0
    assert "Shutdown" in run(rf, "server", "show", name, via=via, token=token).stdout

    bad = run(rf, "server", "resize", name, "--flavor", "m1.huge", via=via, token=token)
    assert bad.output == "Error: No flavor with a name or ID of 'm1.huge' exists.\n"
    missing = run(rf, "server", "show", "no-such-server", via=via, token=token)
    assert missing.output == "Error: No server with a name or ID of 'no-such-server' exists.\n"
    assert run(rf, "server", "delete", name, "--wait", via=via, token=token).exit_code == 0


def test_flavor_list(rf: Stack) -> None:
    table = run(rf, "flavor", "list")
    assert table.exit_code == 0 and "m1.xlarge" in table.output
    listed = as_json(run(rf, "flavor", "list", "--json", via="http"))
    assert [f["name"] for f in listed][:2] == ["m1.tiny", "m1.small"]


def test_unreachable_api_is_one_line(rf: Stack) -> None:
    result = CliRunner().invoke(main, ["flavor", "list", "--url", "http://127.0.0.1:9"], env=rf.env)
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot reach http://127.0.0.1:9/v2.1")
    assert result.output.count("\n") == 1


def test_the_installed_command_prints_no_traceback(rf: Stack) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "resizeflow", "workflow", "show", "999999"],
        env=rf.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "Error: Migration 999999 could not be found."
    assert "Traceback" not in done.stderr
