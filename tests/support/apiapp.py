"""An in-process API on a real SQLite database, with no workers: for HTTP error cases.

Workflows are sent to Celery's in-memory transport and never run, so a test
puts a server in the state it needs by writing its row, then asks the API.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from resizeflow.api.app import create_app
from resizeflow.celery_app import make_app
from resizeflow.conf import Settings
from resizeflow.db.migrate import upgrade
from resizeflow.db.models import ComputeNode, Instance
from resizeflow.db.session import Database
from resizeflow.states import PowerState, TaskState, VmState


def headers(token: str = "admin:admin", version: str | None = "latest") -> dict[str, str]:
    out = {"X-Auth-Token": token}
    if version is not None:
        out["OpenStack-API-Version"] = f"compute {version}"
    return out


@dataclass
class InProcessAPI:
    settings: Settings
    db: Database
    client: TestClient

    def request(self, method: str, path: str, token: str = "admin:admin", **kwargs: Any) -> Any:
        hdrs = {**headers(token), **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=hdrs, **kwargs)

    def server(
        self,
        project: str,
        vm_state: VmState = VmState.ACTIVE,
        task_state: TaskState | None = None,
        locked: bool = False,
        host: str = "hostA",
    ) -> str:
        """A server row in the given state, as a finished workflow would leave it."""
        uid = str(uuid.uuid4())
        with self.db.transaction() as s:
            s.add(
                Instance(
                    uuid=uid,
                    display_name=f"vm-{project}",
                    project_id=project,
                    user_id="alice",
                    host=host,
                    node=host,
                    flavor={
                        "id": 1,
                        "flavorid": "1",
                        "name": "m1.tiny",
                        "vcpus": 1,
                        "memory_mb": 512,
                        "root_gb": 1,
                        "ephemeral_gb": 0,
                        "swap": 0,
                    },
                    system_metadata={},
                    vm_state=vm_state,
                    task_state=task_state,
                    power_state=PowerState.RUNNING,
                    locked=locked,
                    locked_by="admin" if locked else None,
                )
            )
        return uid


def build_inprocess_api(tmp: Path, **overrides: Any) -> InProcessAPI:
    settings = Settings(state_dir=tmp, broker_url="memory://", notifications=False, **overrides)
    database = Database(settings.db_url)
    upgrade(database)
    with database.transaction() as s:
        for host in ("hostA", "hostB"):
            s.add(ComputeNode(host=host, node=host, vcpus=8, memory_mb=16384, local_gb=200))
    app = create_app(settings, database, make_app(settings))
    return InProcessAPI(settings, database, TestClient(app, raise_server_exceptions=False))
