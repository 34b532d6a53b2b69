"""The test guest's console lines and web page, parsed into reports.

The lines are those the guest's init and DHCP script print (see
:mod:`resizeflow.devstack.guest`); the last line of a log may still be being
written, so only whole lines count.
"""

from __future__ import annotations

import pytest

from resizeflow.devstack.guest import (
    NetReport,
    PageReport,
    parse_console,
    parse_net,
    parse_page,
)
from resizeflow.devstack.guest_init import INIT, UDHCPC_SCRIPT

MAC = "52:54:00:77:00:10"

CONSOLE = f"""\
RF nproc=1
RF memtotal_kb=100000
RF disk vda bytes=67108864
RF marker written=m-root
RF boots=1
RF boot_id=aaaa1111
RF ready
RF net eth0 mac={MAC} ip=10.77.0.10/24 boot=aaaa1111
RF vollog vdb serial=0b7f2c9e marker=m-vol records=1 boots=aaaa1111:1
RF nproc=2
RF memtotal_kb=200000
RF disk vda bytes=67108864
RF marker found=m-root
RF boots=2
RF boot_id=bbbb2222
RF ready
RF net eth0 mac={MAC} ip=10.77.0.10/24 boot=bbbb2222
RF net eth1 mac=52:54:00:77:00:11 ip=10.78.0.5/16 boot=bbbb2222
RF net eth0 mac={MAC} ip=10.77.0.11/24 boot=bbbb2222
RF nproc=2
RF memtotal_kb=200000
RF marker found=m-root
RF boots=3
RF boot_id=cccc3333
RF net eth0 mac={MAC} ip=10.77.0.10/2"""


def test_each_boot_reports_how_often_its_root_disk_has_booted() -> None:
    first, second = parse_console(CONSOLE)
    assert (first.marker, first.marker_written, first.boots) == ("m-root", True, 1)
    assert (second.marker, second.marker_written, second.boots) == ("m-root", False, 2)
    # The third boot has not printed RF ready: it is no report yet.
    assert [r.boot_id for r in parse_console(CONSOLE + "4\nRF ready\n")][-1] == "cccc3333"
    assert parse_console(CONSOLE + "4\nRF ready\n")[-1].boots == 3


def test_a_boot_without_a_count_or_whose_count_failed_reports_zero() -> None:
    text = "RF nproc=1\nRF boots failed\nRF boot_id=dddd\nRF ready\nRF nproc=1\nRF ready\n"
    assert [r.boots for r in parse_console(text)] == [0, 0]


def test_each_lease_is_a_net_report_with_its_boot_and_a_partial_line_waits() -> None:
    assert parse_net(CONSOLE) == [
        NetReport("eth0", MAC, "10.77.0.10", 24, "aaaa1111"),
        NetReport("eth0", MAC, "10.77.0.10", 24, "bbbb2222"),
        NetReport("eth1", "52:54:00:77:00:11", "10.78.0.5", 16, "bbbb2222"),
        NetReport("eth0", MAC, "10.77.0.11", 24, "bbbb2222"),
    ]
    # Completed, the last line is the third boot's lease.
    assert parse_net(CONSOLE + "4 boot=cccc3333\n")[-1] == NetReport(
        "eth0", MAC, "10.77.0.10", 24, "cccc3333"
    )


def test_net_lines_without_an_address_are_not_leases() -> None:
    text = f"RF net eth0 mac={MAC} boot=a\nRF net eth0 mac={MAC} ip=10.0.0.1 boot=a\nRF netx\n"
    assert parse_net(text) == []


def test_the_page_parses_and_matches_what_the_console_said() -> None:
    page = "marker=m-root\nboots=2\nboot_id=bbbb2222\n"
    assert parse_page(page) == PageReport(marker="m-root", boots=2, boot_id="bbbb2222")
    boot = parse_console(CONSOLE)[1]
    assert (boot.marker, boot.boots, boot.boot_id) == (
        parse_page(page).marker,
        parse_page(page).boots,
        parse_page(page).boot_id,
    )
    # Without its last newline the page is still whole.
    assert parse_page(page.rstrip("\n")).boot_id == "bbbb2222"


@pytest.mark.parametrize(
    "page",
    [
        "marker=m-root\nboots=2\nboot_id=",
        "marker=m-root\nboots=2\n",
        "marker=\nboots=2\nboot_id=b\n",
        "marker=m\nboots=two\nboot_id=b\n",
        "<html>not found</html>",
    ],
)
def test_a_cut_or_foreign_page_is_an_error(page: str) -> None:
    with pytest.raises(ValueError, match="not the test guest's page"):
        parse_page(page)


def test_the_guest_prints_the_lines_these_parsers_read() -> None:
    # The shell text and the parsers agree on the words (a rename in one fails here).
    assert 'echo "RF boots=$root_boots"' in INIT
    assert "printf 'marker=%s\\nboots=%s\\nboot_id=%s\\n'" in INIT
    assert 'echo "RF net $interface mac=$mac ip=$now boot=$boot" >/dev/console' in UDHCPC_SCRIPT
