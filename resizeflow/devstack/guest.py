"""A small test guest built from Debian packages only: a cloud kernel and a busybox initramfs.

Nothing is downloaded from outside the package archive and nothing binary is
committed. The kernel comes from ``apt-get download linux-image-*-cloud-amd64``,
unpacked with ``dpkg-deb -x`` (never installed); the initramfs holds
``busybox-static`` and the kernel's virtio modules.

At boot the guest's init prints, on the serial console, lines starting with
``RF`` that tests and the demo parse (see :func:`parse_console`):

- ``RF nproc=N``, ``RF memtotal_kb=N`` and ``RF disk vdX bytes=N`` per virtio disk;
- ``RF marker written=ID`` the first time it boots from a root disk, or
  ``RF marker found=ID`` when the root disk already carries a marker, so a
  test sees that a disk survived a resize or a revert;
- ``RF boots=N``, how many times this root disk has booted, this boot
  included (a count kept in the sector after the marker);
- ``RF boot_id=ID``, this boot's id (the start of the kernel's boot_id);
- ``RF ready`` once all of that is done, and ``RF poweroff`` when an ACPI
  power button press (libvirt's clean shutdown) makes it power off.

Then, every couple of seconds, it looks for volumes: virtio disks with a
serial (libvirt's ``<serial>``, the volume id), including those attached
while it runs (see :func:`parse_volumes`):

- ``RF vol vdX serial=S bytes=N marker=M written|found boot=B`` when it
  first sees a volume (again after a detach): a blank volume gets a header
  with a new marker M in its first 64 bytes, a volume with one keeps it;
- ``RF vollog vdX serial=S marker=M records=N boots=B1:n1,B2:n2`` each time
  it has appended a record (its boot id and a sequence number) to the
  volume's write log and read the log back: how many records each boot wrote,
  oldest boot first, as the volume holds them;
- ``RF volgone vdX serial=S`` once a volume it saw is gone.

It also serves, with busybox ``httpd`` on port 80 of every address, a page
of ``key=value`` lines: ``marker=ID``, ``boots=N`` and ``boot_id=ID`` (see
:func:`parse_page`). Each NIC (``eth*``) asks DHCP for an address in the
background, retrying until a server answers and renewing its lease; it does
not hold up ``RF ready``. Each address a NIC is given is printed (see
:func:`parse_net`):

- ``RF net ethN mac=MAC ip=IP/PREFIX boot=B`` when it gets a lease, and
  again when a renewal changes its address.

Run ``python -m resizeflow.devstack.guest OUT_DIR [--image-api URL]`` as root (``apt-get
download`` needs the package lists, and ``busybox`` must be installed); with
``--image-api`` the guest is uploaded through ``resizeflow api``'s image API.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

# The root disk's sectors and a volume's log slot are what tests read back;
# they are defined with the init that uses them.
from resizeflow.devstack.guest_init import BOOTS_SECTOR as BOOTS_SECTOR
from resizeflow.devstack.guest_init import INIT, UDHCPC_SCRIPT, UDHCPC_SCRIPT_PATH
from resizeflow.devstack.guest_init import MARKER_SECTOR as MARKER_SECTOR
from resizeflow.devstack.guest_init import VOLUME_LOG_SLOT as VOLUME_LOG_SLOT
from resizeflow.errors import ConfigError

KERNEL_PACKAGE = "linux-image-cloud-amd64"
# NOTE: the cloud kernel builds virtio as modules. They must be loaded in this
# order, each after what it depends on; button and evdev let init
# see the ACPI power button that libvirt's shutdown() presses.
MODULES = (
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/block/virtio_blk.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
    "drivers/input/evdev.ko",
    "drivers/acpi/button.ko",
)
CMDLINE = "console=ttyS0 quiet panic=-1"
# The admin of the API's noauth mode, which the dev stacks run with.
NOAUTH_ADMIN = "admin:admin"
# The name the guest is uploaded under: the dev stacks' default image, by name.
IMAGE_NAME = "rf-guest"


@dataclass(frozen=True)
class GuestFiles:
    kernel: Path
    initrd: Path
    disk: Path
    cmdline: str = CMDLINE


@dataclass(frozen=True)
class ConsoleReport:
    """What one boot of the test guest printed."""

    nproc: int
    memtotal_kb: int
    disks: dict[str, int]
    marker: str
    marker_written: bool
    boot_id: str = ""
    # How many times the root disk has booted, this boot included (0: not reported).
    boots: int = 0


@dataclass(frozen=True)
class NetReport:
    """An address one of the guest's NICs got from DHCP (``RF net``)."""

    iface: str
    mac: str
    ip: str
    prefix: int
    boot: str


