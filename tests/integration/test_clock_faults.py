"""A Box that boots with its clock in 2001 (no RTC, no NTP): it connects, learns the platform's
time, and publishes only true timestamps.

boxd runs with libfaketime preloaded (LD_PRELOAD): its wall clock, and OpenSSL's view of time,
start at 2001-01-01; monotonic time is left alone, as on a real Box.
"""

from __future__ import annotations

import glob
import sys
import time
from pathlib import Path

import pytest

from cloud.platform import Cloud
from tests.support.boxproc import BoxProcess
from tests.support.cloudkit import provision
from tests.support.simthread import SimThread
from tests.support.wait import wait_for

LIBFAKETIME = next(iter(glob.glob("/usr/lib/*/faketime/libfaketime.so.1")), None)
pytestmark = pytest.mark.skipif(LIBFAKETIME is None, reason="libfaketime (Debian faketime) is missing")


def test_a_box_booted_in_2001_connects_and_publishes_true_time(cloud: Cloud, tmp_path: Path) -> None:
    provision(cloud, tmp_path, "CLOCK-2001")
    started = time.time()
    with SimThread() as sim:
        conf = tmp_path / "boxd.toml"
        conf.write_text("[uplink]\nbatch_delay_ms = 100\nheartbeat_s = 1\n\n" + sim.sim.points_toml(0.5))
        assert LIBFAKETIME is not None
        box = BoxProcess.start(tmp_path, conf, env={
            "LD_PRELOAD": LIBFAKETIME, "FAKETIME": "@2001-01-01 00:00:00", "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
        try:
            wait_for(lambda: len(cloud.store.samples("CLOCK-2001")) > 50, 60, "data from the Box")
            wait_for(lambda: (cloud.store.health("CLOCK-2001") or (0, {}))[1].get("clock_ok") is True, 30,
                     "the Box to trust its (corrected) clock")
        finally:
            box.stop()
    stamps = [t / 1000 for _, t, _, _ in cloud.store.samples("CLOCK-2001")]
    assert min(stamps) > started - 60 and max(stamps) < time.time() + 60, "a 2001 timestamp was published"
    log = (tmp_path / "boxd.log").read_text()
    assert "certificate dates are not checked" in log and "the platform's time is known" in log
    assert sys.platform == "linux"
