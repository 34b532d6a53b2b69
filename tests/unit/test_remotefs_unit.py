"""Command lines and error classification of the SSH transports: pure logic, no host."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path, PurePosixPath

import pytest

from resizeflow import retry
from resizeflow.conf import Settings
from resizeflow.errors import RemoteDiskFull, RemoteFilesystemError, RemoteHostUnreachable
from resizeflow.virt.remotefs import remote_filesystem
from resizeflow.virt.remotefs.argv import (
    SSHOptions,
    classify,
    control_path,
    remote_sh,
    rsync_argv,
    rsync_stats,
    scp_argv,
    ssh_argv,
    ssh_option_args,
    ssh_options,
)
from resizeflow.virt.remotefs.base import RemoteHost, part_path
from resizeflow.virt.remotefs.local import LocalFilesystem
from resizeflow.virt.remotefs.ssh import RsyncFilesystem, ScpFilesystem

pytestmark = pytest.mark.fast

OPTS = SSHOptions(
    key=Path("/etc/rf/id_ed25519"),
    user="nova",
    port=2222,
    known_hosts=Path("/var/lib/rf/ssh/known_hosts"),
    connect_timeout=7.5,
)
B = RemoteHost("cn-2", "192.0.2.12")
V6 = RemoteHost("cn-6", "fd00::6")


def _option_values(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]


def test_every_tool_gets_the_same_ssh_options() -> None:
    ssh = ssh_argv(OPTS, B, "true")
    assert ssh[0] == "ssh" and ssh[-3:] == ["--", "192.0.2.12", "true"]
    values = _option_values(ssh)
    for expected in (
        "BatchMode=yes",
        "ConnectTimeout=8",
        "StrictHostKeyChecking=accept-new",
        "Port=2222",
        "User=nova",
        "UserKnownHostsFile=/var/lib/rf/ssh/known_hosts",
        "IdentitiesOnly=yes",
    ):
        assert expected in values
    assert ssh[ssh.index("-i") + 1] == "/etc/rf/id_ed25519"
    scp = scp_argv(OPTS, Path("/src/disk"), B, PurePosixPath("/dst/.disk.part"))
    assert _option_values(scp) == values
    rsync = rsync_argv(OPTS, Path("/src/disk"), B, PurePosixPath("/dst/.disk.part"))
    remote_shell = rsync[rsync.index("-e") + 1].split()
    assert remote_shell[0] == "ssh" and _option_values(remote_shell) == values


def test_rsync_is_sparse_resumable_and_writes_the_part_file() -> None:
    argv = rsync_argv(OPTS, Path("/src/disk"), B, PurePosixPath("/dst/.disk.part"))
    assert {"-S", "--inplace", "-t", "-s", "--stats"} <= set(argv)
    assert "--append" not in argv and "--append-verify" not in argv
    assert "--timeout=60" in argv
    assert not any(a.startswith("--bwlimit") for a in argv)
    assert argv[-3:] == ["--", "/src/disk", "192.0.2.12:/dst/.disk.part"]
    limited = rsync_argv(SSHOptions(bwlimit_kib=5120), Path("/s"), V6, PurePosixPath("/d"))
    assert "--bwlimit=5120" in limited
    assert limited[-1] == "[fd00::6]:/d"


def test_scp_counts_its_limit_in_kilobits() -> None:
    argv = scp_argv(SSHOptions(bwlimit_kib=1000), Path("/s"), V6, PurePosixPath("/d"))
    assert argv[argv.index("-l") + 1] == "8000"
    assert argv[-1] == "[fd00::6]:/d"
    assert "-l" not in scp_argv(SSHOptions(), Path("/s"), V6, PurePosixPath("/d"))


def test_defaults_name_no_key_and_no_user() -> None:
    argv = ssh_argv(SSHOptions(), B, "true")
    assert "-i" not in argv
    assert not any(v.startswith(("User=", "UserKnownHostsFile=")) for v in _option_values(argv))


def test_part_path_is_a_hidden_sibling() -> None:
    assert part_path(PurePosixPath("/i/uuid/disk")) == PurePosixPath("/i/uuid/.disk.part")


def test_remote_sh_quotes_its_arguments_once() -> None:
    assert remote_sh('echo "$1"', "a b'c") == "sh -c 'echo \"$1\"' sh 'a b'\"'\"'c'"


@pytest.mark.parametrize(
    ("code", "stderr", "link", "kind"),
    [
        (255, "ssh: connect to host 192.0.2.12 port 22: Connection refused", {255}, "unreachable"),
        (255, "ssh: connect to host x port 22: Connection timed out", {255}, "unreachable"),
        (12, "rsync: connection unexpectedly closed (0 bytes received so far)", {12, 255},
         "unreachable"),
        (30, "rsync error: timeout in data send/receive (code 30)", {30}, "unreachable"),
        (-9, "timed out after 600s", {255}, "unreachable"),
        (11, 'rsync: [receiver] write failed on "/d": No space left on device (28)', {12},
         "full"),
        (12, "write failed: No space left on device (28)\nconnection unexpectedly closed",
         {12}, "full"),
        (255, "root@192.0.2.12: Permission denied (publickey).", {255}, "final"),
        (255, "Host key verification failed.", {255}, "final"),
        (23, 'rsync: [receiver] mkstemp "/d" failed: Permission denied (13)', {12}, "final"),
        (23, "rsync: [sender] link_stat \"/s\" failed: No such file or directory (2)", {12},
         "final"),
        (1, "", {255}, "final"),
    ],
)  # fmt: skip
def test_classify(code: int, stderr: str, link: set[int], kind: str) -> None:
    err = classify(B, "copying to /d", code, stderr, link_codes=frozenset(link), path="/d")
    expected = {
        "unreachable": RemoteHostUnreachable,
        "full": RemoteDiskFull,
        "final": RemoteFilesystemError,
    }[kind]
    assert type(err) is expected
    assert retry.is_transient(err) is (kind == "unreachable")
    assert "cn-2" in err.message
    if kind == "unreachable":
        assert "192.0.2.12" in err.message
    # Only SSH's own refusal is called one; a file's permissions are not the key's fault.
    assert ("SSH refused" in err.message) is ("(publickey)" in stderr or "Host key" in stderr)
    assert (stderr.splitlines()[-1].strip() if stderr else "no error output") in err.message


def test_rsync_stats() -> None:
    out = "Number of files: 1\nLiteral data: 1,048,576 bytes\nMatched data: 2048 bytes\n"
    assert rsync_stats(out) == (1048576, 2048)
    assert rsync_stats("") == (0, 0)


def test_settings_choose_the_transport_and_the_options(tmp_path: Path) -> None:
    s = Settings(
        state_dir=tmp_path,
        libvirt_uri="qemu:///system",
        ssh_key="/k",
        ssh_port=2022,
        disk_copy_bwlimit=64,
    )
    assert isinstance(remote_filesystem(s), RsyncFilesystem)
    assert isinstance(remote_filesystem(Settings(remote_filesystem_transport="scp")), ScpFilesystem)
    # On the default test:/// driver every host is on this machine.
    assert isinstance(remote_filesystem(Settings()), LocalFilesystem)
    opts = ssh_options(s)
    assert (opts.key, opts.port, opts.bwlimit_kib) == (Path("/k"), 2022, 64)
    assert opts.known_hosts == tmp_path / "ssh" / "known_hosts"
    assert ssh_options(Settings()).key is None


def test_shared_connections_live_in_the_deployment_dir_when_the_path_fits() -> None:
    s = Settings(state_dir=Path("/var/lib/resizeflow"))
    opts = ssh_options(s)
    assert control_path(opts) == "/var/lib/resizeflow/ssh/cm/%C"
    args = ssh_option_args(opts)
    assert "ControlMaster=auto" in args and "ControlPath=/var/lib/resizeflow/ssh/cm/%C" in args
    # Too deep for a unix socket: no sharing, rather than ssh failing to bind.
    fits = replace(opts, control_dir=Path("/" + "d" * 47))  # 48 + 1 + 40 + 17 = 106
    assert control_path(fits) == "/" + "d" * 47 + "/%C"
    deep = replace(opts, control_dir=Path("/" + "d" * 49))
    assert control_path(deep) is None
    assert not any(a.startswith("Control") for a in ssh_option_args(deep))
    assert control_path(replace(opts, control_dir=None)) is None


def test_a_dest_name_that_does_not_resolve_names_the_setting_on_the_dest() -> None:
    dest = RemoteHost("compute-2", "compute-2")
    stderr = "ssh: Could not resolve hostname compute-2: Name or service not known\r\n"
    err = classify(dest, "test -e", 255, stderr)
    assert type(err) is RemoteHostUnreachable
    assert err.message == (
        "Cannot reach host compute-2 (compute-2) over SSH: ssh: Could not resolve hostname "
        "compute-2: Name or service not known (compute-2 is the address compute-2 advertises: "
        "set RESIZEFLOW_MIGRATION_ADDRESS on compute-2 to one other hosts can resolve)"
    )
    # A host that is down is not a naming problem: no advice.
    down = classify(
        B, "test -e", 255, "ssh: connect to host 192.0.2.12 port 22: Connection refused"
    )
    assert "RESIZEFLOW_" not in down.message
