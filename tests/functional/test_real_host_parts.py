"""The pure parts behind real guests: IPAM, the image store, the domain XML, the console parser."""

from __future__ import annotations

import ipaddress
import json
import uuid
import xml.etree.ElementTree as ET
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from sqlalchemy import select

from resizeflow import errors
from resizeflow.compute.images import ImageService
from resizeflow.conf import Settings
from resizeflow.db.models import Flavor, Instance, Network, Port
from resizeflow.db.session import Database
from resizeflow.devstack.guest import parse_console
from resizeflow.errors import FixedIpsExhausted
from resizeflow.openstack.base import ImageSpec, PortRequest, VifSpec
from resizeflow.openstack.images import ImageStore
from resizeflow.openstack.network import (
    SqlNetwork,
    create_network,
    create_subnet,
    default_network_id,
)
from resizeflow.states import VmState
from resizeflow.virt.base import InstanceSpec
from resizeflow.virt.domain_xml import HostConfig, domain_xml

GiB = 1024**3


def _instance(db: Database) -> str:
    uid = str(uuid.uuid4())
    with db.transaction() as s:
        flavor = s.query(Flavor).first()
        assert flavor is not None
        s.add(
            Instance(
                uuid=uid,
                project_id="p",
                user_id="u",
                flavor=flavor.as_dict(),
                vm_state=VmState.BUILDING,
                task_state=None,
            )
        )
    return uid


def _network(db: Database, cidr: str, name: str = "") -> str:
    with db.transaction() as s:
        net = create_network(s, project_id="p", name=name)
        s.flush()
        create_subnet(s, network_id=net.id, project_id="p", cidr=cidr)
        return net.id


def _on(*networks: str) -> list[PortRequest]:
    return [PortRequest(network_id=n) for n in networks]


def test_ipam_hands_out_the_lowest_free_address_past_the_gateway(database: Database) -> None:
    first, second, third = (_instance(database) for _ in range(3))
    private, public = _network(database, "10.9.0.0/29"), _network(database, "10.9.0.0/29")
    with database.transaction() as s:
        net = SqlNetwork(s)
        net.allocate_for_instance(first, "p", _on(private))
        net.allocate_for_instance(second, "p", _on(private, public))
    with database.snapshot() as s:
        rows = {(p.instance_uuid, p.network_id): p.ip_address for p in s.query(Port)}
    assert rows == {
        (first, private): "10.9.0.2",
        (second, private): "10.9.0.3",
        (second, public): "10.9.0.2",  # each network has its own addresses
    }
    with database.transaction() as s:
        SqlNetwork(s).deallocate_for_instance(first)
    with database.transaction() as s:
        SqlNetwork(s).allocate_for_instance(third, "p", _on(private))
        (vif,) = SqlNetwork(s).vifs(third)
    assert vif.ip_address == "10.9.0.2"  # freed by the delete, taken again
    assert vif.tap == ("tap" + vif.port_id)[:14] and len(vif.tap) == 14
    with database.snapshot() as s:
        vni = s.get(Network, private).segmentation_id  # type: ignore[union-attr]
    assert (vif.network_id, vif.vni) == (private, vni)


def test_ipam_refuses_when_the_subnet_is_full(database: Database) -> None:
    uids = [_instance(database) for _ in range(6)]
    small = _network(database, "10.9.0.0/29")
    with database.transaction() as s:
        net = SqlNetwork(s)  # hosts .1-.6; .1 is the gateway
        for uid in uids[:5]:
            net.allocate_for_instance(uid, "p", _on(small))
    with database.transaction() as s, pytest.raises(FixedIpsExhausted):
        SqlNetwork(s).allocate_for_instance(uids[5], "p", _on(small))


def test_ipam_finds_the_lowest_hole_among_many_addresses(database: Database) -> None:
    owner = _instance(database)
    net = ipaddress.IPv4Network("10.9.0.0/23")
    network_id = _network(database, str(net))
    first = int(net.network_address) + 2  # past the gateway
    holes = {first + 198, first + 264}  # 10.9.0.200 and 10.9.1.10, across the .255 edge
    with database.transaction() as s:
        for n in range(first, first + 300):
            if n not in holes:
                address = str(ipaddress.IPv4Address(n))
                s.add(
                    Port(
                        id=str(uuid.uuid4()),
                        instance_uuid=owner,
                        network_id=network_id,
                        mac_address="m",
                        ip_address=address,
                    )
                )
    got = []
    for _ in range(3):
        uid = _instance(database)
        with database.transaction() as s:
            SqlNetwork(s).allocate_for_instance(uid, "p", _on(network_id))
            got.append(s.scalars(select(Port.ip_address).where(Port.instance_uuid == uid)).one())
    assert got == ["10.9.0.200", "10.9.1.10", str(ipaddress.IPv4Address(first + 300))]


def test_the_default_network_is_made_once_on_the_fixed_range(database: Database) -> None:
    first, second = _instance(database), _instance(database)
    with database.transaction() as s:
        SqlNetwork(s, "10.8.0.0/24").allocate_for_instance(first, "p", [PortRequest()])
    with database.transaction() as s:
        SqlNetwork(s, "10.8.0.0/24").allocate_for_instance(second, "p", [PortRequest()])
    with database.snapshot() as s:
        nets = s.scalars(select(Network)).all()
        addresses = sorted(s.scalars(select(Port.ip_address)))
    assert [(n.id, n.name, n.shared) for n in nets] == [(default_network_id(), "private", True)]
    assert addresses == ["10.8.0.2", "10.8.0.3"]


