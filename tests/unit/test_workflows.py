"""Step order, routing and the Celery app's delivery guarantees."""

from __future__ import annotations

import json

import pytest
from celery import Celery
from celery.canvas import Signature

from resizeflow import flows, routing, tasks
from resizeflow.celery_app import make_app
from resizeflow.conf import Settings

pytestmark = pytest.mark.fast

SRC, DST = "src-host", "dst-host"


@pytest.fixture(scope="module")
def app() -> Celery:
    app = make_app(Settings(broker_url="redis://127.0.0.1:6379/0", broker_prefix="rf-unit:"))
    app.loader.import_default_modules()
    app.finalize()
    return app


def test_tasks_are_registered_with_late_acks(app: Celery) -> None:
    for name in tasks.STEP_TASKS:
        task = app.tasks[name]
        assert (task.acks_late, task.reject_on_worker_lost) == (True, True), name


def test_every_registered_step_task_comes_from_the_table(app: Celery) -> None:
    registered = {
        name for name in app.tasks if name.startswith("resizeflow.") and ".periodic." not in name
    }
    host_tasks = set(vars(flows.HOST_TASKS).values())
    assert registered - host_tasks == set(flows.STEPS)


def _short(flow: flows.Flow) -> list[tuple[str, str]]:
    return [(s.step.rsplit(".", 1)[1], s.host) for s in routing.plan(flow, source=SRC, dest=DST)]


def test_plan_routes_each_step() -> None:
    assert _short(flows.RESIZE) == [
        ("prep_resize", DST),
        ("resize_instance", SRC),
        ("finish_resize", DST),
    ]
    assert _short(flows.CONFIRM) == [
        ("teardown_source_network", SRC),
        ("confirm_migration", SRC),
        ("drop_source_claim", SRC),
        ("finish_confirm", SRC),
    ]
    assert _short(flows.REVERT) == [
        ("teardown_dest_network", DST),
        ("destroy_dest_domain", DST),
        ("terminate_volume_connections", DST),
        ("drop_dest_claim", DST),
        ("finish_revert", SRC),
    ]


def test_instance_operations_run_on_the_instance_host() -> None:
    for flow in (flows.SPAWN, flows.STOP, flows.START, flows.DELETE):
        assert [(p.step, p.host) for p in routing.plan(flow, host="h9")] == [(flow.last.task, "h9")]


def test_a_plan_without_its_hosts_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a dest host"):
        routing.plan(flows.RESIZE, source=SRC)
    with pytest.raises(ValueError, match="needs a instance host"):
        routing.plan(flows.STOP, source=SRC, dest=DST)


@pytest.mark.parametrize("flow", [flows.RESIZE, flows.CONFIRM, flows.REVERT], ids=str)
def test_build_gives_immutable_routed_signatures(app: Celery, flow: flows.Flow) -> None:
    planned = routing.plan(flow, source=SRC, dest=DST)
    built = routing.build(app, 42, planned)
    # A chain survives the JSON round trip the broker gives it.
    for chain in (built, Signature.from_dict(json.loads(json.dumps(built)), app=app)):
        sigs = chain.tasks
        assert [s.task for s in sigs] == [p.step for p in planned]
        for sig, step in zip(sigs, planned, strict=True):
            assert sig.immutable
            assert tuple(sig.args) == (42,)
            assert sig.kwargs == {}
            assert sig.options["queue"] == f"compute.{step.host}"


def test_instance_task_signature(app: Celery) -> None:
    stop = flows.STOP.last.task
    sig = routing.signature(app, stop, "uuid-1", "h9")
    assert (sig.task, tuple(sig.args), sig.immutable) == (stop, ("uuid-1",), True)
    assert sig.options["queue"] == routing.queue_for("h9") == "compute.h9"


def test_app_config(app: Celery) -> None:
    conf = app.conf
    assert list(conf.accept_content) == ["json"]
    assert list(conf.result_accept_content) == ["json"]
    assert conf.task_serializer == conf.result_serializer == "json"
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["global_keyprefix"] == "rf-unit:"
    assert conf.resizeflow_settings.broker_prefix == "rf-unit:"


def test_amqp_broker_gets_publisher_confirms_and_no_redis_options() -> None:
    app = make_app(Settings(broker_url="amqp://guest@127.0.0.1//", broker_prefix="p:"))
    assert app.conf.broker_transport_options == {"confirm_publish": True}
