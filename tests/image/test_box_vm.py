"""The Box image booted under QEMU: systemd runs boxd for real, and the image checks itself.

One boot serves every test of this module (a boot under software emulation costs a minute).
The disk is the factory image with slot B installed as an update on trial (a boot entry with a
boot counter, box-b+3.conf, as an installer writes it). The VM enrolls at first boot from a
credential (the key is made inside it), gets its configuration from the reference cloud (a
Modbus building simulator on the host), proves itself healthy so that slot B is committed, and
runs its self-check (image/scripts/selftest.py), whose ``BOXTEST`` lines on the serial console
each test reads. The host takes part where the checks need it: it knocks on a port that the
Box listens on behind its firewall, and it sends a write command (so that boxd logs a point).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cloud.platform import Cloud
from drivers import Quality
from tests.support import boximage, boxvm
from tests.support.qemu import Vm
from tests.support.simthread import SimThread
from tests.support.wait import free_port, wait_for

pytestmark = pytest.mark.timeout(1800)  # one booted VM at a time: the "box-vm" group (tests/conftest.py)

BOX = "VM-BOX-1"
KNOCK_PORT = 7070  # in the guest
SETPOINT = "ahu1.supply_setpoint"
NEW_VERSION = "0.1.1"  # slot B's, newer than the factory's slot A: systemd-boot prefers it
# What may listen on a Box (image/README.md, "What listens"): only systemd-networkd's DHCPv4 client,
# bound to its leased address on the WAN to hear the server when it renews (the firewall lets in
# nothing but replies from port 67 there). No TCP listener at all.
DOCUMENTED_LISTENERS = {("udp", 68, "systemd-network")}


@dataclass
class Booted:
    vm: Vm
    cloud: Cloud
    building: SimThread
    write_answer: dict[str, Any] = field(default_factory=dict)
    seen_at: dict[str, float] = field(default_factory=dict)  # check -> seconds after power-on

    def result(self, check: str) -> dict[str, Any]:
        r = self.vm.result(check)
        assert r is not None, f"the self-check did not report {check!r}"
        return r


class _Host:
    """The host's part while the VM checks itself: knock when asked, configure, then write a point."""

    def __init__(self, b: Booted, knock_port: int) -> None:
        self.b, self.knock_port = b, knock_port
        self.knocks: list[socket.socket] = []
        self.version = 0
        self.pushed: list[int] = []
        self.command = ""

    def step(self) -> bool:
        b = self.b
        console = b.vm.console()
        if not b.vm.alive() or "Failed to start box-self" in console:
            raise AssertionError(f"the VM stopped or its self-check broke:\n{console[-3000:]}")
        for r in b.vm.results():
            b.seen_at.setdefault(r["check"], round(time.monotonic() - b.vm.started, 1))
        if not self.knocks and b.vm.result("knock"):
            s = socket.create_connection(("127.0.0.1", self.knock_port), timeout=5)  # QEMU's end, then the guest
            s.sendall(b"knock knock\n")
            self.knocks.append(s)
        if not self.version and boxvm.configure_when_enrolled(b.cloud, BOX, b.building.sim.points_toml(1.0),
                                                              self.pushed):
            self.version = self.pushed[0]
        if self.version and not self.command and self._good(SETPOINT):
            self.command = b.cloud.send_command(BOX, "write", {"point": SETPOINT, "value": 21.5})
        if self.command and not b.write_answer:
            row = b.cloud.store.command(self.command)
            if row is not None and row.status:
                b.write_answer = dict(row.reply or {})
        return bool(b.vm.result("done")) and (bool(b.write_answer) or not self.command)

    def _good(self, point: str) -> bool:
        return any(p == point and q == Quality.GOOD for p, _, _, q, _ in self.b.cloud.store.latest(BOX))

    def close(self) -> None:
        for s in self.knocks:
            s.close()


