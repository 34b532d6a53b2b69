"""The step runner: one delivery of one step, from its claim to its finish or failure.

- :mod:`.delivery`: :class:`~.delivery.Delivery`, which owns a step's delivery
  (claim, wait for a live copy, lock, run, commit; or fail) and carries what
  every part of that path needs.
- :mod:`.phases`: the step's function and its hypervisor work, run with no
  row locked under a renewed, fenced lease.
- :mod:`.failing`: a failure, retried later or final (the workflow errored out).
- :mod:`.middleware`: log binding, failpoints and notification publishing,
  hooked into every delivery in one place.
- :mod:`.stores`: the journal as the runner uses it, on SQLite and on
  PostgreSQL (whose one-message statements are its own).
- :mod:`.hostwork`: the host tasks' work, under the same retry policy.

:mod:`resizeflow.tasks` registers the Celery tasks that hand their deliveries here.
"""
