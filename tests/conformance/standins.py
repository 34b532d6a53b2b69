"""Small stand-ins for Neutron and Glance: the few calls real Nova makes in these scenarios.

Nova calls Neutron even for a server booted with ``networks: "none"`` (the
extension list, a port listing on every server show) and fetches the boot
image and Glance's image schema. With one network, it also creates a port,
binds it to the host, and reads back the network and subnet. Both stand-ins
keep their state in memory, listen on loopback only, and record every request
they could not answer, so a new call Nova makes shows up in the report rather
than as a silent difference.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

# The one image both sides boot: the same id in resizeflow's image store and here.
IMAGE_ID = "0c5f6a56-6d36-4a3c-9e0b-2d2f1b6f7a01"
IMAGE_NAME = "conformance-image"
# The one network a server may ask for: Nova knows it by this id, resizeflow by its name.
NETWORK_ID = "8d1c1b46-3c5e-4b1d-a0e6-5f0f5a3b2c10"
NETWORK_NAME = "private"
SUBNET_ID = "f2b0f3c4-7a55-4a3e-8a61-5b1f9c2a6d20"
SECURITY_GROUP_ID = "3b9d8c2e-1f4a-4e6b-9c7d-0a1b2c3d4e50"
_CREATED = "2026-01-01T00:00:00Z"

Handler = Callable[["Request"], tuple[int, Any]]


class Request:
    def __init__(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> None:
        self.method, self.path, self.query, self.body = method, path, query, body

    def one(self, key: str) -> str | None:
        values = self.query.get(key)
        return values[-1] if values else None


class StandIn:
    """An HTTP server on 127.0.0.1 whose routes are (method, path prefix) handlers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.unanswered: list[str] = []
        self.seen: list[str] = []
        self._lock = threading.Lock()
        owner = self

        class _Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw.strip() else None
                req = Request(self.command, split.path, parse_qs(split.query), body)
                status, payload = owner.dispatch(req)
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.routes: list[tuple[str, str, Handler]] = []
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def route(self, method: str, prefix: str, handler: Handler) -> None:
        self.routes.append((method, prefix, handler))

    def dispatch(self, req: Request) -> tuple[int, Any]:
        with self._lock:
            self.seen.append(f"{req.method} {req.path}")
            # The longest matching prefix wins.
            for method, prefix, handler in sorted(self.routes, key=lambda r: -len(r[1])):
                if method == req.method and req.path.startswith(prefix):
                    return handler(req)
            self.unanswered.append(f"{req.method} {req.path}")
        return 404, {"NotFound": {"message": f"{self.name} stand-in: no route"}}

    def start(self) -> StandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)


# -- Glance -------------------------------------------------------------------------
def image() -> dict[str, Any]:
    return {
        "id": IMAGE_ID,
        "name": IMAGE_NAME,
        "status": "active",
        "visibility": "public",
        "protected": False,
        "os_hidden": False,
        "disk_format": "raw",
        "container_format": "bare",
        "size": 1048576,
        "virtual_size": 1048576,
        "min_disk": 0,
        "min_ram": 0,
        "checksum": None,
        "os_hash_algo": None,
        "os_hash_value": None,
        "owner": "admin",
        "tags": [],
        "created_at": _CREATED,
        "updated_at": _CREATED,
        "self": f"/v2/images/{IMAGE_ID}",
        "file": f"/v2/images/{IMAGE_ID}/file",
        "schema": "/v2/schemas/image",
    }


