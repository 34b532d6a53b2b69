#!/bin/sh
# A whole compute host in one container, for compose's real-hosts profile:
# libvirtd (qemu:///system), the migration sshd, then the host's worker. On a
# machine of its own each is a systemd unit instead (workers/systemd/).
set -eu
: "${RESIZEFLOW_HOST:?set RESIZEFLOW_HOST to the compute host this container is}"
# Where the other hosts reach this one: the setting's own default, the host name.
address=${RESIZEFLOW_MIGRATION_ADDRESS:-$RESIZEFLOW_HOST}
port=${RESIZEFLOW_SSH_PORT:-22}
config=${RESIZEFLOW_SSHD_CONFIG:-/etc/resizeflow/sshd_config}

# Adds the project's qemu.conf keys and starts `libvirtd -d` unless one answers.
python -m resizeflow.devstack.libvirtd
mkdir -p /run/sshd
# Without -D sshd detaches once it listens; the container's init reaps it.
/usr/sbin/sshd -f "$config" -o "ListenAddress=$address" -o "Port=$port"
exec resizeflow-worker "$@"
