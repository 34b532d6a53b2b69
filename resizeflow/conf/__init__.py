"""Settings: the one place that reads the environment.

Nothing here runs at import time. Call :func:`load` (or ``Settings.from_env``) at
process start; a bad value raises :class:`~resizeflow.errors.ConfigError` naming the
variable, so a misconfigured worker refuses to start instead of failing mid-workflow.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from resizeflow.conf.netnames import check_length, check_template, device_name
from resizeflow.conf.parsers import (
    _address,
    _auth,
    _bool,
    _choice,
    _cidr,
    _float,
    _host,
    _int,
    _opt_int,
    _plain_path,
    _pool,
    _port,
    _transport,
    _tristate,
    _url,
    _virt_type,
)
from resizeflow.errors import ConfigError

PREFIX = "RESIZEFLOW_"

# What each setting does, in the words of the settings reference (rendered by
# resizeflow.docs_gen, so it cannot drift from the fields): written only here.
# A field without an entry fails at import.
HELP: dict[str, str] = {
    "STATE_DIR": "The SQLite file and each host's instance dirs.",
    "DATABASE_URL": (
        "`sqlite:///...` or `postgresql+psycopg://...`; empty: SQLite under the state dir."
    ),
    "BROKER_URL": "Redis or RabbitMQ (`amqp://...`).",
    "BROKER_PREFIX": "A Redis key prefix, to share one Redis between stacks.",
    "LIBVIRT_URI": "`qemu:///system` on a real host.",
    "HOST": "The compute host a worker serves.",
    "RESIZE_CONFIRM_WINDOW": "Seconds before beat confirms a resize by itself; 0 is off.",
    "INSTANCES_PATH": (
        "Where each host keeps its instance dirs (`{state_dir}` and `{host}` are "
        "substituted); point every host at one path for shared storage."
    ),
    "ALLOW_RESIZE_TO_SAME_HOST": (
        "Nova's option of the same name: the scheduler may pick the source host."
    ),
    "SHARED_STORAGE": (
        "Unset or `auto` detects per resize whether the dest sees the source's instances dir, as "
        "Nova's `_is_path_shared_with` does; `true`/`false` force it."
    ),
    "MIGRATION_ADDRESS": (
        "Nova's `my_ip`: where other hosts reach this one over SSH, advertised in its service"
        " record; empty: the host name, resolved by DNS."
    ),
    "REMOTE_FILESYSTEM_TRANSPORT": (
        "How disks reach another host, as Nova's option of the same name: `rsync` (sparse, "
        "resumable) or `scp` over SSH, or `local` when every host's instances dir is on this "
        "machine. `auto` is `local` on `test:///` (its simulated hosts share this machine) "
        "and `rsync` on a real hypervisor, as Nova; a value set here wins."
    ),
    "SSH_KEY": "The deployment's private key for host-to-host copies; empty: ssh's own default.",
    "SSH_USER": "The remote user of host-to-host copies; empty: ssh's.",
    "SSH_PORT": "The port other hosts' sshd listen on.",
    "SSH_KNOWN_HOSTS": (
        "The hosts' keys, pinned per deployment; empty: `{state_dir}/ssh/known_hosts`."
    ),
    "SSH_STRICT_HOST_KEY_CHECKING": (
        "`accept-new` pins a host's key when first seen and refuses a changed one; `yes` "
        "needs every key in the known_hosts file beforehand."
    ),
    "SSH_CONNECT_TIMEOUT": "Seconds before an unreachable host counts as down (a transient error).",
    "DISK_COPY_BWLIMIT": "A disk copy's bandwidth cap in KiB/s; 0 is none.",
    "WORKER_POOL": "The worker's Celery pool: threads, prefork or solo.",
    "WORKER_NAME": (
        "The worker's Celery node name after `@`; empty: the machine's name. Two workers of "
        "one host need two."
    ),
    "WORKER_CONCURRENCY": "The size of the worker's Celery pool.",
    "FLOWER_BASIC_AUTH": (
        "Flower's `user:password`; required beyond localhost, where Flower is refused without it."
    ),
    "FLOWER_PORT": "Where Flower listens.",
    "LOG_FORMAT": "Structured (JSON lines) logs, or text.",
    "LOG_LEVEL": "The log level.",
    "PERIODIC_INTERVAL": (
        "How often beat runs its periodic tasks: auto-confirm, the reconciler and the "
        "incomplete-migration cleanup."
    ),
    "REPORT_INTERVAL": "Nova's `report_interval`: how often a worker reports its heartbeat.",
    "SERVICE_DOWN_TIME": "Nova's `service_down_time`: a host whose heartbeat is older shows down.",
    "HOST_CALL_TIMEOUT": (
        "How long a request that needs a host's answer (a console log) waits for it."
    ),
    "STEP_TIMEOUT": "The longest a step may run; sizes Redis's visibility timeout.",
    "STEP_LEASE": "A running step's lease, renewed by its worker's heartbeat.",
    "RECONCILE_DEADLINE": (
        "How long a workflow may stall (its next step not started, or its running step's "
        "lease lapsed) before the reconciler re-drives it."
    ),
    "BROKER_CHECK_INTERVAL": (
        "How often beat checks that the broker still holds its data (the epoch's marker, see "
        "`resizeflow.brokerloss`); 0 is never."
    ),
    "STEP_MAX_RETRIES": "Retries of a transient step failure.",
    "RETRY_BACKOFF": "The first retry's backoff in seconds; exponential, with jitter.",
    "RETRY_BACKOFF_MAX": "The longest backoff, in seconds.",
    "NOTIFICATIONS": "Publish Nova's versioned notifications on the broker.",
    "NOTIFICATIONS_DURABLE": (
        "Declare the notifications' exchange and queues durable: set it as the Nova "
        "deployment's oslo.messaging `amqp_durable_queues` (not durable by default)."
    ),
    "FAILPOINTS_FILE": "Failure injection for tests (see `resizeflow/steps/failpoints.py`).",
    "NODE_VCPUS": "Overrides the node's VCPUs; unset: the driver's.",
    "NODE_MEMORY_MB": "Overrides the node's memory; unset: the driver's.",
    "NODE_LOCAL_GB": "Overrides the node's disk; unset: the driver's.",
    "CPU_ALLOCATION_RATIO": "The VCPU allocation ratio, as in Nova.",
    "RAM_ALLOCATION_RATIO": "The memory allocation ratio, as in Nova.",
    "DISK_ALLOCATION_RATIO": "The disk allocation ratio, as in Nova.",
    "QUOTA_CORES": "A project's default cores quota; -1 is unlimited.",
    "QUOTA_RAM": "A project's default RAM quota in MB; -1 is unlimited.",
    "QUOTA_INSTANCES": "A project's default servers quota; -1 is unlimited.",
    "AUTH": (
        "The API's authentication: `noauth` takes a `user:project` token at its word (Nova's "
        "noauth2), so the API refuses to listen beyond localhost with it; `tokens` checks it "
        "against RESIZEFLOW_TOKENS_FILE, in constant time; `keystone` has keystonemiddleware's "
        "auth_token validate it with Keystone (the RESIZEFLOW_KEYSTONE_* settings)."
    ),
    "NOAUTH_ANY_ADDRESS": (
        "Let the API listen on an address beyond localhost with `RESIZEFLOW_AUTH=noauth` "
        "(anyone who reaches it is whoever they say, admin included); it logs a warning."
    ),
    "KEYSTONE_URL": (
        "Keystone's public identity endpoint (`http://keystone:5000/v3`): where tokens are "
        "validated, and the `WWW-Authenticate` of a 401."
    ),
    "KEYSTONE_USERNAME": "The service user that validates tokens (it needs the service role).",
    "KEYSTONE_PASSWORD": "The service user's password; never logged.",
    "KEYSTONE_PROJECT": "The service user's project (`service` by convention).",
    "KEYSTONE_USER_DOMAIN": "The service user's domain (name).",
    "KEYSTONE_PROJECT_DOMAIN": "The service project's domain (name).",
    "KEYSTONE_REGION": "The region of the identity endpoint in Keystone's catalog.",
    "KEYSTONE_CAFILE": "A CA bundle for an https identity endpoint; empty: the system's.",
    "KEYSTONE_TOKEN_CACHE_TIME": (
        "Seconds a validated token is remembered (keystonemiddleware's `token_cache_time`): "
        "a token revoked meanwhile still works here until then; -1 validates every request."
    ),
    "KEYSTONE_MEMCACHED_SERVERS": (
        "memcached `host:port` list for the token cache shared by API processes; empty: "
        "each process's own memory."
    ),
    "TOKENS_FILE": "The API's tokens, for `RESIZEFLOW_AUTH=tokens`.",
    "POLICY_FILE": "JSON overrides of single policy rules (Nova's rule names accepted).",
    "VIRT_TYPE": (
        "The libvirt domain type: `kvm`, `qemu` (TCG) or `test`; empty detects it: kvm where "
        "a guest really boots under it, else qemu. The test driver always uses test."
    ),
    "SHUTDOWN_TIMEOUT": (
        "Nova's `shutdown_timeout`: how long a clean (ACPI) shutdown may take before the "
        "domain is destroyed."
    ),
    "SHUTDOWN_RETRY_INTERVAL": (
        "Nova's `shutdown_retry_interval`: how often the power button is pressed again."
    ),
    "RUNNING_TIMEOUT": "How long a started guest may take to be reported running.",
    "IMAGES_PATH": (
        "The image store, shared by the API and every host (`{state_dir}` is substituted); "
        "Nova's `/images` proxy lists it."
    ),
    "DEFAULT_IMAGE": "The image (id or name) booted when a request has no imageRef.",
    "INSTANCE_NAME_TEMPLATE": (
        "Nova's option of the same name: libvirt domain names. With `{host}` in it, hosts can"
        " share one libvirtd."
    ),
    "BRIDGE": (
        "A network's Linux bridge on a host, which its ports' taps and its VXLAN device join: "
        "`{vni}` (required) is the network's VXLAN id, `{host}` the host's name; at most 15 "
        "characters for the largest VNI."
    ),
    "VXLAN_DEVICE": (
        "A network's VXLAN device on a host, as `RESIZEFLOW_BRIDGE` (`{vni}` required, `{host}` "
        "optional, at most 15 characters)."
    ),
    "TUNNEL_ADDRESS": (
        "Neutron's `local_ip`: the address this host's VXLAN tunnels start and end at, recorded "
        "as its tunnel endpoint; empty: the migration address."
    ),
    "VXLAN_PORT": (
        "The UDP port this host's VXLAN devices listen on, recorded with its tunnel endpoint; "
        "the same (4789) on every host of a deployment."
    ),
    "DHCP_HOST": (
        "The DHCP agent's host name (`resizeflow network`): its tunnel endpoint, its ports' "
        "binding host and its namespaces are named after it."
    ),
    "DHCP_SYNC_INTERVAL": (
        "How often, in seconds, the DHCP agent reconciles its dnsmasq processes with the "
        "networks and ports in the database."
    ),
    "FIXED_RANGE": "The subnet fixed IPs come from (nova-network's option).",
    "STORAGE_HOST": (
        "The block-storage host's name: its queue is `storage.<name>`, where the API and the "
        "compute hosts ask it."
    ),
    "STORAGE_PATH": (
        "The storage host's volumes, its record of connections and its daemon's socket "
        "(`{state_dir}` and `{storage_host}` are substituted)."
    ),
    "STORAGE_ADDRESS": (
        "The address compute hosts reach the storage host's NBD server at (in every "
        "`connection_info`)."
    ),
    "STORAGE_BIND": "The address the NBD server listens on; empty: the storage address.",
    "STORAGE_PORT": "The NBD server's port.",
    "API_BIND": "Where the API listens.",
    "API_PORT": "The API's port.",
}


def _env(name: str, parse: Callable[[str], Any] = str) -> Any:
    """Declare a field read from RESIZEFLOW_<NAME> with the given parser and its help."""
    return {"env": PREFIX + name, "parse": parse, "help": HELP[name]}


@dataclass(frozen=True)
class Settings:
    """Typed settings for every resizeflow process.

    Each field is read from the environment variable named in its metadata,
    which also carries its help text (:data:`HELP`).
    """

    state_dir: Path = field(default=Path("var"), metadata=_env("STATE_DIR", Path))
    database_url: str = field(
        default="", metadata=_env("DATABASE_URL", _url(("sqlite", "postgresql")))
    )
    broker_url: str = field(
        default="redis://127.0.0.1:6379/0",
        metadata=_env("BROKER_URL", _url(("redis", "rediss", "amqp", "amqps", "redis+socket"))),
    )
    broker_prefix: str = field(default="", metadata=_env("BROKER_PREFIX"))
    libvirt_uri: str = field(default="test:///default", metadata=_env("LIBVIRT_URI"))
    host: str = field(default="compute-1", metadata=_env("HOST", _host))
    resize_confirm_window: int = field(default=0, metadata=_env("RESIZE_CONFIRM_WINDOW", _int(0)))
    instances_path: str = field(
        default="{state_dir}/{host}/instances", metadata=_env("INSTANCES_PATH")
    )
    allow_resize_to_same_host: bool = field(
        default=False, metadata=_env("ALLOW_RESIZE_TO_SAME_HOST", _bool)
    )
    shared_storage: bool | None = field(default=None, metadata=_env("SHARED_STORAGE", _tristate))
    migration_address: str = field(default="", metadata=_env("MIGRATION_ADDRESS", _address))
    remote_filesystem_transport: str = field(
        default="auto", metadata=_env("REMOTE_FILESYSTEM_TRANSPORT", _transport)
    )
    ssh_key: str = field(default="", metadata=_env("SSH_KEY", _plain_path))
    ssh_user: str = field(default="", metadata=_env("SSH_USER"))
    ssh_port: int = field(default=22, metadata=_env("SSH_PORT", _port))
    ssh_known_hosts: str = field(default="", metadata=_env("SSH_KNOWN_HOSTS", _plain_path))
    ssh_strict_host_key_checking: str = field(
        default="accept-new",
        metadata=_env("SSH_STRICT_HOST_KEY_CHECKING", _choice("accept-new", "yes")),
    )
    ssh_connect_timeout: float = field(
        default=10.0, metadata=_env("SSH_CONNECT_TIMEOUT", _float(1.0))
    )
    disk_copy_bwlimit: int = field(default=0, metadata=_env("DISK_COPY_BWLIMIT", _int(0)))
    worker_pool: str = field(default="threads", metadata=_env("WORKER_POOL", _pool))
    worker_name: str = field(default="", metadata=_env("WORKER_NAME"))
    worker_concurrency: int = field(default=4, metadata=_env("WORKER_CONCURRENCY", _int(1)))
    flower_basic_auth: str = field(default="", metadata=_env("FLOWER_BASIC_AUTH"))
    flower_port: int = field(default=5555, metadata=_env("FLOWER_PORT", _int(1)))
    log_format: str = field(default="json", metadata=_env("LOG_FORMAT", _choice("json", "text")))
    log_level: str = field(
        default="INFO",
        metadata=_env("LOG_LEVEL", _choice("DEBUG", "INFO", "WARNING", "ERROR")),
    )
    periodic_interval: float = field(default=60.0, metadata=_env("PERIODIC_INTERVAL", _float(0.1)))
    report_interval: float = field(default=10.0, metadata=_env("REPORT_INTERVAL", _float(0.1)))
    service_down_time: float = field(default=60.0, metadata=_env("SERVICE_DOWN_TIME", _float(1.0)))
    host_call_timeout: float = field(default=30.0, metadata=_env("HOST_CALL_TIMEOUT", _float(0.1)))
    step_timeout: float = field(default=600.0, metadata=_env("STEP_TIMEOUT", _float(1.0)))
    step_lease: float = field(default=30.0, metadata=_env("STEP_LEASE", _float(1.0)))
    reconcile_deadline: float = field(
        default=120.0, metadata=_env("RECONCILE_DEADLINE", _float(1.0))
    )
    broker_check_interval: float = field(
        default=2.0, metadata=_env("BROKER_CHECK_INTERVAL", _float(0.0))
    )
    step_max_retries: int = field(default=5, metadata=_env("STEP_MAX_RETRIES", _int(0)))
    retry_backoff: float = field(default=0.5, metadata=_env("RETRY_BACKOFF", _float(0.0)))
    retry_backoff_max: float = field(default=30.0, metadata=_env("RETRY_BACKOFF_MAX", _float(0.0)))
    notifications: bool = field(default=True, metadata=_env("NOTIFICATIONS", _bool))
    notifications_durable: bool = field(
        default=False, metadata=_env("NOTIFICATIONS_DURABLE", _bool)
    )
    failpoints_file: str = field(default="", metadata=_env("FAILPOINTS_FILE"))
    node_vcpus: int | None = field(default=None, metadata=_env("NODE_VCPUS", _opt_int))
    node_memory_mb: int | None = field(default=None, metadata=_env("NODE_MEMORY_MB", _opt_int))
    node_local_gb: int | None = field(default=None, metadata=_env("NODE_LOCAL_GB", _opt_int))
    cpu_allocation_ratio: float = field(
        default=16.0, metadata=_env("CPU_ALLOCATION_RATIO", _float(0.0))
    )
    ram_allocation_ratio: float = field(
        default=1.5, metadata=_env("RAM_ALLOCATION_RATIO", _float(0.0))
    )
    disk_allocation_ratio: float = field(
        default=1.0, metadata=_env("DISK_ALLOCATION_RATIO", _float(0.0))
    )
    quota_cores: int = field(default=20, metadata=_env("QUOTA_CORES", _int(-1)))
    quota_ram: int = field(default=51200, metadata=_env("QUOTA_RAM", _int(-1)))
    quota_instances: int = field(default=10, metadata=_env("QUOTA_INSTANCES", _int(-1)))
    auth: str = field(default="noauth", metadata=_env("AUTH", _auth))
    tokens_file: str = field(default="", metadata=_env("TOKENS_FILE"))
    policy_file: str = field(default="", metadata=_env("POLICY_FILE"))
    noauth_any_address: bool = field(default=False, metadata=_env("NOAUTH_ANY_ADDRESS", _bool))
    # --- Keystone (RESIZEFLOW_AUTH=keystone) ---
    keystone_url: str = field(default="", metadata=_env("KEYSTONE_URL", _url(("http", "https"))))
    keystone_username: str = field(default="", metadata=_env("KEYSTONE_USERNAME"))
    keystone_password: str = field(default="", metadata=_env("KEYSTONE_PASSWORD"), repr=False)
    keystone_project: str = field(default="service", metadata=_env("KEYSTONE_PROJECT"))
    keystone_user_domain: str = field(default="Default", metadata=_env("KEYSTONE_USER_DOMAIN"))
    keystone_project_domain: str = field(
        default="Default", metadata=_env("KEYSTONE_PROJECT_DOMAIN")
    )
    keystone_region: str = field(default="RegionOne", metadata=_env("KEYSTONE_REGION"))
    keystone_cafile: str = field(default="", metadata=_env("KEYSTONE_CAFILE"))
    keystone_token_cache_time: int = field(
        default=300, metadata=_env("KEYSTONE_TOKEN_CACHE_TIME", _int(-1))
    )
    keystone_memcached_servers: str = field(default="", metadata=_env("KEYSTONE_MEMCACHED_SERVERS"))
    # --- real hypervisors (qemu:///system) ---
    virt_type: str = field(default="", metadata=_env("VIRT_TYPE", _virt_type))
    shutdown_timeout: float = field(default=60.0, metadata=_env("SHUTDOWN_TIMEOUT", _float(0.0)))
    shutdown_retry_interval: float = field(
        default=10.0, metadata=_env("SHUTDOWN_RETRY_INTERVAL", _float(0.1))
    )
    running_timeout: float = field(default=60.0, metadata=_env("RUNNING_TIMEOUT", _float(0.1)))
    images_path: str = field(default="{state_dir}/images", metadata=_env("IMAGES_PATH"))
    default_image: str = field(default="", metadata=_env("DEFAULT_IMAGE"))
    instance_name_template: str = field(
        default="instance-{uuid}", metadata=_env("INSTANCE_NAME_TEMPLATE")
    )
    bridge: str = field(default="brq{vni}", metadata=_env("BRIDGE", check_template))
    vxlan_device: str = field(default="vxlan-{vni}", metadata=_env("VXLAN_DEVICE", check_template))
    tunnel_address: str = field(default="", metadata=_env("TUNNEL_ADDRESS", _address))
    vxlan_port: int = field(default=4789, metadata=_env("VXLAN_PORT", _port))
    fixed_range: str = field(default="10.0.0.0/24", metadata=_env("FIXED_RANGE", _cidr))
    # --- the block-storage host (resizeflow storage) ---
    storage_host: str = field(default="storage-1", metadata=_env("STORAGE_HOST", _host))
    storage_path: str = field(
        default="{state_dir}/storage/{storage_host}", metadata=_env("STORAGE_PATH")
    )
    storage_address: str = field(default="127.0.0.1", metadata=_env("STORAGE_ADDRESS", _address))
    storage_bind: str = field(default="", metadata=_env("STORAGE_BIND", _address))
    storage_port: int = field(default=10809, metadata=_env("STORAGE_PORT", _port))
    # --- the DHCP agent (resizeflow network) ---
    dhcp_host: str = field(default="network-1", metadata=_env("DHCP_HOST", _host))
    dhcp_sync_interval: float = field(default=2.0, metadata=_env("DHCP_SYNC_INTERVAL", _float(0.1)))
    api_bind: str = field(default="127.0.0.1", metadata=_env("API_BIND"))
    api_port: int = field(default=8774, metadata=_env("API_PORT", _port))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            var = f.metadata["env"]
            if var not in env:
                continue
            try:
                values[f.name] = f.metadata["parse"](env[var])
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{var}={env[var]!r} is invalid: {exc}") from None
        values.update(overrides)
        settings = cls(**values)
        settings.check_device_names()
        return settings

    def check_device_names(self, host: str | None = None) -> None:
        """Refuse bridge and VXLAN templates too long for the largest VNI on
        ``host`` (this process's compute host unless given: the DHCP agent
        checks its own at its start)."""
        host = host or self.host
        check_length(self.bridge, PREFIX + "BRIDGE", host)
        check_length(self.vxlan_device, PREFIX + "VXLAN_DEVICE", host)

    @property
    def db_url(self) -> str:
        """The database URL, defaulting to a SQLite file under the state dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.state_dir / 'resizeflow.sqlite').resolve()}"

    def instances_dir(self, host: str) -> Path:
        """The directory that holds ``host``'s instance directories."""
        return Path(self.instances_path.format(state_dir=self.state_dir, host=_host(host)))

    @property
    def advertised_migration_address(self) -> str:
        """The address other hosts use to reach this one (Nova's my_ip)."""
        return self.migration_address or self.host

    @property
    def simulated_hypervisor(self) -> bool:
        """libvirt's test:/// driver: hosts simulated by processes of this machine."""
        return self.libvirt_uri.startswith("test:")

    @property
    def disk_transport(self) -> str:
        """The transport that copies disks between hosts: ``rsync``, ``scp`` or ``local``.

        RESIZEFLOW_REMOTE_FILESYSTEM_TRANSPORT when it names one. Otherwise
        (``auto``) it follows the hypervisor: on test:/// every simulated host
        keeps its instances dir on this machine, and its host name (the default
        migration address) names no machine to SSH to, so ``local``; on a real
        hypervisor the hosts are machines of their own, so ``rsync`` over SSH,
        as Nova's default.
        """
        if self.remote_filesystem_transport != "auto":
            return self.remote_filesystem_transport
        return "local" if self.simulated_hypervisor else "rsync"

    @property
    def known_hosts_file(self) -> Path:
        return (
            Path(self.ssh_known_hosts)
            if self.ssh_known_hosts
            else self.state_dir / "ssh" / "known_hosts"
        )

    def images_dir(self) -> Path:
        """The directory of the image store."""
        return Path(self.images_path.format(state_dir=self.state_dir))

    def storage_dir(self) -> Path:
        """The storage host's own directory."""
        return Path(
            self.storage_path.format(state_dir=self.state_dir, storage_host=self.storage_host)
        )

    def bridge_for(self, host: str, vni: int) -> str:
        """The Linux bridge of network ``vni`` on ``host``: its ports' taps are plugged in."""
        check_length(self.bridge, PREFIX + "BRIDGE", _host(host))
        return device_name(self.bridge, vni=vni, host=host)

    def vxlan_for(self, host: str, vni: int) -> str:
        """The VXLAN device of network ``vni`` on ``host``, enslaved to its bridge."""
        check_length(self.vxlan_device, PREFIX + "VXLAN_DEVICE", _host(host))
        return device_name(self.vxlan_device, vni=vni, host=host)

    @property
    def tunnel_ip(self) -> str:
        """Where this host's tunnels end (Neutron's local_ip): the tunnel address, else
        the migration address; a name is resolved, as VXLAN needs an IP address."""
        address = self.tunnel_address or self.advertised_migration_address
        try:
            return str(ipaddress.ip_address(address))
        except ValueError:
            pass
        try:
            return str(socket.getaddrinfo(address, None, type=socket.SOCK_DGRAM)[0][4][0])
        except OSError as exc:
            raise ConfigError(
                f"the tunnel address {address!r} does not resolve ({exc}): set "
                f"{PREFIX}TUNNEL_ADDRESS to this host's IP address"
            ) from None

    def dhcp_dir(self) -> Path:
        """The DHCP agent's own directory: its dnsmasq processes' pid, hosts, lease
        and log files."""
        return self.state_dir / "dhcp" / self.dhcp_host

    def with_host(self, host: str) -> Settings:
        return replace(self, host=_host(host))


def load() -> Settings:
    """Read settings from the process environment."""
    return Settings.from_env()