@pytest.fixture(scope="module")
def booted(box_image: boximage.Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Booted]:
    work = tmp_path_factory.mktemp("vm")
    with boxvm.bench(box_image, work) as bench, \
            SimThread(host=bench.address, port=free_port(), update_interval_s=0.5) as building:
        knock_port = free_port()
        vm = Vm(box_image.path, work / "vm", copy_disk=True, forwards={knock_port: KNOCK_PORT}, credentials={
            **bench.enroll_credential(BOX),
            "boxd.selftest": json.dumps({"mode": "full", "box_id": BOX, "knock_port": KNOCK_PORT}),
        })
        booted = Booted(vm, bench.cloud, building)
        host = _Host(booted, knock_port)
        vm.prepare()
        boximage.Esp(vm.disk, box_image).write(
            "loader/entries/box-b+3.conf",
            boximage.boot_entry(box_image, "b", NEW_VERSION, options="boxd.trial_s=900"), work)
        vm.start()
        try:
            wait_for(host.step, 1500, "the image's self-check to finish", step=0.5)
            (work / "timings.json").write_text(json.dumps(booted.seen_at, indent=1))
            print(f"\nVM self-check, seconds after power-on: {booted.seen_at}")
            yield booted
        finally:
            host.close()
            vm.stop()
            (Path(box_image.path).parent / "last-vm-console.log").write_text(vm.console())


def test_the_updated_slot_boots_on_trial_read_only_with_no_login_prompt(booted: Booted) -> None:
    r = booted.result("boot")
    assert r["entry"] == "box-b+3.conf" and r["entries"] == ["box-a.conf", "box-b+2-1.conf"], r
    assert r["counting"] == "\\loader\\entries\\box-b+2-1.conf", r
    assert r["root"] == "/dev/vda3" and r["root_ro"], r
    console = booted.vm.console()
    assert "login:" not in console and "Password:" not in console


def test_a_healthy_trial_reaches_boot_complete_and_commits_the_slot(booted: Booted) -> None:
    r = booted.result("trial")
    assert r["ok"] and r["boot_check"] == "success", r
    assert r["entries"] == ["box-a.conf", "box-b.conf"], r  # blessed: no counter any more


def test_boxd_runs_under_systemd_as_type_notify_and_signals_ready(booted: Booted) -> None:
    r = booted.result("ready")
    assert r["ok"] and r["type"] == "notify" and r["notify_access"] == "main", r
    assert r["status_text"].startswith("uplink "), r  # boxd's STATUS= reaches systemd


def test_boxd_delivers_and_takes_commands_from_inside_the_vm(booted: Booted) -> None:
    assert booted.write_answer.get("status") == "ok", booted.write_answer
    assert booted.building.call(booted.building.sim.value, SETPOINT) == 21.5


def test_boxd_feeds_the_watchdog(booted: Booted) -> None:
    r = booted.result("watchdog_fed")
    assert r["ok"] and r["watchdog_usec"] == "30s", r


def test_the_watchdog_restarts_a_boxd_whose_loop_hangs(booted: Booted) -> None:
    r = booted.result("watchdog_restart")
    assert r["ok"], r
    assert any("Watchdog timeout" in said for said in r["systemd_said"]), r


def test_restart_brings_back_a_crashed_boxd(booted: Booted) -> None:
    r = booted.result("crash_restart")
    assert r["ok"] and r["new_pid"] != r["old_pid"], r


def test_the_journal_carries_boxd_fields_and_no_secret(booted: Booted) -> None:
    r = booted.result("journal")
    assert r["box_ids"] == [BOX], r
    assert r["point_record"].get("BOX_POINT") == SETPOINT, r
    assert {"daemon", "uplink", "commands"} <= set(r["components"]), r
    assert r["secrets_checked"] == ["enrollment token", "private key"] and r["leaked"] == [], r


def test_systemd_analyze_security_scores_2_or_less(booted: Booted) -> None:
    r = booted.result("security")
    print(f"\nsystemd-analyze security boxd.service: {r['score']}; exposures: {r['exposures']}")
    assert r["score"] <= 2.0, r


def test_nothing_listens_on_the_box_but_what_the_image_documents(booted: Booted) -> None:
    listening = booted.result("listeners")["listening"]
    assert {(s["proto"], s["port"], s["process"]) for s in listening} <= DOCUMENTED_LISTENERS, listening


def test_boxd_may_reboot_the_box_and_no_other_user_may(booted: Booted) -> None:
    r = booted.result("polkit")  # what logind answers each of them (CanReboot), polkit deciding
    assert r["boxd"] == "yes" and r["nobody"] in ("challenge", "no"), r


def test_the_firewall_drops_a_connection_attempt_from_the_host(booted: Booted) -> None:
    r = booted.result("firewall")
    assert r["accepted"] == [], r  # the listener behind the firewall saw nothing
    assert "SRC=10.0.2.2 " in r["dropped"] and f"DPT={KNOCK_PORT} " in r["dropped"] and "SYN" in r["dropped"], r


def test_every_check_of_the_image_passed(booted: Booted) -> None:
    done = booted.result("done")
    assert done["ok"], [r for r in booted.vm.results() if not r.get("ok")]
