#!/bin/sh
# Start the worker of one compute host. RESIZEFLOW_HOST names the host; every
# other setting comes from the RESIZEFLOW_* environment (see docs/settings.md).
set -eu
: "${RESIZEFLOW_HOST:?set RESIZEFLOW_HOST to the compute host this worker serves}"
exec resizeflow worker --host "$RESIZEFLOW_HOST" "$@"
