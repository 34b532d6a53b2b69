"""Settings: defaults, one parse per variable, and a ConfigError naming any bad variable."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from resizeflow.conf import Settings, load
from resizeflow.errors import ConfigError

pytestmark = pytest.mark.fast

V = "RESIZEFLOW_"

# (variable, raw value, field, parsed value): one row per field at least.
PARSED: list[tuple[str, str, str, Any]] = [
    ("STATE_DIR", "/srv/rf", "state_dir", Path("/srv/rf")),
    (
        "DATABASE_URL",
        "postgresql+psycopg://u@db/rf",
        "database_url",
        "postgresql+psycopg://u@db/rf",
    ),
    ("DATABASE_URL", "sqlite:////tmp/x.sqlite", "database_url", "sqlite:////tmp/x.sqlite"),
    ("BROKER_URL", "amqp://guest@mq//", "broker_url", "amqp://guest@mq//"),
    ("BROKER_URL", "rediss://r:6380/1", "broker_url", "rediss://r:6380/1"),
    ("BROKER_PREFIX", "rf-1:", "broker_prefix", "rf-1:"),
    ("LIBVIRT_URI", "qemu:///system", "libvirt_uri", "qemu:///system"),
    ("HOST", "cn-07.rack_2", "host", "cn-07.rack_2"),
    ("RESIZE_CONFIRM_WINDOW", "3600", "resize_confirm_window", 3600),
    ("INSTANCES_PATH", "/shared/instances", "instances_path", "/shared/instances"),
    ("ALLOW_RESIZE_TO_SAME_HOST", "yes", "allow_resize_to_same_host", True),
    ("SHARED_STORAGE", "On", "shared_storage", True),
    ("SHARED_STORAGE", "off", "shared_storage", False),
    ("SHARED_STORAGE", "auto", "shared_storage", None),
    ("MIGRATION_ADDRESS", "10.0.0.5", "migration_address", "10.0.0.5"),
    ("MIGRATION_ADDRESS", "fd00::0:5", "migration_address", "fd00::5"),
    (
        "MIGRATION_ADDRESS",
        "cn-07.rack2.example.org",
        "migration_address",
        "cn-07.rack2.example.org",
    ),
    ("REMOTE_FILESYSTEM_TRANSPORT", "scp", "remote_filesystem_transport", "scp"),
    ("REMOTE_FILESYSTEM_TRANSPORT", "local", "remote_filesystem_transport", "local"),
    ("REMOTE_FILESYSTEM_TRANSPORT", "Auto", "remote_filesystem_transport", "auto"),
    ("REMOTE_FILESYSTEM_TRANSPORT", "", "remote_filesystem_transport", "auto"),
    ("SSH_KEY", "/etc/resizeflow/id_ed25519", "ssh_key", "/etc/resizeflow/id_ed25519"),
    ("SSH_USER", "nova", "ssh_user", "nova"),
    ("SSH_PORT", "2222", "ssh_port", 2222),
    (
        "SSH_KNOWN_HOSTS",
        "/etc/resizeflow/known_hosts",
        "ssh_known_hosts",
        "/etc/resizeflow/known_hosts",
    ),
    ("SSH_STRICT_HOST_KEY_CHECKING", "yes", "ssh_strict_host_key_checking", "yes"),
    ("SSH_CONNECT_TIMEOUT", "5", "ssh_connect_timeout", 5.0),
    ("DISK_COPY_BWLIMIT", "51200", "disk_copy_bwlimit", 51200),
    ("WORKER_POOL", "prefork", "worker_pool", "prefork"),
    ("WORKER_CONCURRENCY", "8", "worker_concurrency", 8),
    ("STEP_MAX_RETRIES", "0", "step_max_retries", 0),
    ("RETRY_BACKOFF", "0.05", "retry_backoff", 0.05),
    ("RETRY_BACKOFF_MAX", "2", "retry_backoff_max", 2.0),
    ("NOTIFICATIONS", "false", "notifications", False),
    ("NOTIFICATIONS_DURABLE", "true", "notifications_durable", True),
    ("FAILPOINTS_FILE", "/tmp/fp.json", "failpoints_file", "/tmp/fp.json"),
    ("NODE_VCPUS", "64", "node_vcpus", 64),
    ("NODE_VCPUS", "", "node_vcpus", None),
    ("NODE_MEMORY_MB", "262144", "node_memory_mb", 262144),
    ("NODE_LOCAL_GB", "10000", "node_local_gb", 10000),
    ("CPU_ALLOCATION_RATIO", "4", "cpu_allocation_ratio", 4.0),
    ("RAM_ALLOCATION_RATIO", "1.0", "ram_allocation_ratio", 1.0),
    ("DISK_ALLOCATION_RATIO", "2.5", "disk_allocation_ratio", 2.5),
    ("QUOTA_CORES", "-1", "quota_cores", -1),
    ("QUOTA_RAM", "1024", "quota_ram", 1024),
    ("QUOTA_INSTANCES", "3", "quota_instances", 3),
    ("AUTH", "tokens", "auth", "tokens"),
    ("TOKENS_FILE", "/etc/rf/tokens.json", "tokens_file", "/etc/rf/tokens.json"),
    ("POLICY_FILE", "/etc/rf/policy.json", "policy_file", "/etc/rf/policy.json"),
    ("AUTH", "keystone", "auth", "keystone"),
    ("NOAUTH_ANY_ADDRESS", "true", "noauth_any_address", True),
    ("KEYSTONE_URL", "https://ks:5000/v3", "keystone_url", "https://ks:5000/v3"),
    ("KEYSTONE_USERNAME", "resizeflow", "keystone_username", "resizeflow"),
    ("KEYSTONE_PASSWORD", "pw", "keystone_password", "pw"),
    ("KEYSTONE_PROJECT", "services", "keystone_project", "services"),
    ("KEYSTONE_USER_DOMAIN", "corp", "keystone_user_domain", "corp"),
    ("KEYSTONE_PROJECT_DOMAIN", "corp", "keystone_project_domain", "corp"),
    ("KEYSTONE_REGION", "RegionTwo", "keystone_region", "RegionTwo"),
    ("KEYSTONE_CAFILE", "/etc/ssl/ks.pem", "keystone_cafile", "/etc/ssl/ks.pem"),
    ("KEYSTONE_TOKEN_CACHE_TIME", "-1", "keystone_token_cache_time", -1),
    ("KEYSTONE_MEMCACHED_SERVERS", "mc:11211", "keystone_memcached_servers", "mc:11211"),
    ("API_BIND", "0.0.0.0", "api_bind", "0.0.0.0"),
    ("API_PORT", "18774", "api_port", 18774),
    ("STEP_TIMEOUT", "900", "step_timeout", 900.0),
    ("STEP_LEASE", "12.5", "step_lease", 12.5),
    ("RECONCILE_DEADLINE", "300", "reconcile_deadline", 300.0),
    ("REPORT_INTERVAL", "5", "report_interval", 5.0),
    ("BROKER_CHECK_INTERVAL", "0.5", "broker_check_interval", 0.5),
    ("BROKER_CHECK_INTERVAL", "0", "broker_check_interval", 0.0),
    ("SERVICE_DOWN_TIME", "90", "service_down_time", 90.0),
    ("HOST_CALL_TIMEOUT", "5", "host_call_timeout", 5.0),
    ("PERIODIC_INTERVAL", "30", "periodic_interval", 30.0),
    ("FLOWER_BASIC_AUTH", "ops:secret", "flower_basic_auth", "ops:secret"),
    ("FLOWER_PORT", "15555", "flower_port", 15555),
    ("LOG_FORMAT", "text", "log_format", "text"),
    ("LOG_LEVEL", "DEBUG", "log_level", "DEBUG"),
    ("WORKER_NAME", "second", "worker_name", "second"),
    ("VIRT_TYPE", "qemu", "virt_type", "qemu"),
    ("VIRT_TYPE", "", "virt_type", ""),
    ("SHUTDOWN_TIMEOUT", "0", "shutdown_timeout", 0.0),
    ("SHUTDOWN_RETRY_INTERVAL", "2", "shutdown_retry_interval", 2.0),
    ("RUNNING_TIMEOUT", "15", "running_timeout", 15.0),
    ("IMAGES_PATH", "/shared/images", "images_path", "/shared/images"),
    ("DEFAULT_IMAGE", "cirros", "default_image", "cirros"),
    ("BRIDGE", "br{vni}", "bridge", "br{vni}"),
    ("VXLAN_DEVICE", "vx{vni}", "vxlan_device", "vx{vni}"),
    ("TUNNEL_ADDRESS", "192.0.2.21", "tunnel_address", "192.0.2.21"),
    ("VXLAN_PORT", "4790", "vxlan_port", 4790),
    ("DHCP_HOST", "net-2", "dhcp_host", "net-2"),
    ("DHCP_SYNC_INTERVAL", "0.5", "dhcp_sync_interval", 0.5),
    ("FIXED_RANGE", "192.168.7.0/24", "fixed_range", "192.168.7.0/24"),
    ("INSTANCE_NAME_TEMPLATE", "i-{host}-{uuid}", "instance_name_template", "i-{host}-{uuid}"),
    ("STORAGE_HOST", "storage-2", "storage_host", "storage-2"),
    ("STORAGE_PATH", "/srv/volumes", "storage_path", "/srv/volumes"),
    ("STORAGE_ADDRESS", "192.0.2.10", "storage_address", "192.0.2.10"),
    ("STORAGE_ADDRESS", "storage", "storage_address", "storage"),
    ("STORAGE_BIND", "0.0.0.0", "storage_bind", "0.0.0.0"),
    ("STORAGE_PORT", "10810", "storage_port", 10810),
]

INVALID = [
    ("DATABASE_URL", "mysql://x"),
    ("DATABASE_URL", "/var/lib/rf.sqlite"),
    ("BROKER_URL", "http://x"),
    ("HOST", "bad host/.."),
    ("HOST", ""),
    ("HOST", "x" * 64),
    ("RESIZE_CONFIRM_WINDOW", "-1"),
    ("RESIZE_CONFIRM_WINDOW", "abc"),
    ("ALLOW_RESIZE_TO_SAME_HOST", "sometimes"),
    ("SHARED_STORAGE", "maybe"),
    ("MIGRATION_ADDRESS", "not an address"),
    ("MIGRATION_ADDRESS", "-cn1"),
    ("MIGRATION_ADDRESS", "10.0.0.5:22"),
    ("REMOTE_FILESYSTEM_TRANSPORT", "ftp"),
    ("REMOTE_FILESYSTEM_TRANSPORT", "RSYNC"),
    ("SSH_KEY", "/keys/my key"),
    ("SSH_KNOWN_HOSTS", "/etc/'kh'"),
    ("SSH_PORT", "65536"),
    ("SSH_STRICT_HOST_KEY_CHECKING", "no"),
    ("SSH_CONNECT_TIMEOUT", "0"),
    ("DISK_COPY_BWLIMIT", "-1"),
    ("WORKER_POOL", "gevent"),
    ("WORKER_CONCURRENCY", "0"),
    ("BROKER_CHECK_INTERVAL", "-1"),
    ("STEP_MAX_RETRIES", "-1"),
    ("RETRY_BACKOFF", "-0.5"),
    ("RETRY_BACKOFF_MAX", "soon"),
    ("NOTIFICATIONS", "2"),
    ("NOTIFICATIONS_DURABLE", "durable"),
    ("NODE_VCPUS", "-4"),
    ("NODE_MEMORY_MB", "8G"),
    ("NODE_LOCAL_GB", "1.5"),
    ("CPU_ALLOCATION_RATIO", "-1"),
    ("RAM_ALLOCATION_RATIO", "x"),
    ("DISK_ALLOCATION_RATIO", "-0.1"),
    ("QUOTA_CORES", "-2"),
    ("QUOTA_RAM", "lots"),
    ("QUOTA_INSTANCES", "1e3"),
    ("AUTH", "ldap"),
    ("KEYSTONE_URL", "ks:5000/v3"),
    ("KEYSTONE_TOKEN_CACHE_TIME", "-2"),
    ("API_PORT", "70000"),
    ("STEP_LEASE", "0"),
    ("RECONCILE_DEADLINE", "soon"),
    ("LOG_FORMAT", "xml"),
    ("LOG_LEVEL", "LOUD"),
    ("FLOWER_PORT", "0"),
    ("VIRT_TYPE", "xen"),
    ("SHUTDOWN_RETRY_INTERVAL", "0"),
    ("RUNNING_TIMEOUT", "-1"),
    ("FIXED_RANGE", "10.0.0.1/24"),
    ("FIXED_RANGE", "fd00::/64"),
    ("FIXED_RANGE", "10.0.0.0/30"),
    ("STORAGE_HOST", "storage/1"),
    ("STORAGE_ADDRESS", "not an address"),
    ("STORAGE_PORT", "65536"),
    # A network's bridge and VXLAN device: {vni} in each, nothing but {host} else,
    # and 15 characters for the largest VNI.
    ("BRIDGE", "rfbr0"),
    ("BRIDGE", "br-{host}"),
    ("BRIDGE", "br{vni}-{uuid}"),
    ("BRIDGE", "br{vni"),
    ("BRIDGE", "bridge-long{vni}"),
    ("BRIDGE", "b-{host}-{vni}"),
    ("VXLAN_DEVICE", "vxlan"),
    ("VXLAN_DEVICE", "vxlan-dev-{vni}"),
    ("TUNNEL_ADDRESS", "not an address"),
    ("VXLAN_PORT", "65536"),
    ("DHCP_HOST", "net/1"),
    ("DHCP_SYNC_INTERVAL", "0"),
]


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = Settings.from_env({})
    assert s == Settings()
    assert (s.state_dir, s.database_url, s.host) == (Path("var"), "", "compute-1")
    assert s.broker_url == "redis://127.0.0.1:6379/0"
    assert (s.worker_pool, s.worker_concurrency, s.resize_confirm_window) == ("threads", 4, 0)
    assert (s.node_vcpus, s.node_memory_mb, s.node_local_gb) == (None, None, None)
    assert (s.quota_cores, s.quota_ram, s.quota_instances) == (20, 51200, 10)
    assert (s.notifications, s.allow_resize_to_same_host) == (True, False)
    assert s.notifications_durable is False  # oslo.messaging's amqp_durable_queues default
    # Shared storage is detected per resize unless RESIZEFLOW_SHARED_STORAGE forces it.
    assert s.shared_storage is None
    assert (s.migration_address, s.remote_filesystem_transport) == ("", "auto")
    # The default hypervisor is libvirt's test:///, whose hosts share this
    # machine: disks move through its filesystem, not over SSH to a host name.
    assert (s.libvirt_uri, s.disk_transport) == ("test:///default", "local")
    assert (s.ssh_key, s.ssh_user, s.ssh_port, s.disk_copy_bwlimit) == ("", "", 22, 0)
    assert s.ssh_strict_host_key_checking == "accept-new"
    assert s.db_url == f"sqlite:///{tmp_path.resolve()}/var/resizeflow.sqlite"


def test_per_host_paths_and_bridges() -> None:
    s = Settings.from_env({V + "STATE_DIR": "/srv/rf"})
    assert s.images_dir() == Path("/srv/rf/images")
    assert s.storage_dir() == Path("/srv/rf/storage/storage-1")
    assert s.bridge_for("compute-1", 1001) == "brq1001"
    assert s.vxlan_for("compute-1", 16777215) == "vxlan-16777215"
    assert s.dhcp_dir() == Path("/srv/rf/dhcp/network-1")
    per_host = Settings.from_env({V + "BRIDGE": "b{host}{vni}", V + "HOST": "cn-1"})
    assert per_host.bridge_for("cn-1", 1001) == "bcn-11001"
    # A host named elsewhere than in this process's settings is checked when named.
    with pytest.raises(ConfigError, match="at most 15"):
        per_host.bridge_for("compute-host-12", 1001)


def test_every_field_has_a_parse_case() -> None:
    assert {f.name for f in fields(Settings)} == {field for _, _, field, _ in PARSED}
    assert all(f.metadata["env"] == V + f.name.upper() for f in fields(Settings))


@pytest.mark.parametrize(("var", "raw", "field", "value"), PARSED)
def test_each_variable_is_parsed(var: str, raw: str, field: str, value: Any) -> None:
    parsed = getattr(Settings.from_env({V + var: raw, "UNRELATED": "1"}), field)
    assert parsed == value
    assert type(parsed) is type(value)


@pytest.mark.parametrize(("var", "raw"), INVALID)
def test_invalid_value_names_the_variable(var: str, raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({V + var: raw})
    assert f"{V}{var}=" in info.value.message
    assert repr(raw) in info.value.message


def test_host_with_trailing_newline_is_rejected() -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({V + "HOST": "host1\n"})


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf"])
def test_non_finite_ratio_is_rejected(raw: str) -> None:
    with pytest.raises(ConfigError, match="CPU_ALLOCATION_RATIO"):
        Settings.from_env({V + "CPU_ALLOCATION_RATIO": raw})


def test_empty_database_url_means_the_default() -> None:
    s = Settings.from_env({V + "DATABASE_URL": "", V + "STATE_DIR": "/tmp/rf"})
    assert s.db_url == "sqlite:////tmp/rf/resizeflow.sqlite"


def test_overrides_win_over_the_environment() -> None:
    s = Settings.from_env({V + "HOST": "a"}, host="b", notifications=False)
    assert (s.host, s.notifications) == ("b", False)


def test_load_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(V + "HOST", "from-env")
    assert load().host == "from-env"
    monkeypatch.setenv(V + "WORKER_POOL", "gevent")
    with pytest.raises(ConfigError, match=V + "WORKER_POOL"):
        load()


def test_db_url(tmp_path: Path) -> None:
    assert Settings(state_dir=tmp_path).db_url == f"sqlite:///{tmp_path}/resizeflow.sqlite"
    url = "postgresql+psycopg://postgres@127.0.0.1/x"
    assert Settings(state_dir=tmp_path, database_url=url).db_url == url


def test_instances_dir(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path)
    assert s.instances_dir("host1") == tmp_path / "host1" / "instances"
    shared = Settings(state_dir=tmp_path, instances_path="/shared/{host}")
    assert shared.instances_dir("h2") == Path("/shared/h2")
    with pytest.raises(ValueError, match="host name"):
        s.instances_dir("../etc")


def test_migration_address_defaults_to_the_host_name() -> None:
    assert Settings(host="cn-3").advertised_migration_address == "cn-3"
    s = Settings(host="cn-3", migration_address="192.0.2.7")
    assert s.advertised_migration_address == "192.0.2.7"


@pytest.mark.parametrize(
    ("uri", "transport", "used"),
    [
        ("test:///default", "auto", "local"),
        ("test:///default", "rsync", "rsync"),
        ("test:///default", "scp", "scp"),
        ("qemu:///system", "auto", "rsync"),
        ("qemu+ssh://cn-2/system", "auto", "rsync"),
        ("qemu:///system", "scp", "scp"),
        ("qemu:///system", "local", "local"),
    ],
)
def test_the_disk_transport_follows_the_hypervisor_unless_set(
    uri: str, transport: str, used: str
) -> None:
    env = {V + "LIBVIRT_URI": uri, V + "REMOTE_FILESYSTEM_TRANSPORT": transport}
    assert Settings.from_env(env).disk_transport == used
    if transport == "auto":  # unset is the same as auto
        assert Settings.from_env({V + "LIBVIRT_URI": uri}).disk_transport == used


def test_known_hosts_file_defaults_to_the_state_dir(tmp_path: Path) -> None:
    assert Settings(state_dir=tmp_path).known_hosts_file == tmp_path / "ssh" / "known_hosts"
    s = Settings(state_dir=tmp_path, ssh_known_hosts="/etc/rf/known_hosts")
    assert s.known_hosts_file == Path("/etc/rf/known_hosts")


def test_with_host() -> None:
    assert Settings().with_host("other").host == "other"
    with pytest.raises(ValueError, match="host name"):
        Settings().with_host("bad host")


def test_worker_cli_refuses_bad_config(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(V)}
    env |= {V + "STATE_DIR": str(tmp_path), V + "RESIZE_CONFIRM_WINDOW": "abc"}
    cli = Path(sys.executable).parent / "resizeflow"
    proc = subprocess.run(
        [str(cli), "worker", "--host", "h1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "RESIZEFLOW_RESIZE_CONFIRM_WINDOW" in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "resizeflow.sqlite").exists()
