#!/bin/sh
# The SSH keys of one deployment, for the disk copies between its compute hosts.
#
#   ssh-keys.sh [--port N] OUTDIR HOST=ADDRESS [HOST=ADDRESS ...]
#
# OUTDIR/deployment/ goes to every host's /etc/resizeflow/ssh/:
#   id_ed25519, id_ed25519.pub  the key every worker copies with (RESIZEFLOW_SSH_KEY)
#   authorized_keys             that key, for the migration sshd
#   known_hosts                 every host's key at ADDRESS:N (RESIZEFLOW_SSH_KNOWN_HOSTS)
# OUTDIR/HOST/ goes to that host's /etc/resizeflow/ssh-host/ only:
#   ssh_host_ed25519_key(.pub)  the migration sshd's host key
#
# Keys that exist are kept: run it again with one more HOST=ADDRESS to add a
# host, then hand the new known_hosts to every host. ADDRESS is the host's
# RESIZEFLOW_MIGRATION_ADDRESS and N its RESIZEFLOW_SSH_PORT (22 by default).
set -eu
umask 077

port=22
if [ "${1:-}" = "--port" ]; then
  port=$2
  shift 2
fi
if [ $# -lt 2 ]; then
  echo "usage: $0 [--port N] OUTDIR HOST=ADDRESS [HOST=ADDRESS ...]" >&2
  exit 2
fi
out=$1
shift

keygen() {  # keygen FILE COMMENT: an ed25519 key without a passphrase, unless FILE exists
  [ -e "$1" ] || ssh-keygen -q -t ed25519 -N "" -C "$2" -f "$1"
}

mkdir -p "$out/deployment"
keygen "$out/deployment/id_ed25519" resizeflow-migration
cp "$out/deployment/id_ed25519.pub" "$out/deployment/authorized_keys.new"

: >"$out/deployment/known_hosts.new"
for spec in "$@"; do
  host=${spec%%=*}
  address=${spec#*=}
  case $host in
    "" | */* | .*) echo "bad host name in $spec" >&2; exit 2 ;;
  esac
  if [ "$host" = "$spec" ] || [ -z "$address" ]; then
    echo "expected HOST=ADDRESS, got $spec" >&2
    exit 2
  fi
  mkdir -p "$out/$host"
  keygen "$out/$host/ssh_host_ed25519_key" "$host"
  # ssh looks a host up as [address]:port when the port is not 22.
  if [ "$port" = 22 ]; then name=$address; else name="[$address]:$port"; fi
  # The key type and key only: the comment is the host's name, not part of the pin.
  printf '%s %s\n' "$name" "$(cut -d' ' -f1-2 "$out/$host/ssh_host_ed25519_key.pub")" \
    >>"$out/deployment/known_hosts.new"
done

# Public files, readable by anyone; replaced whole so a reader never sees half of one.
chmod 644 "$out/deployment/authorized_keys.new" "$out/deployment/known_hosts.new"
mv "$out/deployment/authorized_keys.new" "$out/deployment/authorized_keys"
mv "$out/deployment/known_hosts.new" "$out/deployment/known_hosts"
echo "keys in $out: deployment/ to every host, each HOST/ to that host alone"
