"""Does KVM really boot a guest on this machine?

``/dev/kvm`` opening and libvirt listing ``kvm`` in its domain capabilities is
not enough: under a nested, paravirtual KVM a Linux guest hangs at boot. The
probe boots a real kernel under ``-accel kvm`` with no root filesystem; a
kernel that runs to its "unable to mount root" panic within the timeout shows
that KVM works. The answer is a property of the machine, so it is cached in a
file keyed by the kernel and the QEMU binary, and the next worker reads it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

PROBE_TIMEOUT = 20.0
_BOOTED = ("Kernel panic", "VFS: Unable to mount root", "Run /init")


def _cache_file() -> Path:
    return Path(tempfile.gettempdir()) / "resizeflow-kvm-probe.json"


def _key(kernel: Path, qemu: str) -> str:
    k, q = kernel.stat(), Path(qemu).stat()
    return f"{kernel}:{k.st_size}:{k.st_mtime_ns}|{qemu}:{q.st_mtime_ns}"


def _boot(kernel: Path, qemu: str, timeout: float) -> bool:
    cmd = [
        qemu, "-accel", "kvm", "-nodefaults", "-no-user-config", "-display", "none",
        "-m", "128", "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1",
        "-no-reboot", "-serial", "stdio",
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or b""
        text = out.decode(errors="replace") if isinstance(out, bytes) else out
        return any(m in text for m in _BOOTED)
    return any(m in proc.stdout for m in _BOOTED)


def kvm_boots(kernels: Iterable[Path], timeout: float = PROBE_TIMEOUT) -> bool:
    """True when one of ``kernels`` boots under KVM here; False without a kernel to try."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    qemu = shutil.which("qemu-system-x86_64")
    kernel = next((Path(k) for k in kernels if Path(k).is_file()), None)
    if qemu is None or kernel is None:
        return False
    key = _key(kernel, qemu)
    cache = _cache_file()
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return bool(cached["kvm"])
    except (OSError, ValueError, KeyError):
        pass
    result = _boot(kernel, qemu, timeout)
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"key": key, "kvm": result}))
    os.replace(tmp, cache)
    return result


def host_kernels() -> list[Path]:
    """The host's own kernels, newest first: the first candidates for the probe."""
    return sorted(Path("/boot").glob("vmlinuz-*"), reverse=True)
