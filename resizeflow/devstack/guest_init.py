"""The test guest's init and its DHCP client script, as shell text put into its initramfs.

:mod:`resizeflow.devstack.guest` builds the initramfs from these and parses
what they print; its docstring lists the ``RF`` lines.
"""

from __future__ import annotations

# The marker lives at 1 MiB into the root disk, past anything a partition table uses.
MARKER_SECTOR = 2048
# The boot count is in the sector after it.
BOOTS_SECTOR = MARKER_SECTOR + 1
# A volume's header is its first 64-byte slot; its write log is one record a
# slot from 4 KiB on, each flushed before the header counts it.
VOLUME_LOG_SLOT = 64

INIT = (
    """#!/bin/busybox sh
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
boot=$(cut -c1-8 /proc/sys/kernel/random/boot_id)
root_mark="" root_boots=0
if [ -b /dev/vda ]; then
  old=$(dd if=/dev/vda bs=512 skip=__SECTOR__ count=1 2>/dev/null | head -c 64 | tr -d '\\000')
  case "$old" in
    RFMARK:*) root_mark=${old#RFMARK:}; echo "RF marker found=$root_mark" ;;
    *)
      id=$(cat /proc/sys/kernel/random/uuid)
      printf 'RFMARK:%s' "$id" |
        dd of=/dev/vda bs=512 seek=__SECTOR__ conv=notrunc,fsync 2>/dev/null
      sync
      back=$(dd if=/dev/vda bs=512 skip=__SECTOR__ count=1 2>/dev/null | head -c 64 | tr -d '\\000')
      [ "$back" = "RFMARK:$id" ] && root_mark=$id && echo "RF marker written=$id" ||
        echo "RF marker failed"
      ;;
  esac
  # The boot count, in the sector after the marker: read, counted, written
  # back (the whole sector, flushed) and read again, so it is what the disk holds.
  n=$(dd if=/dev/vda bs=512 skip=__BOOTS__ count=1 2>/dev/null | head -c 64 | tr -d '\\000')
  n=${n#RFBOOTS:}
  case "$n" in ''|*[!0-9]*) n=0 ;; esac
  printf 'RFBOOTS:%s' $((n + 1)) |
    dd of=/dev/vda bs=512 seek=__BOOTS__ count=1 conv=notrunc,sync,fsync 2>/dev/null
  back=$(dd if=/dev/vda bs=512 skip=__BOOTS__ count=1 2>/dev/null | head -c 64 | tr -d '\\000')
  [ "$back" = "RFBOOTS:$((n + 1))" ] && root_boots=$((n + 1)) && echo "RF boots=$root_boots" ||
    echo "RF boots failed"
fi
# A web server on port 80 of every address, serving what this boot found,
# so a test reaching the guest over the network can tell which disk and boot answered.
mkdir -p /www /run
printf 'marker=%s\\nboots=%s\\nboot_id=%s\\n' "$root_mark" $root_boots $boot >/www/index.html
ip link set lo up
httpd -p 80 -h /www
# Every NIC asks DHCP for its address in the background, for as long as it
# takes (the server may come up after the guest) and renews its lease; the
# script prints each new address on the console.
for n in /sys/class/net/eth*; do
  [ -e "$n" ] || continue
  ip link set ${n##*/} up
  udhcpc -f -i ${n##*/} -s /etc/udhcpc.script -t 3 -T 2 -A 3 >/dev/null 2>&1 &
done
# The ACPI power button (libvirt's shutdown()) is an input device; one event
# from it powers the guest off cleanly, the way acpid would on a full distro.
for ev in /sys/class/input/event*; do
  if grep -q "Power Button" "$ev/device/name" 2>/dev/null; then
    (dd if=/dev/${ev##*/sys/class/} bs=24 count=1 of=/dev/null 2>/dev/null
     echo "RF poweroff"; sync; poweroff -f) &
  fi
done
echo "RF boot_id=$boot"
echo "RF ready"
# Volumes: virtio disks with a serial (the volume id); local disks have none.
vol_put() {  # device, 64-byte slot, text: written and flushed, or an error
  printf '%-63s\n' "$3" | dd of=/dev/$1 bs=64 seek=$2 count=1 conv=notrunc,fsync 2>/dev/null
}
vol_step() {  # device, serial
  local dev=$1 serial=$2 head mark n how log size
  head=$(dd if=/dev/$dev bs=64 count=1 2>/dev/null | tr -d '\\000' | head -n 1)
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
  log=$(dd if=/dev/$dev bs=64 skip=__LOG__ count=$n 2>/dev/null | tr -d '\\000' | awk '
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
""".replace("__SECTOR__", str(MARKER_SECTOR))
    .replace("__BOOTS__", str(BOOTS_SECTOR))
    .replace("__LOG__", str(VOLUME_LOG_SLOT))
)

# Where the initramfs holds the script busybox udhcpc runs on each lease event.
UDHCPC_SCRIPT_PATH = "etc/udhcpc.script"
# udhcpc runs it as "script EVENT" with the lease in its environment ($interface,
# $ip, $mask as a prefix length, $router). The address changes only when the
# lease's does, so a renewal of the same lease prints nothing.
UDHCPC_SCRIPT = """#!/bin/busybox sh
state=/run/dhcp.$interface
case "$1" in
  deconfig)
    ip addr flush dev $interface
    ip link set $interface up
    rm -f $state
    ;;
  bound|renew)
    now=$ip/$mask
    [ "$(cat $state 2>/dev/null)" = "$now" ] && exit 0
    ip addr flush dev $interface
    ip addr add $now dev $interface
    if [ -n "$router" ]; then
      while ip route del default dev $interface 2>/dev/null; do :; done
      for r in $router; do ip route add default via $r dev $interface && break; done
    fi
    echo "$now" >$state
    mac=$(cat /sys/class/net/$interface/address)
    boot=$(cut -c1-8 /proc/sys/kernel/random/boot_id)
    # udhcpc runs with its output discarded: the line goes to the console itself.
    echo "RF net $interface mac=$mac ip=$now boot=$boot" >/dev/console
    ;;
esac
"""
