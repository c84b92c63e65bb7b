"""boxd's journal records: structured fields (BOX_ID, BOX_COMPONENT, BOX_POINT), nothing else.

systemd-python's real `journal.send()` builds the record; only its last step, the C call that
writes to journald's socket, is replaced to capture the fields (journald itself is not running
here; tests/image/ shows the same fields in a booted Box's journal).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from boxd import sdnotify

journal = pytest.importorskip("systemd.journal")


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, str]]]:
    records: list[dict[str, str]] = []

    def sendv(*lines: str) -> None:
        records.append(dict(line.split("=", 1) for line in lines))

    monkeypatch.setattr(journal, "sendv", sendv)
    monkeypatch.setattr(sdnotify, "_box_id", "")
    logger = logging.getLogger("boxd.commands")
    handler = sdnotify.JournalHandler()
    logger.addHandler(handler)
    old, logger.propagate = logger.propagate, False
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.propagate = old


def test_a_record_carries_the_box_the_component_and_the_point(sent: list[dict[str, str]]) -> None:
    log = logging.getLogger("boxd.commands")
    log.warning("before the identity is known")
    sdnotify.set_box_id("BOX-42")
    log.warning("command %s: wrote %r to %s", "c-1", 21.5, "ahu1.setpoint", extra={"point": "ahu1.setpoint"})
    first, second = sent
    assert "BOX_ID" not in first and first["BOX_COMPONENT"] == "commands"
    assert second["MESSAGE"] == "command c-1: wrote 21.5 to ahu1.setpoint"
    assert second["BOX_ID"] == "BOX-42" and second["BOX_POINT"] == "ahu1.setpoint"
    assert second["PRIORITY"] == "4" and second["SYSLOG_IDENTIFIER"] == "boxd" and second["CODE_LINE"].isdigit()


def test_a_supervised_task_names_itself_and_nothing_but_the_message_is_sent(sent: list[dict[str, str]]) -> None:
    logging.getLogger("boxd.commands").error("task %s failed", "bus:plant", extra={"component": "bus:plant"})
    (record,) = sent
    assert record["BOX_COMPONENT"] == "bus:plant" and record["PRIORITY"] == "3"
    # neither the arguments nor the record's other attributes (systemd-python's own handler sends them all)
    assert set(record) == {"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "LOGGER", "CODE_FILE", "CODE_LINE",
                           "CODE_FUNC", "BOX_COMPONENT"}


def test_the_daemon_s_own_logger_is_the_daemon_component() -> None:
    record = logging.LogRecord("boxd", logging.INFO, __file__, 1, "started", None, None)
    assert sdnotify.journal_fields(record)["BOX_COMPONENT"] == "daemon"
    record = logging.LogRecord("drivers.modbus", logging.DEBUG, __file__, 1, "polled", None, None)
    assert sdnotify.journal_fields(record)["BOX_COMPONENT"] == "modbus"
