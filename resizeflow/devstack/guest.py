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
# The marker lives at 1 MiB into the root disk, past anything a partition table uses.
MARKER_SECTOR = 2048
# A volume's header is its first 64-byte slot; its write log is one record a
# slot from 4 KiB on, each flushed before the header counts it.
VOLUME_LOG_SLOT = 64

INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m 2>/dev/null; done
echo "RF nproc=$(nproc)"
echo "RF memtotal_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
for d in /sys/block/vd*; do
  [ -e "$d/size" ] && echo "RF disk ${d##*/} bytes=$(( $(cat $d/size) * 512 ))"
done
if [ -b /dev/vda ]; then
  old=$(dd if=/dev/vda bs=512 skip=__SECTOR__ count=1 2>/dev/null | head -c 64 | tr -d '\\000')
  case "$old" in
    RFMARK:*) echo "RF marker found=${old#RFMARK:}" ;;
    *)
      id=$(cat /proc/sys/kernel/random/uuid)
      printf 'RFMARK:%s' "$id" |
        dd of=/dev/vda bs=512 seek=__SECTOR__ conv=notrunc,fsync 2>/dev/null
      sync
      back=$(dd if=/dev/vda bs=512 skip=__SECTOR__ count=1 2>/dev/null | head -c 64 | tr -d '\\000')
      [ "$back" = "RFMARK:$id" ] && echo "RF marker written=$id" || echo "RF marker failed"
      ;;
  esac
fi
# The ACPI power button (libvirt's shutdown()) is an input device; one event
# from it powers the guest off cleanly, the way acpid would on a full distro.
for ev in /sys/class/input/event*; do
  if grep -q "Power Button" "$ev/device/name" 2>/dev/null; then
    (dd if=/dev/${ev##*/sys/class/} bs=24 count=1 of=/dev/null 2>/dev/null
     echo "RF poweroff"; sync; poweroff -f) &
  fi
done
boot=$(cut -c1-8 /proc/sys/kernel/random/boot_id)
echo "RF boot_id=$boot"
echo "RF ready"
# Volumes: virtio disks with a serial (the volume id); local disks have none.
vol_put() {  # device, 64-byte slot, text: written and flushed, or an error
  printf '%-63s\n' "$3" | dd of=/dev/$1 bs=64 seek=$2 count=1 conv=notrunc,fsync 2>/dev/null
}
vol_step() {  # device, serial
  local dev=$1 serial=$2 head mark n how log size
  head=$(dd if=/dev/$dev bs=64 count=1 2>/dev/null | tr -d '\000' | head -n 1)
  set -- $head
  if [ "$1" = RFVOL ] && [ -n "$2" ]; then
    mark=$2 n=${3:-0} how=found
  elif [ -z "$head" ]; then
    mark=$(cat /proc/sys/kernel/random/uuid) n=0 how=written
    vol_put $dev 0 "RFVOL $mark 0" || return
  else
    mark=foreign
  fi
  case "$vol_seen" in
    *" $dev:$serial "*) ;;
    *) vol_seen="$vol_seen$dev:$serial " size=$(( $(cat /sys/block/$dev/size) * 512 ))
       echo "RF vol $dev serial=$serial bytes=$size marker=$mark $how boot=$boot" ;;
  esac
  [ "$mark" = foreign ] && return
  vol_seq=$((vol_seq + 1))
  vol_put $dev $((__LOG__ + n)) "$boot $vol_seq" || return
  n=$((n + 1))
  vol_put $dev 0 "RFVOL $mark $n" || return
  log=$(dd if=/dev/$dev bs=64 skip=__LOG__ count=$n 2>/dev/null | tr -d '\000' | awk '
    NF == 2 { if (!($1 in c)) o[k++] = $1; c[$1]++ }
    END { for (i = 0; i < k; i++) printf "%s%s:%d", (i ? "," : ""), o[i], c[o[i]] }')
  echo "RF vollog $dev serial=$serial marker=$mark records=$n boots=$log"
}
vol_seen=" " vol_seq=0
while true; do
  now=" "
  for d in /sys/block/vd*; do
    dev=${d##*/}
    serial=$(cat $d/serial 2>/dev/null)
    [ -n "$serial" ] && [ -b /dev/$dev ] || continue
    now="$now$dev:$serial "
    vol_step $dev $serial
  done
  for v in $vol_seen; do
    case "$now" in *" $v "*) ;; *) echo "RF volgone ${v%%:*} serial=${v#*:}" ;; esac
  done
  vol_seen=$now
  sleep 2
done
""".replace("__SECTOR__", str(MARKER_SECTOR)).replace("__LOG__", str(VOLUME_LOG_SLOT))


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
    init = tree / "init"
    init.write_text(INIT)
    init.chmod(0o755)
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
    return hashlib.sha256("\0".join((INIT, *MODULES)).encode()).hexdigest() + "\n"


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
