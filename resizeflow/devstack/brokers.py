"""Brokers for a local stack: a private redis-server, a key prefix, a RabbitMQ vhost."""

from __future__ import annotations

import shutil
import subprocess

import redis

from resizeflow.devstack.supervisor import Supervisor


def start_redis(sup: Supervisor, name: str = "redis") -> str:
    """A private redis-server on a unix socket under the state dir; returns its broker URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    sup.state_dir.mkdir(parents=True, exist_ok=True)
    sock = (sup.state_dir / f"{name}.sock").resolve()
    # A socket left by a server killed earlier would make the new one fail to bind.
    sock.unlink(missing_ok=True)
    sup.spawn(
        name,
        [
            binary,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(sup.state_dir.resolve()),
        ],
    )

    def ping() -> bool:
        try:
            return bool(redis.Redis(unix_socket_path=str(sock)).ping())
        except redis.exceptions.ConnectionError:
            return False

    sup.wait_until("redis-server", ping, timeout=30, watch=(name,))
    return f"redis+socket://{sock}"


def purge_prefix(redis_url: str, prefix: str) -> None:
    """Delete a stack's keys from a shared Redis."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _rabbitmqctl(*args: str, check: bool = True) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=check, capture_output=True)


def create_vhost(amqp_url: str, name: str) -> str:
    """A RabbitMQ vhost of its own, so a stack sees only its own queues; returns its URL."""
    user = amqp_url.split("://", 1)[1].split(":", 1)[0]
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
    return f"{amqp_url.rstrip('/')}/{name}"


def delete_vhost(name: str) -> None:
    _rabbitmqctl("delete_vhost", name, check=False)
