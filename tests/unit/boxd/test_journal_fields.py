"""boxd's journal records: structured fields (BOX_ID, BOX_COMPONENT, BOX_POINT), nothing else.

The handler writes journald's native protocol to a datagram socket; here the socket is a real
one of the test's (journald itself is not running here; tests/image/ shows the same fields in a
booted Box's journal), and the test parses what arrives as journald does.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from boxd import sdnotify


def _parse(datagram: bytes) -> dict[str, str]:
    """journald's reading of a native-protocol datagram."""
    fields, i = {}, 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            i = nl + 1
        else:
            key, (size,) = line, struct.unpack("<Q", datagram[nl + 1:nl + 9])
            value = datagram[nl + 9:nl + 9 + size]
            assert datagram[nl + 9 + size:nl + 10 + size] == b"\n"
            i = nl + 10 + size
        fields[key.decode()] = value.decode()
    return fields


class _Sent(list[dict[str, str]]):
    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock

    def __iter__(self) -> Iterator[dict[str, str]]:
        self.sock.setblocking(False)
        try:
            while True:
                self.append(_parse(self.sock.recv(1 << 17)))
        except BlockingIOError:
            pass
        return super().__iter__()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[_Sent]:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(tmp_path / "journal.socket"))
    monkeypatch.setattr(sdnotify, "_box_id", "")
    logger = logging.getLogger("boxd.commands")
    handler = sdnotify.JournalHandler(str(tmp_path / "journal.socket"))
    logger.addHandler(handler)
    old, logger.propagate = logger.propagate, False
    try:
        yield _Sent(server)
    finally:
        logger.removeHandler(handler)
        logger.propagate = old
        server.close()


def test_a_record_carries_the_box_the_component_and_the_point(sent: _Sent) -> None:
    log = logging.getLogger("boxd.commands")
    log.warning("before the identity is known")
    sdnotify.set_box_id("BOX-42")
    log.warning("command %s: wrote %r to %s", "c-1", 21.5, "ahu1.setpoint", extra={"point": "ahu1.setpoint"})
    first, second = sent
    assert "BOX_ID" not in first and first["BOX_COMPONENT"] == "commands"
    assert second["MESSAGE"] == "command c-1: wrote 21.5 to ahu1.setpoint"
    assert second["BOX_ID"] == "BOX-42" and second["BOX_POINT"] == "ahu1.setpoint"
    assert second["PRIORITY"] == "4" and second["SYSLOG_IDENTIFIER"] == "boxd" and second["CODE_LINE"].isdigit()


def test_a_supervised_task_names_itself_and_nothing_but_the_message_is_sent(sent: _Sent) -> None:
    logging.getLogger("boxd.commands").error("task %s failed", "bus:plant", extra={"component": "bus:plant"})
    (record,) = sent
    assert record["BOX_COMPONENT"] == "bus:plant" and record["PRIORITY"] == "3"
    # neither the arguments nor the record's other attributes (systemd-python's own handler sent them all)
    assert set(record) == {"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "LOGGER", "CODE_FILE", "CODE_LINE",
                           "CODE_FUNC", "BOX_COMPONENT"}


def test_the_daemon_s_own_logger_is_the_daemon_component() -> None:
    record = logging.LogRecord("boxd", logging.INFO, __file__, 1, "started", None, None)
    assert sdnotify.journal_fields(record)["BOX_COMPONENT"] == "daemon"
    record = logging.LogRecord("drivers.modbus", logging.DEBUG, __file__, 1, "polled", None, None)
    assert sdnotify.journal_fields(record)["BOX_COMPONENT"] == "modbus"


def test_a_message_of_several_lines_travels_whole(sent: _Sent) -> None:
    logging.getLogger("boxd.commands").warning("first line\nsecond = line")
    (record,) = sent
    assert record["MESSAGE"] == "first line\nsecond = line" and record["BOX_COMPONENT"] == "commands"


def test_notify_sends_the_state_to_systemd_s_socket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(tmp_path / "notify"))
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        sdnotify.notify("READY=1\nSTATUS=up")
        assert server.recv(4096) == b"READY=1\nSTATUS=up"
    monkeypatch.delenv("NOTIFY_SOCKET")
    sdnotify.notify("READY=1")  # not run by systemd: nothing, no error