def image_schema() -> dict[str, Any]:
    """Glance's image schema, as much of it as glanceclient reads to wrap an image."""
    text = {"type": ["null", "string"]}
    return {
        "name": "image",
        "additionalProperties": {"type": "string"},
        "properties": {
            "id": {"type": "string"},
            "name": text,
            "status": {"type": "string"},
            "visibility": {"type": "string"},
            "protected": {"type": "boolean"},
            "os_hidden": {"type": "boolean"},
            "checksum": text,
            "os_hash_algo": text,
            "os_hash_value": text,
            "owner": text,
            "size": {"type": ["null", "integer"]},
            "virtual_size": {"type": ["null", "integer"]},
            "container_format": text,
            "disk_format": text,
            "created_at": {"type": "string"},
            "updated_at": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "direct_url": {"type": "string"},
            "min_ram": {"type": "integer"},
            "min_disk": {"type": "integer"},
            "self": {"type": "string"},
            "file": {"type": "string"},
            "schema": {"type": "string"},
            "locations": {"type": "array"},
        },
        "links": [
            {"rel": "self", "href": "{self}"},
            {"rel": "enclosure", "href": "{file}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


def glance() -> StandIn:
    s = StandIn("glance")

    def show(req: Request) -> tuple[int, Any]:
        if req.path.rstrip("/").rsplit("/", 1)[-1] == IMAGE_ID:
            return 200, image()
        return 404, {"message": "No image found", "code": "404 Not Found"}

    s.route("GET", "/v2/images/", show)
    s.route("GET", "/v2/images", lambda req: (200, {"images": [image()]}))
    s.route("GET", "/v2/schemas/image", lambda req: (200, image_schema()))
    return s


# -- Neutron -------------------------------------------------------------------------
class Neutron:
    """One network with one subnet, a default security group, and the ports Nova makes."""

    def __init__(self) -> None:
        self.ports: dict[str, dict[str, Any]] = {}
        self._next_ip = 10

    def network(self) -> dict[str, Any]:
        return {
            "id": NETWORK_ID,
            "name": NETWORK_NAME,
            "status": "ACTIVE",
            "admin_state_up": True,
            "shared": True,
            "router:external": False,
            "port_security_enabled": True,
            "mtu": 1450,
            "subnets": [SUBNET_ID],
            "tenant_id": "admin",
            "project_id": "admin",
            "provider:network_type": "flat",
            "provider:physical_network": "physnet1",
            "provider:segmentation_id": None,
        }

    def subnet(self) -> dict[str, Any]:
        return {
            "id": SUBNET_ID,
            "name": "private-subnet",
            "network_id": NETWORK_ID,
            "ip_version": 4,
            "cidr": "10.0.0.0/24",
            "gateway_ip": "10.0.0.1",
            "enable_dhcp": True,
            "dns_nameservers": [],
            "host_routes": [],
            "allocation_pools": [{"start": "10.0.0.2", "end": "10.0.0.254"}],
            "ipv6_ra_mode": None,
            "ipv6_address_mode": None,
            "tenant_id": "admin",
            "project_id": "admin",
        }

    def security_group(self, project: str) -> dict[str, Any]:
        return {
            "id": SECURITY_GROUP_ID,
            "name": "default",
            "description": "Default security group",
            "tenant_id": project,
            "project_id": project,
            "security_group_rules": [],
        }

    @staticmethod
    def _match(item: dict[str, Any], req: Request) -> bool:
        for key, values in req.query.items():
            if key == "fields":
                continue
            have = item.get(key)
            if isinstance(have, list) or have is None:
                continue
            if str(have) not in values and not (
                isinstance(have, bool) and str(have).lower() in [v.lower() for v in values]
            ):
                return False
        return True

    def list_ports(self, req: Request) -> tuple[int, Any]:
        return 200, {"ports": [p for p in self.ports.values() if self._match(p, req)]}

    def create_port(self, req: Request) -> tuple[int, Any]:
        asked = dict((req.body or {}).get("port", {}))
        if asked.get("network_id") != NETWORK_ID:
            return 404, {"NeutronError": {"type": "NetworkNotFound", "message": "no network"}}
        port_id = str(uuid.uuid4())
        self._next_ip += 1
        n = self._next_ip
        mac = f"fa:16:3e:{n // 65536 % 256:02x}:{n // 256 % 256:02x}:{n % 256:02x}"
        project = asked.get("tenant_id") or asked.get("project_id") or ""
        port = {
            "id": port_id,
            "name": "",
            "network_id": NETWORK_ID,
            "tenant_id": project,
            "project_id": project,
            "mac_address": mac,
            "admin_state_up": True,
            "status": "ACTIVE",
            "device_id": asked.get("device_id", ""),
            "device_owner": asked.get("device_owner", ""),
            "fixed_ips": [{"subnet_id": SUBNET_ID, "ip_address": f"10.0.0.{self._next_ip}"}],
            "security_groups": asked.get("security_groups", [SECURITY_GROUP_ID]),
            "port_security_enabled": True,
            "binding:host_id": asked.get("binding:host_id", ""),
            "binding:vif_type": "ovs",
            "binding:vnic_type": "normal",
            "binding:vif_details": {"port_filter": True, "ovs_hybrid_plug": False},
            "binding:profile": {},
            "allowed_address_pairs": [],
            "extra_dhcp_opts": [],
            "dns_name": "",
            "tags": [],
            "created_at": _CREATED,
            "updated_at": _CREATED,
        }
        self.ports[port_id] = port
        return 201, {"port": port}

    def _port(self, req: Request) -> dict[str, Any] | None:
        return self.ports.get(req.path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".json"))

    def show_port(self, req: Request) -> tuple[int, Any]:
        port = self._port(req)
        if port is None:
            return 404, {"NeutronError": {"type": "PortNotFound", "message": "no port"}}
        return 200, {"port": port}

    def update_port(self, req: Request) -> tuple[int, Any]:
        port = self._port(req)
        if port is None:
            return 404, {"NeutronError": {"type": "PortNotFound", "message": "no port"}}
        port.update((req.body or {}).get("port", {}))
        return 200, {"port": port}

    def delete_port(self, req: Request) -> tuple[int, Any]:
        port = self._port(req)
        if port is not None:
            del self.ports[port["id"]]
        return 204, None

    def stand_in(self) -> StandIn:
        s = StandIn("neutron")
        s.route("GET", "/v2.0/extensions", lambda req: (200, {"extensions": []}))
        s.route("GET", "/v2.0/ports/", self.show_port)
        s.route("GET", "/v2.0/ports", self.list_ports)
        s.route("POST", "/v2.0/ports", self.create_port)
        s.route("PUT", "/v2.0/ports/", self.update_port)
        s.route("DELETE", "/v2.0/ports/", self.delete_port)
        s.route(
            "GET",
            "/v2.0/networks",
            lambda req: (
                200,
                {"networks": [n for n in [self.network()] if self._match(n, req)]},
            ),
        )
        s.route(
            "GET",
            "/v2.0/subnets",
            lambda req: (200, {"subnets": [n for n in [self.subnet()] if self._match(n, req)]}),
        )
        s.route(
            "GET",
            "/v2.0/security-groups",
            lambda req: (
                200,
                {"security_groups": [self.security_group(req.one("tenant_id") or "")]},
            ),
        )
        s.route("GET", "/v2.0/floatingips", lambda req: (200, {"floatingips": []}))
        s.route("GET", "/v2.0/quotas/", lambda req: (200, {"quota": {"port": -1}}))
        return s


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
