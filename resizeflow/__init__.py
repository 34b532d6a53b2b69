"""resizeflow: Nova's resize confirm/revert flow as Celery chains on per-host queues."""

__version__ = "0.1.0"
