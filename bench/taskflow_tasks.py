"""The TaskFlow side of the peer comparison: its task classes and how it reaches its workers.

Both ends import this module: the engine in the bench process builds flows of
these tasks, and ``python -m bench.taskflow_worker HOST`` serves them. It is
light on purpose; the step code loads only inside a worker, when a task runs.

TaskFlow's worker-based engine routes a task to a worker that advertises the
task's class (by fully qualified name), not by queue. A step has to run on
its migration's source or dest host, as resizeflow routes it to that host's
queue, so every host gets a class of its own, ``StepOn_<host>``, and only
that host's worker serves it. The atom's name is the step's Celery task name
(``resizeflow.confirm.confirm_migration``), which is how the worker knows
which step of the flow table to run.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from taskflow import task as tf_task
from taskflow.patterns import linear_flow

from resizeflow.conf import Settings

# Both ends declare the same exchange; each worker's topic is its host's name.
EXCHANGE = "resizeflow-bench-taskflow"


@dataclass(frozen=True)
class Wire:
    """The broker TaskFlow talks over: the stack's own Redis, under a key prefix of its own."""

    url: str
    prefix: str

    @classmethod
    def of(cls, settings: Settings) -> Wire:
        return cls(url=settings.broker_url, prefix=f"{settings.broker_prefix}taskflow:")

    @property
    def transport_options(self) -> dict[str, Any]:
        # kombu's Redis transport prefixes every key it writes, as Celery's does
        # for the stack's own queues (see resizeflow.celery_app).
        return {"global_keyprefix": self.prefix}


class StepTask(tf_task.Task):  # type: ignore[misc]
    """One step of resizeflow's flow table, run by resizeflow's own step function."""

    def execute(self, migration_id: int) -> None:
        # Imported here: the engine's process never runs a step.
        from bench import taskflow_step

        taskflow_step.run(self.name, migration_id)


@functools.cache
def task_class(host: str) -> type[StepTask]:
    """The task class only ``host``'s worker serves; the same name on both ends."""
    name = "StepOn_" + re.sub(r"\W", "_", host)
    cls = type(name, (StepTask,), {"__module__": __name__, "__qualname__": name})
    globals()[name] = cls  # importable by name, as TaskFlow expects of a task class
    return cls


def build_flow(flow_name: str, subject: int, steps: list[tuple[str, str]]) -> Any:
    """A linear flow of (step task name, host) pairs, as resizeflow plans a chain."""
    return linear_flow.Flow(f"{flow_name}-{subject}").add(
        *(task_class(host)(name=step) for step, host in steps)
    )
