"""A step's function, its phases, and its hypervisor work under a renewed, fenced lease.

A step is a function of its context (see :data:`StepFn`). One with a
hypervisor phase is a generator: it reads its rows and yields its
:class:`~resizeflow.steps.context.HypervisorWork`, and once the runner has
locked the rows again it is resumed with the work's result, to commit its
effects.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from resizeflow import errors, flows, retry
from resizeflow.steps.context import HypervisorWork, PhasedStep, StepContext

if TYPE_CHECKING:
    from resizeflow.runner.delivery import Delivery

log = logging.getLogger(__name__)

StepFn = Callable[[StepContext], PhasedStep | None]


def resolve(step: flows.Step) -> StepFn:
    """The step's function, named ``module:function`` in the flow table."""
    module, _, name = step.fn.partition(":")
    fn: StepFn = getattr(importlib.import_module(module), name)
    return fn


def next_phase(phases: PhasedStep | None) -> HypervisorWork | None:
    """Run a step up to its hypervisor work, if it has any."""
    if not isinstance(phases, Generator):
        return None
    try:
        work: HypervisorWork = next(phases)
        return work
    except StopIteration:
        return None  # it decided there was no hypervisor work to do


def last_phase(phases: PhasedStep, result: Any) -> None:
    try:
        phases.send(result)
    except StopIteration:
        return
    raise errors.StepFailed(step=repr(phases), reason="a step has one hypervisor phase")


def run_unlocked(d: Delivery, work: HypervisorWork) -> Any:
    """Run ``work`` with no row locked, renewing the delivery's lease while it runs.

    ``RESIZEFLOW_STEP_TIMEOUT`` bounds it: the work gets the deadline (its
    copies and waits stop there), and work that overran it fails
    transiently, so the retry policy tries again and then errors out.
    """
    settings = d.runtime.settings
    deadline = time.monotonic() + settings.step_timeout
    row_id = d.row_id
    stop = threading.Event()

    def renew() -> None:
        # Fenced: once another copy took the step over, renewing stops and
        # the second lock finds the row no longer ours.
        while not stop.wait(settings.step_lease / 3):
            try:
                if not d.store.renew_lease(row_id, d.holder):
                    log.warning("lease of journal row %s taken over during %s", row_id, work.what)
                    return
            except retry.TRANSIENT as exc:
                log.warning("could not renew the lease of journal row %s: %s", row_id, exc)

    renewer = threading.Thread(target=renew, name=f"lease-{row_id}", daemon=True)
    renewer.start()
    started = time.monotonic()
    try:
        # Middleware act here, with no row locked: "<task>:hypervisor" failpoints.
        d.middleware.before_hypervisor_work(d, work)
        result = work.run(deadline)
        d.middleware.after_hypervisor_work(d, work)
    finally:
        stop.set()
        renewer.join()
    took = time.monotonic() - started
    if time.monotonic() > deadline:
        raise errors.TransientError(
            reason=f"{work.what} took {took:.0f}s, past the step timeout "
            f"({settings.step_timeout:.0f}s)"
        )
    log.info("%s took %.1fs", work.what, took)
    return result