def _store(tmp_path: Path) -> tuple[Settings, ImageStore]:
    settings = Settings.from_env({}, state_dir=tmp_path)
    return settings, ImageStore(settings.images_dir())


def test_boot_image_checks_as_nova_does(tmp_path: Path) -> None:
    settings, store = _store(tmp_path)
    data = tmp_path / "disk.raw"
    with open(data, "wb") as fh:
        fh.truncate(3 * 1024**2)
    kernel = store.add("k", data, disk_format="aki", container_format="aki")
    image = store.add("img", data, disk_format="raw", properties={"kernel_id": kernel.id})
    images = ImageService(settings)
    assert images.boot_image(image.id, {"root_gb": 1}) == image.id
    assert images.boot_image(None, {"root_gb": 1}) is None  # no default: a blank disk
    with pytest.raises(errors.ImageNotFound) as missing:
        images.boot_image(str(uuid.uuid4()), {"root_gb": 1})
    assert missing.value.code == 400 and missing.value.message == "Can not find requested image"
    with pytest.raises(errors.ImageNotFound):
        images.boot_image(kernel.id, {"root_gb": 1})  # a kernel is not bootable on its own
    big = store.add("big", data, disk_format="raw")
    # A 2 GiB image (as a qcow2 would be), without writing 2 GiB here.
    meta_path = store.directory / f"{big.id}.json"
    meta_path.write_text(json.dumps(asdict(replace(big, virtual_size=2 * GiB))))
    with pytest.raises(errors.FlavorDiskSmallerThanImage) as small:
        images.boot_image(big.id, {"root_gb": 1})
    assert small.value.message == (
        "Flavor's disk is too small for requested image. Flavor disk is 1073741824 bytes, "
        "image is 2147483648 bytes."
    )
    assert images.boot_image(big.id, {"root_gb": 0}) == big.id  # 0: as big as the image
    with_default = ImageService(Settings.from_env({}, state_dir=tmp_path, default_image="img"))
    assert with_default.boot_image(None, {"root_gb": 1}) == image.id
    spec = store.spec(image.id)
    assert spec is not None and spec.kernel == str(store.data_path(kernel.id))


def test_domain_xml_is_shaped_like_novas(tmp_path: Path) -> None:
    inst = InstanceSpec(
        uuid=str(uuid.uuid4()),
        vcpus=2,
        memory_mb=256,
        root_gb=2,
        ephemeral_gb=1,
        swap_mb=32,
        image=ImageSpec(str(uuid.uuid4()), "/img", "raw", GiB, "/k", "/r", "console=ttyS0"),
        vifs=(VifSpec("0123456789abcdef", "fa:16:3e:00:00:01", "10.0.0.2", "net-1", 1001),),
        flavor_name="rf.big",
    )
    for name in ("disk", "disk.local", "disk.swap"):
        (tmp_path / name).touch()
    host = HostConfig(virt_type="qemu", machine="pc-i440fx-7.2", bridge="b{host}-{vni}", host="h1")
    root = ET.fromstring(domain_xml(inst, tmp_path, host, "instance-x", inst.uuid))
    assert root.get("type") == "qemu"
    assert (root.findtext("name"), root.findtext("uuid")) == ("instance-x", inst.uuid)
    assert (root.findtext("vcpu"), root.findtext("memory")) == ("2", str(256 * 1024))
    assert root.find("os/type").get("machine") == "pc-i440fx-7.2"  # type: ignore[union-attr]
    assert root.findtext("os/kernel") == str(tmp_path / "kernel")
    assert root.findtext("os/initrd") == str(tmp_path / "ramdisk")
    disks = [
        (d.find("source").get("file"), d.find("target").get("dev"), d.find("target").get("bus"))
        for d in root.iter("disk")
    ]  # type: ignore[union-attr]
    assert disks == [
        (str(tmp_path / "disk"), "vda", "virtio"),
        (str(tmp_path / "disk.local"), "vdb", "virtio"),
        (str(tmp_path / "disk.swap"), "vdc", "virtio"),
    ]
    (iface,) = root.iter("interface")
    assert iface.get("type") == "bridge"
    # The NIC is on its network's bridge on this host.
    assert iface.find("source").get("bridge") == "bh1-1001"  # type: ignore[union-attr]
    assert iface.find("target").get("dev") == "tap0123456789a"  # type: ignore[union-attr]
    assert iface.find("mac").get("address") == "fa:16:3e:00:00:01"  # type: ignore[union-attr]
    serial = root.find("devices/serial")
    assert serial is not None and serial.get("type") == "file"
    assert serial.find("source").get("path") == str(tmp_path / "console.log")  # type: ignore[union-attr]
    entries = {e.get("name"): e.text for e in root.iter("entry")}
    assert entries["product"] == "OpenStack Nova" and entries["serial"] == inst.uuid


def test_console_reports_are_parsed_per_boot() -> None:
    text = (
        "noise\nRF nproc=1\nRF memtotal_kb=94780\nRF disk vda bytes=1073741824\n"
        "RF marker written=abc\nRF ready\nRF poweroff\n"
        "RF nproc=2\nRF memtotal_kb=223368\nRF disk vda bytes=2147483648\n"
        "RF disk vdb bytes=1073741824\nRF marker found=abc\nRF ready\nRF nproc="
    )
    first, second = parse_console(text)
    assert (first.nproc, first.memtotal_kb, first.marker, first.marker_written) == (
        1,
        94780,
        "abc",
        True,
    )
    assert second.disks == {"vda": 2 * GiB, "vdb": GiB}
    assert (second.marker, second.marker_written) == ("abc", False)
