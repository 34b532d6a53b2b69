"""Middleware: what every delivery of every step does besides the step, in one place.

A :class:`Middleware` hooks into a delivery (:class:`~resizeflow.runner.delivery.Delivery`)
at fixed points of its path; every hook does nothing unless a subclass
overrides it. The delivery calls the hooks of :data:`DEFAULT`, in order:

- :class:`LogContext` binds the step, the host and the workflow's identity to
  every log line written while the delivery runs;
- :class:`Failpoints` injects the failures a failpoints file asks for, just
  before the step's work and just before its hypervisor work;
- :class:`Notifications` publishes the notifications a step queued, once the
  transaction that made them true has committed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

from resizeflow import flows, logs
from resizeflow.openstack.base import Notification
from resizeflow.steps import failpoints
from resizeflow.steps.context import HostRuntime, HypervisorWork, StepContext

if TYPE_CHECKING:
    from resizeflow.runner.delivery import Delivery

log = logging.getLogger(__name__)


class Middleware:
    """A hook into every delivery. Override the hooks you need; the rest do nothing."""

    def delivering(self, d: Delivery) -> AbstractContextManager[None]:
        """Around the whole delivery, from its claim to its end."""
        return nullcontext()

    def running(self, d: Delivery) -> AbstractContextManager[None]:
        """Around the run of a step this delivery holds (``d.claim`` is its claim)."""
        return nullcontext()

    def before_step(self, d: Delivery, ctx: StepContext) -> None:
        """In the step's transaction, its rows locked and its lease checked, just
        before the step's own work; what this raises fails the step."""

    def before_hypervisor_work(self, d: Delivery, work: HypervisorWork) -> None:
        """Just before the step's hypervisor work, with no row locked and the lease
        renewed; what this raises fails the step."""

    def after_hypervisor_work(self, d: Delivery, work: HypervisorWork) -> None:
        """Just after the step's hypervisor work, before its rows are locked again
        to commit it; what this raises fails the step with the work done."""

    def committed(self, d: Delivery, notes: list[Notification]) -> None:
        """After a transaction of the step committed: its first phase (before its
        hypervisor work), its finish, or its final failure. ``notes`` are the
        notifications the step queued in it."""


class LogContext(Middleware):
    """Every log line of a delivery names its step and host, and its workflow."""

    def delivering(self, d: Delivery) -> AbstractContextManager[None]:
        migration = d.flow.subject is flows.Subject.MIGRATION
        bound = {"migration_id": d.key} if migration else {}
        return logs.bound(step=d.step.task, host=d.runtime.host, **bound)

    def running(self, d: Delivery) -> AbstractContextManager[None]:
        assert d.claim is not None
        return logs.bound(request_id=d.claim.request_id, instance_uuid=d.claim.instance_uuid)


class Failpoints(Middleware):
    """Failure injection for tests and chaos runs (see :mod:`resizeflow.steps.failpoints`).

    An injected failure is raised just before the step's own work, inside its
    transaction, exactly like a driver failure; ``"<task>:hypervisor"``
    failpoints act just before the hypervisor work, with no row locked, and
    ``"<task>:after_hypervisor"`` ones just after it, before the step commits
    (a worker lost there leaves work done that its record does not show yet).
    """

    def before_step(self, d: Delivery, ctx: StepContext) -> None:
        failpoints.check(d.runtime.settings.failpoints_file, d.step.task, ctx.instance.uuid)

    def before_hypervisor_work(self, d: Delivery, work: HypervisorWork) -> None:
        assert d.claim is not None
        where = f"{d.step.task}:hypervisor"
        failpoints.check(d.runtime.settings.failpoints_file, where, d.claim.instance_uuid)

    def after_hypervisor_work(self, d: Delivery, work: HypervisorWork) -> None:
        assert d.claim is not None
        where = f"{d.step.task}:after_hypervisor"
        failpoints.check(d.runtime.settings.failpoints_file, where, d.claim.instance_uuid)


class Notifications(Middleware):
    """Publishes a step's notifications once what they announce has committed."""

    def committed(self, d: Delivery, notes: list[Notification]) -> None:
        publish(d.runtime, notes)


def publish(rt: HostRuntime, notes: list[Notification]) -> None:
    # Notifications are best effort, as in Nova: the step has committed, and a
    # broker hiccup here must not turn a finished step into a failed one.
    try:
        rt.notifier.publish(notes)
    except Exception:
        log.exception("could not publish %d notifications", len(notes))


class Chain:
    """Middleware in order, called as one: the delivery's single hook point.

    Each hook calls only the middleware that override it, so a hook nobody
    uses costs a delivery nothing.
    """

    def __init__(self, middleware: Sequence[Middleware]) -> None:
        self.middleware = tuple(middleware)

        def using(hook: str) -> tuple[Middleware, ...]:
            default = getattr(Middleware, hook)
            return tuple(m for m in self.middleware if getattr(type(m), hook) is not default)

        self._delivering = using("delivering")
        self._running = using("running")
        self._before_step = using("before_step")
        self._before_hypervisor_work = using("before_hypervisor_work")
        self._after_hypervisor_work = using("after_hypervisor_work")
        self._committed = using("committed")

    def delivering(self, d: Delivery) -> AbstractContextManager[None]:
        return _nested([m.delivering for m in self._delivering], d)

    def running(self, d: Delivery) -> AbstractContextManager[None]:
        return _nested([m.running for m in self._running], d)

    def before_step(self, d: Delivery, ctx: StepContext) -> None:
        for m in self._before_step:
            m.before_step(d, ctx)

    def before_hypervisor_work(self, d: Delivery, work: HypervisorWork) -> None:
        for m in self._before_hypervisor_work:
            m.before_hypervisor_work(d, work)

    def after_hypervisor_work(self, d: Delivery, work: HypervisorWork) -> None:
        for m in self._after_hypervisor_work:
            m.after_hypervisor_work(d, work)

    def committed(self, d: Delivery, notes: list[Notification]) -> None:
        for m in self._committed:
            m.committed(d, notes)


_Around = Callable[["Delivery"], AbstractContextManager[None]]


def _nested(hooks: list[_Around], d: Delivery) -> AbstractContextManager[None]:
    """The hooks' contexts, each made and entered in order, left in reverse."""
    if len(hooks) == 1:
        return hooks[0](d)  # the usual case, without a stack
    return _stacked(hooks, d)


@contextlib.contextmanager
def _stacked(hooks: list[_Around], d: Delivery) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for hook in hooks:
            stack.enter_context(hook(d))
        yield


DEFAULT = Chain([LogContext(), Failpoints(), Notifications()])
