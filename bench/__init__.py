"""``resizeflow bench``: workflow throughput, latency and scaling against bare Celery.

The harness starts an isolated stack (a private redis-server, its own
PostgreSQL database, its own worker processes), runs the phases in
:mod:`bench.phases`, and writes JSON and a PNG under
``bench/results/``. The yardstick, :mod:`bench.noop`, is a chain of
no-op Celery tasks on the same queues, broker and worker processes.
"""
