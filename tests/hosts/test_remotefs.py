"""Disks crossing between two hosts that share nothing, over real sshd, rsync, scp and qemu-img.

The test process plays the source host: its files are local. The dest is a
host's sshd on its own loopback address, writing into that host's directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import pytest

from resizeflow import retry
from resizeflow.conf import Settings
from resizeflow.errors import (
    DiskNotFound,
    RemoteDiskFull,
    RemoteFilesystemError,
    RemoteHostUnreachable,
    TransientError,
    VirtError,
)
from resizeflow.virt.imagecopy import backing_chain, copy_disk
from resizeflow.virt.remotefs import remote_filesystem
from resizeflow.virt.remotefs.base import RemoteFilesystem, RemoteHost, part_path
from resizeflow.virt.remotefs.local import LocalFilesystem
from resizeflow.virt.remotefs.shared import is_path_shared_with, storage_is_shared
from resizeflow.virt.remotefs.ssh import RsyncFilesystem, ScpFilesystem, _SSHFilesystem
from tests.support.hosts import ADDRESSES, Hosts, keygen, require_root
from tests.support.hosts import file_sha256 as sha256

pytestmark = [pytest.mark.hosts, pytest.mark.timeout(120)]

MiB = 1024**2
TRANSPORTS = [pytest.param(RsyncFilesystem, id="rsync"), pytest.param(ScpFilesystem, id="scp")]


def write_sparse(path: Path, size: int, chunks: list[tuple[int, int]]) -> str:
    """A file of ``size`` bytes, holes except random data at (offset, length); its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.truncate(size)
        for offset, length in chunks:
            f.seek(offset)
            f.write(os.urandom(length))
    return sha256(path)


