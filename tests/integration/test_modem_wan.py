"""The WAN choice on real interfaces: a wired uplink preferred, 4G when it fails and back, each switch
reported; the Box's firewall drops everything that comes in unasked on every WAN interface.

The Box (`tests.support.cell` with ``wired=True``) has ``eth0`` (a veth to the root namespace, its
default route at metric 100) and the simulated modem's ``wwan0`` (metric 700). The wired link is cut
beyond the Box (its far end goes down: the Box loses the carrier, as when the building's switch dies);
boxd moves the uplink with the image's own route-metric helper (`image/rootfs/usr/libexec/boxd/
route-metric`, what ``boxd-route@.service`` runs as root on a Box), and the platform raises and
closes its ``wan_failover`` alert. The firewall is the image's ``nftables.conf``, loaded in the
Box's namespace: a listener there is reachable from outside before it, and not after it on either
interface, while the Box's own outbound link keeps working.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.boxproc import BoxProcess
from tests.support.cell import Cell
from tests.support.cloudkit import make_cloud, provision
from tests.support.simthread import SimThread
from tests.support.wait import wait_for
from tests.support.wan import retarget

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
BOX = "WAN-1"
NFTABLES = Path(__file__).resolve().parents[2] / "image" / "nftables.conf"


def _reachable(address: str, port: int) -> bool:
    """Whether a TCP connection from outside the Box gets through (a drop is a timeout)."""
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except OSError:
        return False


def test_failover_to_4g_and_back_each_switch_reported_and_inbound_dropped_on_both(tmp_path: Path) -> None:
    with Cell(tmp_path / "cell", wired=True) as cell:
        cloud = make_cloud(tmp_path / "cloud", bind="", names=[cell.platform_ip])
        cloud.start()
        try:
            with SimThread(netns=cell.ns, host="127.0.0.1", update_interval_s=0.1) as building:
                state = tmp_path / "box"
                ident = provision(cloud, state, BOX)
                retarget(ident.directory, cell.platform_ip, cloud.settings.broker_port)
                conf = state / "boxd.toml"
                conf.write_text("[uplink]\nkeepalive_s = 10\nreconnect_max_s = 2\nbatch_delay_ms = 100\n"
                                "heartbeat_s = 5\n\n" + cell.modem_toml()
                                + '\n[wan]\nprefer = "eth0"\nfailover_s = 3\nfailback_s = 5\n\n'
                                + building.sim.points_toml(0.5))
                box = BoxProcess.start(state, conf, prefix=cell.prefix(), env=cell.env())
                try:
                    _scenario(cloud, cell, box)
                finally:
                    box.stop()
        finally:
            cloud.stop()


def _scenario(cloud: object, cell: Cell, box: BoxProcess) -> None:
    store = cloud.store  # type: ignore[attr-defined]

    def wan() -> object:
        modem = box.status().get("modem")
        return modem.get("wan") if isinstance(modem, dict) else None

    def flowing() -> None:
        n = len(store.batch_keys(BOX))
        wait_for(lambda: len(store.batch_keys(BOX)) > n + 3, 60, "data to flow")

    def alert_open() -> bool:
        return any(a.kind == "wan_failover" for a in store.alerts(BOX))

    box.wait_connected(60)
    flowing()
    assert wan() == "preferred"
    cell.wired_link(False)
    wait_for(lambda: wan() == "cellular", 60, "the uplink to move to 4G")
    flowing()
    wait_for(alert_open, 30, "the platform's wan_failover alert")
    cell.wired_link(True)
    wait_for(lambda: wan() == "preferred", 60, "the uplink to come back to eth0")
    flowing()
    wait_for(lambda: not alert_open(), 30, "the wan_failover alert to close")
    assert any(a.kind == "wan_failover" for a in store.alerts(BOX, include_closed=True))

    # the firewall: a listener in the Box's namespace, reached from outside on both WAN interfaces
    assert cell.bearer is not None
    addresses = (f"198.18.{cell.block}.2", cell.bearer.address)
    listener = subprocess.Popen([*cell.prefix(), sys.executable, "-c",
                                 "import socket,time; s=socket.create_server(('0.0.0.0', 2222)); time.sleep(600)"])
    try:
        wait_for(lambda: all(_reachable(a, 2222) for a in addresses), 15, "the listener, before the firewall")
        subprocess.run([*cell.prefix(), "nft", "-f", str(NFTABLES)], check=True, capture_output=True, timeout=30)
        assert [a for a in addresses if _reachable(a, 2222)] == []
        flowing()  # the Box's own connection (outbound, established) still passes
    finally:
        listener.kill()
        listener.wait()
