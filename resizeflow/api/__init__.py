"""The Nova-compatible HTTP API (OpenStack Compute v2.1)."""