def write_random(path: Path, size: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
    return sha256(path)


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


@pytest.fixture(scope="module")
def big_file(two_hosts: Hosts) -> tuple[Path, str]:
    """200 MiB of random data on the source host, and its sha256: shared by the slow tests."""
    path = two_hosts.hosts[0].instances / "big" / "disk"
    return path, write_random(path, 200 * MiB)


@pytest.fixture
def src_dir(two_hosts: Hosts, request: pytest.FixtureRequest) -> Path:
    """A fresh instance directory on the source host (host-a, the test process)."""
    d = two_hosts.hosts[0].instances / request.node.name.replace("[", "-").rstrip("]")
    d.mkdir(parents=True)
    return d


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sparse_file_crosses_with_its_data_and_its_holes(
    two_hosts: Hosts, src_dir: Path, transport: type[_SSHFilesystem]
) -> None:
    b = two_hosts.hosts[1]
    size = 96 * MiB
    src = src_dir / "disk"
    digest = write_sparse(src, size, [(0, MiB), (40 * MiB, 2 * MiB), (size - MiB, MiB)])
    assert allocated(src) <= 4 * MiB + 64 * 1024  # the source really is sparse
    fs = transport(two_hosts.ssh_options())
    dest = b.rpath(src_dir.name, "disk")

    t0 = time.monotonic()
    result = fs.copy_file(src, b.remote, dest)
    elapsed = time.monotonic() - t0

    local = Path(dest)
    assert sha256(local) == digest
    assert local.stat().st_size == size == result.size
    # Holes stayed holes: the copy holds about the source's 4 MiB of data, not 96.
    assert allocated(local) <= allocated(src) + 256 * 1024, (allocated(local), allocated(src))
    assert leftovers(local.parent) == []
    assert fs.exists(b.remote, dest)
    assert not fs.exists(b.remote, part_path(dest))
    print(f"{transport.__name__}: 96 MiB sparse file in {elapsed:.2f}s")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_interrupted_copy_leaves_no_final_file_and_a_retry_completes(
    two_hosts: Hosts,
    src_dir: Path,
    big_file: tuple[Path, str],
    transport: type[_SSHFilesystem],
) -> None:
    b = two_hosts.hosts[1]
    src, digest = big_file
    size = src.stat().st_size
    dest = b.rpath(src_dir.name, "disk")
    slow = transport(two_hosts.ssh_options(bwlimit_kib=4 * 1024))

    # The step's time budget runs out mid-copy (at most 24 of 200 MiB sent,
    # and 6 s leave room for two SSH handshakes on a busy machine): the
    # transfer is killed.
    with pytest.raises(RemoteHostUnreachable) as info:
        slow.copy_file(src, b.remote, dest, timeout=6.0)
    assert retry.is_transient(info.value)
    assert "host-b" in info.value.message and "timed out" in info.value.message
    assert not Path(dest).exists()
    partial = Path(part_path(dest)).stat().st_size
    assert 0 < partial < size

    fast = transport(two_hosts.ssh_options())
    result = fast.copy_file(src, b.remote, dest)
    assert sha256(Path(dest)) == digest
    assert not Path(part_path(dest)).exists()
    if transport is RsyncFilesystem:
        # The retry continued the partial copy: what was there was not sent again.
        assert result.sent + result.matched == size
        assert result.matched >= partial - MiB, (result, partial)
        assert result.sent <= size - partial + MiB


_COPIER = textwrap.dedent(
    """
    import sys
    from pathlib import Path, PurePosixPath
    from resizeflow.virt.remotefs.base import RemoteHost
    from resizeflow.virt.remotefs.ssh import RsyncFilesystem
    from resizeflow.virt.remotefs.argv import SSHOptions
    key, kh, port, address, src, dest = sys.argv[1:]
    opts = SSHOptions(key=Path(key), known_hosts=Path(kh), port=int(port), bwlimit_kib=16384)
    RsyncFilesystem(opts).copy_file(Path(src), RemoteHost("host-b", address), PurePosixPath(dest))
    """
)


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def test_worker_killed_mid_copy_leaves_no_final_file_and_no_orphan_transfer(
    two_hosts: Hosts, src_dir: Path, big_file: tuple[Path, str]
) -> None:
    b = two_hosts.hosts[1]
    src, digest = big_file
    size = src.stat().st_size
    dest = b.rpath(src_dir.name, "disk")
    part = Path(part_path(dest))
    worker = subprocess.Popen(
        [sys.executable, "-c", _COPIER, str(two_hosts.key), str(two_hosts.known_hosts),
         str(two_hosts.port), b.address, str(src), str(dest)],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (part.exists() and part.stat().st_size >= 8 * MiB):
            assert worker.poll() is None, "the copy ended before it could be killed"
            assert time.monotonic() < deadline, "the copy never got going"
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGKILL)  # a worker SIGKILLed mid-step
        worker.wait(timeout=10)

    # rsync dies with its worker, and the dest's receiver with the connection:
    # nothing goes on writing the .part file behind the next attempt.
    deadline = time.monotonic() + 10
    while _processes_mentioning(str(part)):
        assert time.monotonic() < deadline, _processes_mentioning(str(part))
        time.sleep(0.1)
    held = part.stat().st_size
    while True:
        time.sleep(0.5)
        if part.stat().st_size == held:
            break
        assert time.monotonic() < deadline, "the .part file is still growing"
        held = part.stat().st_size
    time.sleep(1.0)
    assert part.stat().st_size == held
    assert 0 < held < size
    assert not Path(dest).exists()

    result = RsyncFilesystem(two_hosts.ssh_options()).copy_file(src, b.remote, dest)
    assert sha256(Path(dest)) == digest
    assert result.matched >= held - MiB
    assert not part.exists()


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, timeout=60)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_qcow2_overlay_brings_its_backing_file_only_when_missing(
    two_hosts: Hosts, src_dir: Path, transport: type[_SSHFilesystem]
) -> None:
    b = two_hosts.hosts[1]
    cache = src_dir / "_base"  # host-a's image cache
    base = cache / f"base-{src_dir.name}"
    base_digest = write_sparse(base, 48 * MiB, [(0, 4 * MiB), (24 * MiB, 4 * MiB)])
    overlays = []
    for name in ("i1", "i2"):
        disk = src_dir / name / "disk"
        disk.parent.mkdir()
        _qemu_img("create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(disk), "64M")
        # The guest's own writes, over the base and past its end.
        subprocess.run(
            ["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 2M", "-c", "write -P 0xa5 50M 1M",
             str(disk)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        overlays.append(disk)
    fs = transport(two_hosts.ssh_options())
    remote_cache = b.rpath(src_dir.name, "_base")
    dest_base = Path(remote_cache / base.name)

    first = copy_disk(
        fs, overlays[0], b.remote, b.rpath(src_dir.name, "i1", "disk"),
        local_cache=cache, remote_cache=remote_cache,
    )  # fmt: skip
    assert first.backing_copied == (remote_cache / base.name,)
    assert first.backing_present == ()
    assert sha256(dest_base) == base_digest
    seen = dest_base.stat()

    second = copy_disk(
        fs, overlays[1], b.remote, b.rpath(src_dir.name, "i2", "disk"),
        local_cache=cache, remote_cache=remote_cache,
    )  # fmt: skip
    assert second.backing_copied == ()
    assert second.backing_present == (remote_cache / base.name,)
    assert (dest_base.stat().st_ino, dest_base.stat().st_mtime_ns) == (
        seen.st_ino,
        seen.st_mtime_ns,
    )

    for name, overlay in zip(("i1", "i2"), overlays, strict=True):
        dest = Path(b.rpath(src_dir.name, name, "disk"))
        chain = backing_chain(dest, fmt="qcow2")
        # The copy leans on host-b's cache, never on host-a's.
        assert [c.path for c in chain] == [str(dest), str(dest_base)]
        assert chain[0].backing_path == str(dest_base)
        assert chain[0].backing_format == "raw"
        # What the guest sees is the same on both hosts, byte for byte.
        subprocess.run(
            ["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "qcow2", str(overlay), str(dest)],
            check=True, timeout=60,
        )  # fmt: skip
        assert leftovers(dest.parent) == []
    assert leftovers(dest_base.parent) == []


def test_backing_file_outside_the_image_cache_is_refused(two_hosts: Hosts, src_dir: Path) -> None:
    b = two_hosts.hosts[1]
    elsewhere = src_dir / "not-the-cache" / "secret"
    write_sparse(elsewhere, MiB, [(0, 4096)])
    disk = src_dir / "disk"
    _qemu_img("create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(elsewhere), str(disk))
    fs = RsyncFilesystem(two_hosts.ssh_options())
    with pytest.raises(VirtError, match="not in"):
        copy_disk(
            fs, disk, b.remote, b.rpath(src_dir.name, "disk"),
            local_cache=src_dir / "_base", remote_cache=b.rpath(src_dir.name, "_base"),
        )  # fmt: skip
    assert not Path(b.rpath(src_dir.name)).exists()


def test_shared_storage_is_detected_as_nova_does(two_hosts: Hosts, src_dir: Path) -> None:
    a, b = two_hosts.hosts[:2]
    fs = RsyncFilesystem(two_hosts.ssh_options())
    b.instances.mkdir(exist_ok=True)
    # Each host's own instances directory: nothing shared.
    assert is_path_shared_with(fs, b.remote, a.instances, b.rpath()) is False
    assert is_path_shared_with(fs, a.remote, b.instances, a.rpath()) is False
    # Both hosts pointed at one directory (RESIZEFLOW_INSTANCES_PATH without {host}).
    shared = two_hosts.root / "shared-instances"
    shared.mkdir(exist_ok=True)
    assert is_path_shared_with(fs, b.remote, shared) is True
    assert is_path_shared_with(fs, a.remote, shared, PurePosixPath(shared)) is True
    # The probe files are gone from every directory.
    for d in (a.instances, b.instances, shared):
        assert [p.name for p in d.iterdir() if p.name.startswith(".rf-shared-")] == []


def test_shared_storage_setting_overrides_the_detection(two_hosts: Hosts) -> None:
    a, b = two_hosts.hosts[:2]
    nowhere = RsyncFilesystem(two_hosts.ssh_options(port=1))  # would fail if asked
    for forced in (True, False):
        shared = storage_is_shared(forced, "host-a", nowhere, b.remote, a.instances, b.rpath())
        assert shared is forced
    local = RemoteHost("host-a", "127.0.0.1")
    assert storage_is_shared(None, "host-a", nowhere, local, a.instances, a.rpath()) is True
    with pytest.raises(RemoteHostUnreachable):
        storage_is_shared(None, "host-a", nowhere, b.remote, a.instances, b.rpath())
    # The probe file goes even when the other host could not be asked.
    assert [p.name for p in a.instances.iterdir() if p.name.startswith(".rf-shared-")] == []
    fs = RsyncFilesystem(two_hosts.ssh_options())
    assert storage_is_shared(None, "host-a", fs, b.remote, a.instances, b.rpath()) is False


def _every_operation(fs: RemoteFilesystem, host: RemoteHost, src: Path) -> Iterator[str]:
    dest = PurePosixPath("/tmp/resizeflow-never-written/disk")
    ops = {
        "copy_file": lambda: fs.copy_file(src, host, dest),
        "exists": lambda: fs.exists(host, dest),
        "create_dir": lambda: fs.create_dir(host, dest.parent),
        "remove": lambda: fs.remove(host, dest),
        "free_bytes": lambda: fs.free_bytes(host, dest.parent),
    }
    for name, op in ops.items():
        with pytest.raises(RemoteHostUnreachable) as info:
            op()
        assert isinstance(info.value, TransientError) and retry.is_transient(info.value)
        assert host.name in info.value.message and host.address in info.value.message
        yield f"{name}: {info.value.message}"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wrong_port_is_a_transient_error_naming_the_host(
    two_hosts: Hosts, src_dir: Path, transport: type[_SSHFilesystem]
) -> None:
    b = two_hosts.hosts[1]
    src = src_dir / "disk"
    write_sparse(src, MiB, [(0, 4096)])
    fs = transport(two_hosts.ssh_options(port=1))
    messages = list(_every_operation(fs, b.remote, src))
    assert all("Connection refused" in m for m in messages), messages
    assert not Path("/tmp/resizeflow-never-written").exists()


def test_stopped_sshd_is_a_transient_error_naming_the_host(two_hosts: Hosts, src_dir: Path) -> None:
    c = two_hosts.add_host("host-c", ADDRESSES[2])
    c.start()
    src = src_dir / "disk"
    write_sparse(src, MiB, [(0, 4096)])
    fs = RsyncFilesystem(two_hosts.ssh_options())
    try:
        assert fs.exists(c.remote, c.rpath()) is True  # reachable while its sshd runs
    finally:
        c.stop()
    messages = list(_every_operation(fs, c.remote, src))
    assert all("host-c (127.0.0.13)" in m for m in messages), messages


@pytest.fixture
def full_dir(two_hosts: Hosts, src_dir: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs in host-b's instances dir: a dest disk that fills up."""
    require_root("mounting a tmpfs")
    d = two_hosts.hosts[1].instances / f"full-{src_dir.name}"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True, timeout=30)
        d.rmdir()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_full_dest_disk_is_a_final_error_and_leaves_nothing_behind(
    two_hosts: Hosts, src_dir: Path, full_dir: Path, transport: type[_SSHFilesystem]
) -> None:
    b = two_hosts.hosts[1]
    src = src_dir / "disk"
    write_random(src, 24 * MiB)
    # rsync needs room for the blocks the source holds; scp for its full length.
    need = allocated(src) if transport is RsyncFilesystem else src.stat().st_size
    fs = transport(two_hosts.ssh_options())
    dest = PurePosixPath(full_dir / "disk")
    free = fs.free_bytes(b.remote, dest.parent)
    assert 15 * MiB < free <= 16 * MiB

    # Checked before sending a byte.
    with pytest.raises(RemoteDiskFull) as checked:
        fs.copy_file(src, b.remote, dest)
    assert not retry.is_transient(checked.value)
    assert "host-b" in checked.value.message and str(dest) in checked.value.message
    assert f"needs {need} more bytes and {free} are free" in checked.value.message
    assert list(full_dir.iterdir()) == []

    # And when the disk fills up during the copy itself.
    with pytest.raises(RemoteDiskFull) as during:
        fs.copy_file(src, b.remote, dest, check_space=False)
    assert not retry.is_transient(during.value)
    assert "host-b" in during.value.message and str(dest) in during.value.message
    if transport is RsyncFilesystem:
        assert "No space left on device" in during.value.message
    # No file under the final name, and the partial copy gave its space back.
    assert list(full_dir.iterdir()) == []
    assert fs.free_bytes(b.remote, dest.parent) == free


def test_remove_takes_a_partial_copy_with_the_file(two_hosts: Hosts, src_dir: Path) -> None:
    b = two_hosts.hosts[1]
    src = src_dir / "disk"
    write_sparse(src, 2 * MiB, [(0, MiB)])
    fs = RsyncFilesystem(two_hosts.ssh_options())
    dest = b.rpath(src_dir.name, "disk")
    fs.copy_file(src, b.remote, dest)
    Path(part_path(dest)).write_bytes(b"left by an interrupted copy")
    fs.remove(b.remote, dest)
    assert list(Path(dest).parent.iterdir()) == []
    fs.remove(b.remote, dest.parent)
    assert not Path(dest).parent.exists()
    # A source that is not there is named as such, before any connection.
    with pytest.raises(DiskNotFound, match="no-such-disk"):
        fs.copy_file(src_dir / "no-such-disk", b.remote, dest)
    # execute() runs a command there and hands back its output.
    assert fs.execute(b.remote, ["echo", "a b"]).strip() == "a b"


def test_refused_key_and_changed_host_key_are_final_errors_naming_the_host(
    two_hosts: Hosts, src_dir: Path
) -> None:
    d = two_hosts.add_host("host-d", ADDRESSES[3])
    d.start()
    fs = RsyncFilesystem(two_hosts.ssh_options())
    try:
        # accept-new pins host-d's key on first contact...
        assert fs.exists(d.remote, d.rpath()) is True
        pinned = subprocess.run(
            ["ssh-keygen", "-F", f"[{d.address}]:{d.port}", "-f", str(two_hosts.known_hosts)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert pinned.returncode == 0, pinned
        assert (
            Path(f"{d.root / 'ssh_host_ed25519_key'}.pub").read_text().split()[1] in pinned.stdout
        )

        # ...a key that host-d does not know is refused for good...
        stranger = keygen(src_dir / "stranger")
        with pytest.raises(RemoteFilesystemError) as refused:
            RsyncFilesystem(two_hosts.ssh_options(key=stranger)).exists(d.remote, d.rpath())
        assert not retry.is_transient(refused.value)
        assert "host-d" in refused.value.message and "Permission denied" in refused.value.message
    finally:
        d.stop()

    # ...and so is host-d coming back with another host key.
    (d.root / "ssh_host_ed25519_key").unlink()
    (d.root / "ssh_host_ed25519_key.pub").unlink()
    d.start()
    try:
        with pytest.raises(RemoteFilesystemError) as changed:
            fs.exists(d.remote, d.rpath())
        assert not retry.is_transient(changed.value)
        assert "host-d" in changed.value.message
        assert "has changed" in changed.value.message
        assert "Host key verification failed" in changed.value.message
    finally:
        d.stop()


def test_duplicate_copies_at_once_both_end_with_the_complete_file(
    two_hosts: Hosts, src_dir: Path
) -> None:
    # A step redelivered while its first copy still runs (the lease taken
    # over) copies the same file to the same place at the same time.
    b = two_hosts.hosts[1]
    src = src_dir / "disk"
    digest = write_random(src, 48 * MiB)
    dest = b.rpath(src_dir.name, "disk")
    fs = RsyncFilesystem(two_hosts.ssh_options(bwlimit_kib=32 * 1024))
    with ThreadPoolExecutor(2) as pool:
        copies = [pool.submit(fs.copy_file, src, b.remote, dest) for _ in range(2)]
        results = [c.result(timeout=90) for c in copies]
    assert [r.size for r in results] == [48 * MiB, 48 * MiB]
    assert sha256(Path(dest)) == digest
    assert leftovers(Path(dest).parent) == []


@pytest.mark.parametrize("transport", ["rsync", "scp"])
def test_a_worker_configured_by_its_settings_copies_to_the_other_host(
    two_hosts: Hosts, transport: str
) -> None:
    a, b = two_hosts.hosts[:2]
    env = two_hosts.env(a) | {"RESIZEFLOW_REMOTE_FILESYSTEM_TRANSPORT": transport}
    settings = Settings.from_env(env, state_dir=two_hosts.root / "state-a")
    fs = remote_filesystem(settings)
    assert settings.instances_dir("host-a") == a.instances
    dest_host = RemoteHost(
        "host-b", Settings.from_env(two_hosts.env(b)).advertised_migration_address
    )
    local_dir = settings.instances_dir(settings.host)
    remote_dir = PurePosixPath(settings.instances_dir(dest_host.name))
    assert (
        storage_is_shared(
            settings.shared_storage, settings.host, fs, dest_host, local_dir, remote_dir
        )
        is False
    )

    src = local_dir / f"settings-{transport}" / "disk"
    digest = write_sparse(src, 8 * MiB, [(MiB, MiB)])
    fs.copy_file(src, dest_host, remote_dir / src.parent.name / "disk")
    assert sha256(b.instances / src.parent.name / "disk") == digest


def test_local_transport_keeps_holes_commits_by_rename_and_refuses_a_full_disk(
    two_hosts: Hosts, src_dir: Path, full_dir: Path
) -> None:
    """The ``local`` transport (hosts on one machine) keeps the SSH transports' rules."""
    b = two_hosts.hosts[1]
    fs = LocalFilesystem()
    size = 64 * MiB
    src = src_dir / "disk"
    digest = write_sparse(src, size, [(0, MiB), (size - MiB, MiB)])
    dest = b.rpath(src_dir.name, "disk")
    seen: list[PurePosixPath] = []

    def before_commit(part: PurePosixPath) -> None:
        # The data is all there, under the temporary name only.
        assert sha256(Path(part)) == digest and not Path(dest).exists()
        seen.append(part)

    result = fs.copy_file(src, b.remote, dest, before_commit=before_commit)
    assert seen == [part_path(dest)]
    assert sha256(Path(dest)) == digest and result.size == size
    assert allocated(Path(dest)) <= allocated(src) + 256 * 1024
    assert leftovers(Path(dest).parent) == []

    big = src_dir / "big"
    write_random(big, 24 * MiB)
    target = PurePosixPath(full_dir / "disk")
    with pytest.raises(RemoteDiskFull) as checked:
        fs.copy_file(big, b.remote, target)
    assert "host-b" in checked.value.message and "more bytes" in checked.value.message
    with pytest.raises(RemoteDiskFull):
        fs.copy_file(big, b.remote, target, check_space=False)
    # Nothing under the final name, and the partial copy is gone.
    assert list(full_dir.iterdir()) == []
