"""workers/systemd/ and workers/ssh-keys.sh: what a real compute host runs.

The units are checked by systemd's own tools (``systemd-analyze verify``,
``systemctl --root`` in a scratch root), never against this machine's init.
The migration sshd runs for real in tests/hosts/test_deploy.py.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest

from resizeflow.conf import Settings

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "workers" / "systemd"
SSH_KEYS = ROOT / "workers" / "ssh-keys.sh"
# The units run resizeflow from a checkout at /opt/resizeflow, installed into its .venv.
INSTALL_DIR = "/opt/resizeflow"
ETC = "/etc/resizeflow"


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as systemd reads it: sections of keys, each with all its values."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in (UNITS / name).read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def env_file(path: Path) -> dict[str, str]:
    """A systemd EnvironmentFile with no quoting, as the samples are written."""
    env = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


def words(values: list[str]) -> list[str]:
    return [w for v in values for w in v.split()]


def expand(command: str, env: dict[str, str], instance: str) -> list[str]:
    """An Exec line as systemd runs it: %i and ${VAR} substituted, then split."""
    command = command.replace("%i", instance)
    return [
        re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), w) for w in shlex.split(command)
    ]


SETTINGS_VARS = {f.metadata["env"] for f in fields(Settings)}


@pytest.mark.fast
def test_worker_unit_orders_after_libvirtd_and_its_migration_sshd() -> None:
    worker = unit("resizeflow-worker@.service")
    for key in ("Wants", "After"):
        deps = words(worker["Unit"][key])
        assert "libvirtd.service" in deps
        assert "resizeflow-migration-sshd@%i.service" in deps
    # resizeflow-libvirtd.service answers to the name the worker wants.
    assert unit("resizeflow-libvirtd.service")["Install"]["Alias"] == ["libvirtd.service"]
    # The sshd reads the settings the worker connects with.
    sshd = unit("resizeflow-migration-sshd@.service")["Service"]
    assert sshd["EnvironmentFile"] == worker["Service"]["EnvironmentFile"]
    assert worker["Service"]["Environment"] == ["RESIZEFLOW_HOST=%i"]


@pytest.mark.fast
def test_units_run_what_the_checkout_and_debian_install() -> None:
    for name in sorted(p.name for p in UNITS.glob("*.service")):
        service = unit(name)["Service"]
        for key in ("ExecStartPre", "ExecStart"):
            for command in service.get(key, []):
                binary = shlex.split(command)[0]
                if binary.startswith(INSTALL_DIR):
                    # What `make install` (or the pip install the docs give) puts in .venv.
                    local = ROOT / os.path.relpath(binary, INSTALL_DIR)
                    assert local.name in {"python", "resizeflow"}, binary
                    assert os.access(local, os.X_OK), f"{name}: {local} is missing"
                else:
                    assert binary in {"/usr/sbin/libvirtd", "/usr/sbin/sshd"}, (name, binary)
                # Every file the unit reads is one the docs tell the operator to install.
                for path in re.findall(rf"{ETC}/[\w./%-]+", command):
                    assert path == f"{ETC}/sshd_config", (name, path)


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # The same units with this checkout standing in for /opt/resizeflow, so
    # verify checks the executables they name really exist.
    for path in UNITS.glob("*.service"):
        (tmp_path / path.name).write_text(path.read_text().replace(INSTALL_DIR, str(ROOT)))
    names = [
        "resizeflow-libvirtd.service",
        "resizeflow-migration-sshd@compute-1.service",
        "resizeflow-worker@compute-1.service",
        "resizeflow-storage.service",
    ]
    done = subprocess.run(
        [analyze, "verify", *names], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


def test_enabling_the_units_in_a_scratch_root(tmp_path: Path) -> None:
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        pytest.skip("systemctl is not installed")
    units = tmp_path / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    for path in UNITS.glob("*.service"):
        shutil.copy(path, units / path.name)
    for name in ("resizeflow-libvirtd.service", "resizeflow-worker@compute-1.service"):
        done = subprocess.run(
            [systemctl, f"--root={tmp_path}", "enable", name],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    # The alias is what makes the worker's Wants=libvirtd.service start it.
    alias = units / "libvirtd.service"
    assert alias.is_symlink() and Path(os.readlink(alias)).name == "resizeflow-libvirtd.service"
    assert (units / "multi-user.target.wants" / "resizeflow-worker@compute-1.service").is_symlink()


@pytest.mark.fast
def test_sample_settings_load_and_name_real_settings() -> None:
    shared = env_file(UNITS / "resizeflow.env.example")
    own = env_file(UNITS / "host.env.example")
    env = {**shared, **own, "RESIZEFLOW_HOST": "compute-1"}
    assert set(env) <= SETTINGS_VARS, set(env) - SETTINGS_VARS
    s = Settings.from_env(env)
    assert s.libvirt_uri == "qemu:///system"
    assert s.advertised_migration_address == own["RESIZEFLOW_MIGRATION_ADDRESS"]
    assert str(s.known_hosts_file) == f"{ETC}/ssh/known_hosts"
    assert s.ssh_key == f"{ETC}/ssh/id_ed25519"
    assert s.ssh_user == "root" and s.ssh_strict_host_key_checking == "yes"
    # Not set: on qemu:///system the default transport is rsync over SSH.
    assert (s.remote_filesystem_transport, s.disk_transport) == ("auto", "rsync")
    assert s.bridge_for("compute-1", 1001) == "brq1001"
    assert (s.vxlan_for("compute-1", 1001), s.vxlan_port) == ("vxlan-1001", 4789)
    assert s.tunnel_ip == own["RESIZEFLOW_TUNNEL_ADDRESS"]
    assert s.instances_dir("compute-2") == Path("/var/lib/resizeflow/compute-2/instances")
    assert (s.storage_host, s.storage_address) == ("storage-1", "192.0.2.10")


@pytest.mark.fast
def test_deployment_docs_name_only_real_settings() -> None:
    texts = [
        ROOT / "workers" / "README.md",
        ROOT / "compose.yaml",
        *UNITS.iterdir(),
        *(ROOT / "workers").glob("*.sh"),
    ]
    # The README and the docs site's pages, "Deploying a compute host" among them.
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    deploying = (ROOT / "docs" / "operations.md").read_text()
    assert "\n## Deploying a compute host\n" in deploying
    named = {
        m
        for text in (path.read_text() for path in [*pages, *texts])
        for m in re.findall(r"RESIZEFLOW_[A-Z0-9_]+", text)
        # The container entry's own knob, and the CLI's options (where the API
        # is, who asks): not resizeflow settings; nor the test runs' knobs.
        if m not in {"RESIZEFLOW_SSHD_CONFIG", "RESIZEFLOW_URL", "RESIZEFLOW_TOKEN"}
        and not m.startswith(("RESIZEFLOW_CHAOS_", "RESIZEFLOW_SOAK_", "RESIZEFLOW_TEST_"))
    }
    assert named, "no setting named at all"
    # A name ending in "_" is a family (RESIZEFLOW_NODE_*): some setting starts with it.
    unknown = {
        m
        for m in named
        if not (
            m in SETTINGS_VARS or (m.endswith("_") and any(v.startswith(m) for v in SETTINGS_VARS))
        )
    }
    assert not unknown, sorted(unknown)


def run_keys(out: Path, port: int, *hosts: str) -> None:
    done = subprocess.run(
        [str(SSH_KEYS), "--port", str(port), str(out), *hosts],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_ssh_keys_makes_a_deployment_and_keeps_it(tmp_path: Path) -> None:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed")
    out = tmp_path / "keys"
    run_keys(out, 2222, "compute-1=192.0.2.11", "compute-2=2001:db8::12")
    dep = out / "deployment"
    key = (dep / "id_ed25519").read_bytes()
    host_key = (out / "compute-1" / "ssh_host_ed25519_key").read_bytes()
    assert (dep / "id_ed25519").stat().st_mode & 0o077 == 0
    assert (out / "compute-1" / "ssh_host_ed25519_key").stat().st_mode & 0o077 == 0
    assert (dep / "authorized_keys").read_text() == (dep / "id_ed25519.pub").read_text()
    pins = (dep / "known_hosts").read_text().splitlines()
    assert [p.split()[0] for p in pins] == ["[192.0.2.11]:2222", "[2001:db8::12]:2222"]
    host_pub = (out / "compute-1" / "ssh_host_ed25519_key.pub").read_text().split()
    assert pins[0].split()[1:] == host_pub[:2]
    # A third host later: the existing keys stay, the pins now cover it too.
    run_keys(out, 2222, "compute-1=192.0.2.11", "compute-2=2001:db8::12", "compute-3=192.0.2.13")
    assert (dep / "id_ed25519").read_bytes() == key
    assert (out / "compute-1" / "ssh_host_ed25519_key").read_bytes() == host_key
    assert len((dep / "known_hosts").read_text().splitlines()) == 3
    # Port 22 is written as ssh looks it up, without brackets.
    run_keys(tmp_path / "k22", 22, "compute-1=192.0.2.11")
    assert (
        (tmp_path / "k22/deployment/known_hosts").read_text().startswith("192.0.2.11 ssh-ed25519 ")
    )
    bad = subprocess.run(
        [str(SSH_KEYS), str(tmp_path / "bad"), "compute-1"], capture_output=True, timeout=60
    )
    assert bad.returncode == 2


AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def python_anyone_runs() -> str | None:
    """A Python 3.11+ that uid 65534 can run: this one's base interpreter, else the system's.

    The base interpreter may live where only root can look (pyenv under /root).
    """
    base = getattr(sys, "_base_executable", sys.executable)
    for python in (base, "/usr/bin/python3"):
        done = subprocess.run(
            [*AS_NOBODY, python, "-c", "import sys; sys.exit(sys.version_info < (3, 11))"],
            capture_output=True,
            timeout=60,
            cwd="/",
        )
        if done.returncode == 0:
            return python
    return None


@pytest.fixture
def install_dir() -> Iterator[Path]:
    """A world-readable install of the package, standing in for /opt/resizeflow.

    A unit runs what is installed in INSTALL_DIR, which any user may read; the
    checkout may not be (a clone in a root user's home, mode 700), so the
    package is installed here into a venv of its own, outside pytest's private
    tmp dirs. ``-m resizeflow.devstack.libvirtd`` needs nothing but the standard library.
    """
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run it as another user")
    python = python_anyone_runs()
    if python is None:
        pytest.skip("no Python 3.11 that uid 65534 may run")
    install = Path(tempfile.mkdtemp(prefix="resizeflow-install-"))
    try:
        venv = install / ".venv"
        subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        purelib = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_path('purelib'))",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        shutil.copytree(
            ROOT / "resizeflow",
            Path(purelib) / "resizeflow",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        for path in [install, *install.rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
        yield install
    finally:
        shutil.rmtree(install, ignore_errors=True)


def test_libvirtd_prepare_is_for_root_only(install_dir: Path) -> None:
    """The unit's ExecStartPre, as anyone but root: refused before it touches the host."""
    (pre,) = unit("resizeflow-libvirtd.service")["Service"]["ExecStartPre"]
    argv = shlex.split(pre.replace(INSTALL_DIR, str(install_dir)))
    assert argv[:3] == [
        str(install_dir / ".venv/bin/python"),
        "-m",
        "resizeflow.devstack.libvirtd",
    ]
    # The unit's environment has no PYTHONPATH: a checkout named in this one's
    # would be imported instead of the installed package.
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [*AS_NOBODY, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env=environ,
    )
    assert done.returncode != 0
    # What refused is prepare(), from the installed package, not a failing import.
    assert done.stderr.splitlines()[-1] == (
        "resizeflow.errors.ConfigError: only root can prepare libvirtd"
    ), done.stderr
    assert f"{install_dir}/.venv/" in done.stderr


@pytest.mark.fast
def test_libvirtd_prepare_adds_only_missing_qemu_conf_keys(tmp_path: Path) -> None:
    from resizeflow.devstack import libvirtd

    conf = tmp_path / "qemu.conf"
    # Debian's file has every key commented out; an operator set one of them.
    conf.write_text('#user = "root"\n#security_driver = "selinux"\nstdio_handler = "logd"')
    added = libvirtd.configure(conf)
    assert added == ["user", "group", "security_driver", "cgroup_controllers"]
    text = conf.read_text()
    assert 'stdio_handler = "logd"\n' in text and 'stdio_handler = "file"' not in text
    assert 'user = "root"\n' in text.splitlines(keepends=True)[3]
    assert libvirtd.configure(conf) == []
    assert libvirtd.main(["--bogus"]) == 2
