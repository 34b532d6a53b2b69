"""One router per Nova resource, all mounted under ``/v2.1``."""
