"""The pure parts of the image's helpers (image/scripts/): the boot trial's verdict, the enrollment
credential. Their I/O (systemctl, EFI variables, the booted Box) is shown in tests/image/."""

from __future__ import annotations

import json

import pytest

from tests.support import imagescripts

boot_check = imagescripts.load("boot_check")
enroll = imagescripts.load("enroll")


@pytest.mark.parametrize(("cmdline", "seconds"), [
    ("root=PARTUUID=x ro boxd.trial_s=90 quiet", 90),
    ("root=PARTUUID=x ro", 600),              # the default
    ("boxd.trial_s=3", 10),                   # at least 10 s
    ("boxd.trial_s=999999", 86400),           # at most a day
    ("boxd.trial_s=soon", 600),               # not a number: the default
])
def test_the_trial_s_time_comes_from_the_entry_s_command_line(cmdline: str, seconds: int) -> None:
    assert boot_check.trial_seconds(cmdline) == seconds


def test_the_verdict_is_healthy_only_for_the_running_boxd_s_fresh_empty_health() -> None:
    now = 1000.0
    fresh = {"pid": 42, "ts": now - 1, "health_missing": ""}
    assert boot_check.verdict(fresh, 42, now) == ""
    assert boot_check.verdict(fresh, 0, now) == "boxd is not running"
    assert boot_check.verdict(None, 42, now) == "boxd has not written its status yet"
    assert boot_check.verdict(fresh, 43, now) == "boxd has not written its status yet"  # an earlier boxd's file
    assert "stale" in boot_check.verdict({**fresh, "ts": now - 60}, 42, now)
    missing = {**fresh, "health_missing": "no good reading yet from plc1"}
    assert boot_check.verdict(missing, 42, now) == "no good reading yet from plc1"
    assert boot_check.verdict({"pid": 42, "ts": now}, 42, now) == "boxd does not report its health"


def test_the_enrollment_credential_becomes_boxctl_s_arguments() -> None:
    raw = json.dumps({"server": "https://p.example:8443", "token": "t0k3n", "serial": "BOX-1"}).encode()
    assert enroll._arguments(raw) == ["--state-dir", "/var/lib/boxd", "provision", "--server",
                                      "https://p.example:8443", "--token", "t0k3n", "--serial", "BOX-1"]


@pytest.mark.parametrize(("raw", "says"), [
    (b"not json", "Expecting value"),
    (b"[]", "not a JSON object"),
    (b'{"server": "http://p:80", "token": "t"}', "https://"),
    (b'{"server": "https://p:8443", "token": ""}', "'token'"),
    (b'{"server": "https://p:8443", "token": "t", "serial": 7}', "'serial'"),
    (b'{"server": "https://p:8443", "token": "t", "shell": "sh"}', "unknown field(s): shell"),
    (b"{" + b" " * 5000 + b"}", "over 4096 bytes"),
])
def test_a_bad_enrollment_credential_is_refused_with_the_reason(raw: bytes, says: str) -> None:
    with pytest.raises(ValueError, match=None) as e:
        enroll._arguments(raw)
    assert says in str(e.value)
    assert b"t0k3n" not in str(e.value).encode()
