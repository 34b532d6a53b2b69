"""Fixtures the conformance modules share: resizeflow behind one real Keystone per run."""

from tests.conformance.keystone_cloud import keystone_cloud

__all__ = ["keystone_cloud"]
