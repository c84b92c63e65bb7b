"""The daemon's update agent (`boxd.updates`) on its own (no network): what it says after a power loss in the
middle of an update, and how it answers commands it cannot take."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from boxd import updates
from boxd.supervisor import RESTART_STATUS, Stop, Supervisor
from ota import slots
from proto.commands import Update, UpdateAbort
from proto.errors import RejectedError
from proto.uplink import OtaEvent

HW = "generic-test"


def _agent(tmp_path: Path, events: list[OtaEvent], *, launched: bool = True) -> updates.UpdateAgent:
    return updates.UpdateAgent(tmp_path, "0.1.0", events.append, Supervisor(), launched=launched,
                             software=tmp_path / "software", hardware=HW)


def _update(deployment: str, target: str, version: str, health_s: int) -> Update:
    return Update("c-1", time.time() + 60, deployment, target, version, health_s)


def test_an_update_cut_by_a_power_loss_is_reported_failed_and_its_leftovers_removed(tmp_path: Path) -> None:
    ota_dir = tmp_path / "ota"
    (ota_dir / "downloads").mkdir(parents=True)
    (ota_dir / "downloads" / "boxd-0.2.0.tar.gz").write_bytes(b"half")  # downloaded, not unpacked yet
    (tmp_path / "software" / "releases" / ".0.2.0.tmp").mkdir(parents=True)  # unpacking cut short
    (ota_dir / updates.JOB_FILE).write_text(json.dumps({"deployment": "d-1", "version": "0.2.0"}))
    events: list[OtaEvent] = []
    _agent(tmp_path, events).at_start(lambda: "")
    assert [(e.deployment, e.version, e.state) for e in events] == [("d-1", "0.2.0", "failed")]
    assert "power loss" in events[0].detail and "nothing installed" in events[0].detail
    assert list((ota_dir / "downloads").iterdir()) == []
    assert list((tmp_path / "software" / "releases").iterdir()) == []
    assert not (ota_dir / updates.JOB_FILE).exists()


def test_an_update_switched_just_before_the_power_loss_is_not_called_failed(tmp_path: Path) -> None:
    sw = tmp_path / "software"
    (slots.release_dir(sw, "0.2.0")).mkdir(parents=True)
    slots.save(sw, slots.SlotState("0.2.0", slots.FACTORY, slots.Trial("0.2.0", slots.FACTORY, "d-1", 60, 1, 0.0)))
    (tmp_path / "ota").mkdir()
    (tmp_path / "ota" / updates.JOB_FILE).write_text(json.dumps({"deployment": "d-1", "version": "0.2.0"}))
    events: list[OtaEvent] = []
    a = updates.UpdateAgent(tmp_path, "0.2.0", events.append, Supervisor(), launched=True, software=sw, hardware=HW)
    a.at_start(lambda: "")
    assert events == [] and a.trial is not None and a.trial.deployment == "d-1"
    assert slots.release_dir(sw, "0.2.0").is_dir()  # the release on trial is kept


def test_updates_are_refused_in_words_when_they_cannot_run(tmp_path: Path) -> None:
    events: list[OtaEvent] = []
    update = _update("d-1", "boxd-0.2.0.tar.gz", "0.2.0", 60)
    with pytest.raises(RejectedError, match="not started by 'boxd launch'"):
        _agent(tmp_path, events, launched=False).start(update)
    a = _agent(tmp_path, events)
    assert "nothing of deployment d-9" in a.abort(UpdateAbort("c-1", time.time() + 60, "d-9"))
    with pytest.raises(RejectedError, match="was aborted on this Box"):  # an abort that overtook its update
        a.start(_update("d-9", "boxd-0.2.0.tar.gz", "0.2.0", 60))
    assert a.start(_update("d-2", "boxd-0.1.0.tar.gz", "0.1.0", 60)) == "already running 0.1.0"
    assert [(e.deployment, e.state) for e in events] == [("d-2", "committed")]


def test_a_version_on_trial_not_healthy_by_its_deadline_rolls_itself_back_and_stops(tmp_path: Path) -> None:
    sw = tmp_path / "software"
    slots.release_dir(sw, "0.2.0").mkdir(parents=True)
    # health_s 0: the deadline has passed at the first look (the trial's clock is the daemon's own)
    slots.save(sw, slots.SlotState("0.2.0", slots.FACTORY, slots.Trial("0.2.0", slots.FACTORY, "d-1", 0, 1, 0.0)))
    events: list[OtaEvent] = []
    a = updates.UpdateAgent(tmp_path, "0.2.0", events.append, Supervisor(), launched=True, software=sw, hardware=HW)
    a.at_start(lambda: "")
    with pytest.raises(Stop) as stop:
        asyncio.run(a.watch_trial(lambda: "no good reading yet from ahu1"))
    assert stop.value.status == RESTART_STATUS  # started again by systemd: the launcher runs the previous version
    state = slots.load(sw)
    assert state.active == slots.FACTORY and state.trial is None and state.report is not None
    assert state.report["detail"] == "version 0.2.0 was not healthy within 0 s (no good reading yet from ahu1)"
    assert events == []  # the previous version sends the rollback (from the report)
