"""The point table's publication rule (`boxd.pointtable`), against an in-memory uplink (the rule on
real parts: tests/integration/test_reconnect_cost.py)."""

from __future__ import annotations

from pathlib import Path

from boxd.link import Link
from boxd.pointtable import ASK_INTERVAL_S, TablePublisher, digest
from proto.downlink import TableRequest
from proto.topics import Up
from tests.support.fakeuplink import FakeUplink
from tests.support.wait import in_loop


class Rig:
    def __init__(self, state: Path, table: bytes) -> None:
        self.table, self.now = table, 1000.0
        self.fake = FakeUplink(connects=False)
        self.link = Link(lambda _ident: self.fake)
        self.link.uplink = self.fake
        self.broker = "B-1@broker:8883"
        self.pub = TablePublisher(state, self.link, table=lambda: self.table, table_id=lambda: 7,
                                  broker=lambda: self.broker, clock=lambda: self.now)

    def tables(self) -> list[bytes]:
        return [s.payload for s in self.fake.sent if s.leaf == Up.META]

    def connect(self) -> None:
        self.fake.connect()
        self.pub.connected()

    def ack_all(self) -> None:
        for s in self.fake.sent:
            self.pub.acked(s.mid, True)


@in_loop
async def test_a_table_goes_once_and_again_only_when_unacknowledged_or_changed(tmp_path: Path) -> None:
    rig = Rig(tmp_path, b"one")
    rig.connect()
    assert rig.tables() == [b"one"]
    rig.connect()  # lost before the broker acknowledged it: sent again
    assert rig.tables() == [b"one", b"one"]
    rig.ack_all()
    assert (tmp_path / "table.sent").read_text().strip() == digest(b"one", "B-1@broker:8883")
    assert (tmp_path / "table.sent").stat().st_mode & 0o777 == 0o600
    rig.connect()
    rig.pub.changed()  # a configuration that changed no point
    assert rig.tables() == [b"one", b"one"]
    rig.table = b"two"
    rig.pub.changed()
    rig.table = b"one"  # changed back before "two" was acknowledged: the broker will hold "two"
    rig.pub.changed()
    assert rig.tables() == [b"one", b"one", b"two", b"one"]
    rig.ack_all()
    rig.broker = "B-1@other-platform:8883"  # provisioned again, for another platform: it lacks the table
    rig.connect()
    assert rig.tables() == [b"one", b"one", b"two", b"one", b"one"]


@in_loop
async def test_the_platform_is_answered_once_in_an_interval_and_bad_requests_are_ignored(tmp_path: Path) -> None:
    rig = Rig(tmp_path, b"one")
    rig.connect()
    rig.ack_all()
    rig.pub.requested(b'{"table": "x"}')
    rig.pub.requested(b"\xff" * 5000)
    rig.pub.requested(TableRequest(8).encode())  # a table this Box no longer runs: nothing to send
    assert rig.tables() == [b"one"]
    ask = TableRequest(7).encode()
    rig.pub.requested(ask)
    assert rig.tables() == [b"one", b"one"]
    rig.ack_all()
    for _ in range(100):  # a broken platform asking in a loop
        rig.pub.requested(ask)
    assert len(rig.tables()) == 2
    rig.now += ASK_INTERVAL_S
    rig.pub.requested(ask)
    assert len(rig.tables()) == 3
