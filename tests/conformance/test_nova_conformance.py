"""Real Nova beside resizeflow: the same requests on both, every answer compared.

``make test-nova`` builds Nova's virtualenv and runs this tier alone (marker
``nova``). A run starts Nova 34 (Placement, nova-api, conductor, scheduler,
two fake-driver computes) and a resizeflow stack (PostgreSQL, Redis, two
hosts' workers, the API), replays :mod:`tests.conformance.scenarios` on both,
writes every difference to ``var/conformance/report.txt`` and fails each
scenario that has any. Locally a missing service or Nova virtualenv skips;
in CI (``CI`` set) it fails.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from resizeflow.openstack.images import ImageStore
from tests.conformance import engine
from tests.conformance.engine import Run, Side, report
from tests.conformance.known import KNOWN
from tests.conformance.nova import (
    COMPUTE_HOSTS,
    NovaDeployment,
    nova_available,
    require_service,
    signal_group,
)
from tests.conformance.scenarios import all_scenarios
from tests.conformance.standins import IMAGE_ID, IMAGE_NAME
from tests.support.stack import (
    PG_ADMIN_URL,
    RABBITMQ_URL,
    REDIS_URL,
    build_stack,
    destroy_stack,
    require,
)

pytestmark = [pytest.mark.nova, pytest.mark.timeout(900)]
SCENARIOS = all_scenarios()
REPORT = Path(os.environ.get("RESIZEFLOW_CONFORMANCE_REPORT", "var/conformance/report.txt"))


def _require_nova() -> None:
    require_service(nova_available(), "real Nova")


@pytest.fixture(scope="module")
def conformance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    _require_nova()
    require(PG_ADMIN_URL, 5432, "PostgreSQL")
    require(RABBITMQ_URL, 5672, "RabbitMQ")
    require(REDIS_URL, 6379, "Redis")
    tmp = Path(tmp_path_factory.mktemp("conformance"))
    nova = NovaDeployment(tmp / "nova", PG_ADMIN_URL, RABBITMQ_URL)
    stack = None
    try:
        nova.start()
        began = time.monotonic()
        # Both hosts advertise 127.0.0.1, as Nova's computes here have my_ip = 127.0.0.1.
        stack = build_stack(
            "postgresql", tmp, hosts=COMPUTE_HOSTS, broker="redis", migration_address="127.0.0.1"
        )
        image = tmp / "image.raw"
        image.write_bytes(b"\0" * 1048576)
        ImageStore(stack.settings.images_dir()).add(
            IMAGE_NAME, image, disk_format="raw", image_id=IMAGE_ID
        )
        rf_endpoint = stack.api_endpoint()
        rf_start = time.monotonic() - began
        engine.KNOWN[:] = KNOWN
        workers = stack.workers
        run = Run(
            Side("Nova", nova.endpoint, hold=nova.hold),
            Side(
                "resizeflow",
                rf_endpoint,
                hold=lambda host, held: signal_group(workers[host].pid, held),
            ),
        )
        for scenario in SCENARIOS:
            run.play(scenario)
        memory = nova.memory_mb()
        header = (
            f"Nova started in {nova.timings['start']:.1f}s "
            f"(databases {nova.timings['databases']:.1f}s), resizeflow in {rf_start:.1f}s; "
            f"Nova's processes use {memory:.0f} MB\n"
            f"Stand-in calls not answered: {nova.unanswered()}\n"
        )
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(header + report(run, SCENARIOS) + "\n")
        print(header + report(run, SCENARIOS).split("\n", 1)[0])
        yield run
    finally:
        logs = REPORT.parent / "nova-logs"
        if nova.sup is not None and nova.sup.log_dir.exists():
            shutil.rmtree(logs, ignore_errors=True)
            shutil.copytree(nova.sup.log_dir, logs)
        nova.close()
        if stack is not None:
            destroy_stack(stack)


@pytest.mark.parametrize("scenario", [s.name for s in SCENARIOS])
def test_nova_and_resizeflow_answer_alike(conformance: Run, scenario: str) -> None:
    failed = [f for f in conformance.failures if f.startswith(f"[{scenario}]")]
    found = conformance.of(scenario)
    assert not failed and not found, "\n".join(
        [*failed, f"{len(found)} differences from Nova:", *(str(d) for d in found)]
    )


def test_every_known_difference_still_occurs(conformance: Run) -> None:
    """A known difference that went away is taken off the list, not left to hide another."""
    gone = [k for k in KNOWN if not engine.SEEN.get(k)]
    assert not gone, "\n".join(f"no longer occurs: {k.scenario} / {k.path}: {k.why}" for k in gone)