@dataclass(frozen=True)
class PageReport:
    """The page the guest's web server serves: what the boot that answered found."""

    marker: str
    boots: int
    boot_id: str


@dataclass(frozen=True)
class VolumeReport:
    """One line the guest printed about a volume (``RF vol``, ``vollog``, ``volgone``)."""

    kind: str  # "vol" (first seen), "vollog" (its write log read back), "volgone"
    device: str
    serial: str
    size: int = 0
    marker: str = ""
    marker_written: bool = False
    boot: str = ""
    records: int = 0
    # Records in the volume's log per boot id, oldest boot first.
    boots: tuple[tuple[str, int], ...] = ()


def _run(*cmd: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConfigError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def kernel_package() -> str:
    """The versioned kernel package the ``linux-image-cloud-amd64`` meta-package points at."""
    out = _run("apt-cache", "depends", KERNEL_PACKAGE)
    for line in out.splitlines():
        if not line.strip().startswith("Depends:"):
            continue
        name = line.strip().removeprefix("Depends:").strip()
        if name.startswith("linux-image-") and name.endswith("-cloud-amd64"):
            return name
    raise ConfigError(f"apt knows no kernel behind {KERNEL_PACKAGE}; run apt-get update")


def _kernel_tree(work: Path) -> tuple[Path, Path]:
    package = kernel_package()
    _run("apt-get", "download", package, cwd=work)
    debs = sorted(work.glob(f"{package}_*.deb"))
    if not debs:
        raise ConfigError(f"apt-get download {package} produced no .deb")
    root = work / "root"
    _run("dpkg-deb", "-x", str(debs[-1]), str(root))
    vmlinuz = sorted((root / "boot").glob("vmlinuz-*"))[-1]
    modules = sorted((root / "lib" / "modules").iterdir())[-1]
    return vmlinuz, modules


def _initramfs(work: Path, modules: Path, out: Path) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        raise ConfigError("busybox is not installed (apt-get install busybox-static)")
    tree = work / "initramfs"
    (tree / "bin").mkdir(parents=True)
    (tree / "lib" / "modules").mkdir(parents=True)
    shutil.copy2(busybox, tree / "bin" / "busybox")
    order = []
    for rel in MODULES:
        src = modules / "kernel" / rel
        if not src.exists():
            raise ConfigError(f"kernel module {rel} is missing from {modules.name}")
        shutil.copy2(src, tree / "lib" / "modules" / src.name)
        order.append(src.name)
    (tree / "lib" / "modules" / "order").write_text(" ".join(order) + "\n")
    for rel, text in (("init", INIT), (UDHCPC_SCRIPT_PATH, UDHCPC_SCRIPT)):
        script = tree / rel
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(text)
        script.chmod(0o755)
    # Debian has no cpio binary by default; busybox's writes the newc format the kernel reads.
    names = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    archive = subprocess.run(
        [busybox, "cpio", "-o", "-H", "newc"],
        cwd=tree,
        input=("\n".join(names) + "\n").encode(),
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise ConfigError(f"busybox cpio failed: {archive.stderr!r}")
    with gzip.open(out, "wb", compresslevel=6) as fh:
        fh.write(archive.stdout)


def _recipe() -> str:
    """What the initramfs is made of: a build from another recipe is stale."""
    return hashlib.sha256("\0".join((INIT, UDHCPC_SCRIPT, *MODULES)).encode()).hexdigest() + "\n"


def build(out_dir: Path, *, disk_mb: int = 64) -> GuestFiles:
    """Build (or reuse) the kernel, initramfs and a blank raw root image in ``out_dir``.

    A build is reused only if it was made from this module's init and
    modules (its ``recipe`` file says so): a guest whose init changed is
    built again rather than booted with the old one.
    """
    out_dir = Path(out_dir)
    files = GuestFiles(out_dir / "vmlinuz", out_dir / "initrd.img", out_dir / "disk.raw")
    recipe = out_dir / "recipe"
    if recipe.exists() and recipe.read_text() == _recipe():
        return files
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rf-guest-", dir=out_dir) as tmp:
        work = Path(tmp)
        # apt-get download drops privileges to _apt where it can; _apt must write here.
        os.chmod(work, 0o755)  # noqa: S103
        vmlinuz, modules = _kernel_tree(work)
        _initramfs(work, modules, work / "initrd.img")
        disk = work / "disk.raw"
        with open(disk, "wb") as fh:
            fh.truncate(disk_mb * 1024 * 1024)
        # Each file appears complete or not at all; the recipe last marks the build done.
        recipe.unlink(missing_ok=True)
        shutil.copy2(vmlinuz, work / "vmlinuz")
        os.replace(work / "vmlinuz", files.kernel)
        os.replace(work / "initrd.img", files.initrd)
        os.replace(disk, files.disk)
        (work / "recipe").write_text(_recipe())
        os.replace(work / "recipe", recipe)
    return files


def upload(
    image_api: str, files: GuestFiles, name: str = IMAGE_NAME, token: str = NOAUTH_ADMIN
) -> str:
    """Load the guest through the image API at ``image_api`` (``.../image``), as an
    operator would: the kernel (``aki``), the ramdisk (``ari``), then the disk naming
    them in ``kernel_id``/``ramdisk_id``/``os_command_line``. All public, so every
    project boots it; uploading them so takes an admin ``token``.

    Returns the bootable image's id; an active image of that name already there is reused.
    """
    with httpx.Client(
        base_url=image_api.rstrip("/") + "/v2",
        headers={"X-Auth-Token": token, "Accept": "application/json"},
        timeout=300.0,
    ) as c:
        found = c.get("/images", params={"name": name, "status": "active"})
        found.raise_for_status()
        for image in found.json()["images"]:
            if image["disk_format"] == "raw":
                return str(image["id"])
        kernel = _upload(c, f"{name}-kernel", files.kernel, "aki", "aki", {})
        ramdisk = _upload(c, f"{name}-ramdisk", files.initrd, "ari", "ari", {})
        properties = {"kernel_id": kernel, "ramdisk_id": ramdisk, "os_command_line": files.cmdline}
        return _upload(c, name, files.disk, "raw", "bare", properties)


def _upload(
    c: httpx.Client,
    name: str,
    path: Path,
    disk_format: str,
    container_format: str,
    properties: dict[str, str],
) -> str:
    body = {
        "name": name,
        "disk_format": disk_format,
        "container_format": container_format,
        "visibility": "public",
        **properties,
    }
    created = c.post("/images", json=body)
    if created.status_code != 201:
        raise ConfigError(f"creating image {name}: {created.status_code} {created.text}")
    image_id = str(created.json()["id"])
    with open(path, "rb") as fh:  # httpx streams a file body: never the whole image in memory
        sent = c.put(
            f"/images/{image_id}/file",
            content=fh,
            headers={"Content-Type": "application/octet-stream"},
        )
    if sent.status_code != 204:
        raise ConfigError(f"uploading {path} as {name}: {sent.status_code} {sent.text}")
    return image_id


def parse_console(text: str) -> list[ConsoleReport]:
    """Every complete boot report in a console log, oldest first."""
    reports: list[ConsoleReport] = []
    cur: dict[str, object] = {}
    disks: dict[str, int] = {}
    # The last line may still be being written: only whole lines count.
    for raw in text.split("\n")[:-1]:
        line = raw.strip()
        if not line.startswith("RF "):
            continue
        word, _, tail = line[3:].partition(" ")
        key, _, value = word.partition("=") if "=" in word else (word, "", tail)
        value = value.strip()
        if key == "nproc":
            cur, disks = {"nproc": int(value)}, {}
        elif key == "memtotal_kb":
            cur["memtotal_kb"] = int(value)
        elif key == "disk":
            name, _, size = value.partition(" bytes=")
            disks[name] = int(size)
        elif key == "marker":
            kind, _, ident = value.partition("=")
            cur["marker"], cur["written"] = ident, kind == "written"
        elif key == "boots" and value.isdigit():
            cur["boots"] = int(value)
        elif key == "boot_id":
            cur["boot_id"] = value
        elif key == "ready" and "nproc" in cur:
            reports.append(
                ConsoleReport(
                    nproc=int(str(cur["nproc"])),
                    memtotal_kb=int(str(cur.get("memtotal_kb", 0))),
                    disks=dict(disks),
                    marker=str(cur.get("marker", "")),
                    marker_written=bool(cur.get("written", False)),
                    boot_id=str(cur.get("boot_id", "")),
                    boots=int(str(cur.get("boots", 0))),
                )
            )
            cur = {}
    return reports


def parse_volumes(text: str) -> list[VolumeReport]:
    """Every whole volume line of a console log, oldest first."""
    reports = []
    for raw in text.split("\n")[:-1]:
        words = raw.strip().split()
        if len(words) < 3 or words[0] != "RF" or words[1] not in ("vol", "vollog", "volgone"):
            continue
        fields = dict(w.partition("=")[::2] for w in words[3:] if "=" in w)
        boots = tuple(
            (b, int(n))
            for b, _, n in (p.partition(":") for p in fields.get("boots", "").split(",") if p)
        )
        reports.append(
            VolumeReport(
                kind=words[1],
                device=words[2],
                serial=fields.get("serial", ""),
                size=int(fields.get("bytes", 0)),
                marker=fields.get("marker", ""),
                marker_written="written" in words[3:],
                boot=fields.get("boot", ""),
                records=int(fields.get("records", 0)),
                boots=boots,
            )
        )
    return reports


def parse_net(text: str) -> list[NetReport]:
    """Every whole ``RF net`` line of a console log, oldest first."""
    reports = []
    for raw in text.split("\n")[:-1]:
        words = raw.strip().split()
        if len(words) < 3 or words[:2] != ["RF", "net"]:
            continue
        fields = dict(w.partition("=")[::2] for w in words[3:] if "=" in w)
        ip, _, prefix = fields.get("ip", "").partition("/")
        if not ip or not prefix.isdigit():
            continue
        reports.append(
            NetReport(
                iface=words[2],
                mac=fields.get("mac", ""),
                ip=ip,
                prefix=int(prefix),
                boot=fields.get("boot", ""),
            )
        )
    return reports


def parse_page(text: str) -> PageReport:
    """The guest's web page; a page without its marker, boot count or boot id is an error."""
    fields = dict(line.strip().partition("=")[::2] for line in text.splitlines() if "=" in line)
    boots = fields.get("boots", "")
    if not fields.get("marker") or not boots.isdigit() or not fields.get("boot_id"):
        raise ValueError(f"not the test guest's page: {text[:200]!r}")
    return PageReport(marker=fields["marker"], boots=int(boots), boot_id=fields["boot_id"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument(
        "--image-api", help="also upload it to this image API (e.g. http://127.0.0.1:8774/image)"
    )
    parser.add_argument("--token", default=NOAUTH_ADMIN, help="an admin's token for the upload")
    args = parser.parse_args(argv)
    files = build(args.out_dir)
    print(f"kernel {files.kernel}\ninitrd {files.initrd}\ndisk   {files.disk}")
    if args.image_api:
        print(f"image  {upload(args.image_api, files, token=args.token)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
