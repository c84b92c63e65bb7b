"""The cloud's side of configurations and commands: queued, published on the Box's downlink
(a configuration retained), the Box's replies stored and shown by `boxcloud`.

The Box here is a plain MQTT client with a real Box identity (the daemon's own handling is
tested in the end-to-end tests); the cloud, the broker and its ACL are real.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from boxd import downlink
from cloud.cli import main as boxcloud
from cloud.errors import CloudError
from cloud.platform import Cloud
from proto import topics
from proto.commands import Command
from proto.replies import config_reply, reply
from proto.topics import Up
from tests.support.cloudkit import mqtt_client, provision
from tests.support.wait import wait_for

GOOD = '[uplink]\nbatch_delay_ms = 100\n'


def _box(cloud: Cloud, tmp_path: Path, serial: str):  # type: ignore[no-untyped-def]
    ident = provision(cloud, tmp_path / serial, serial)
    box = mqtt_client(cloud, ident.box_id, ident.cert_file, ident.key_file)
    wait_for(box.connected.is_set, 10, "the Box to connect")
    box.client.subscribe(topics.down_filter(ident.box_id), 1)
    return ident, box


def _downlinks(box, leaf: str) -> list[object]:  # type: ignore[no-untyped-def]
    return [downlink.decode(leaf, p) for t, p in list(box.messages) if topics.parse(t).raw_leaf == leaf]


def test_a_configuration_reaches_the_box_even_when_it_comes_online_later(fresh_cloud: Cloud, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    cloud = fresh_cloud
    ident = provision(cloud, tmp_path / "CFG-1", "CFG-1")
    version = cloud.push_config(ident.box_id, GOOD, allow_empty=True)  # the Box is offline
    wait_for(lambda: cloud.store.config_state(ident.box_id).published is not None, 10,  # type: ignore[union-attr]
             "the configuration to be published")
    box = mqtt_client(cloud, ident.box_id, ident.cert_file, ident.key_file)
    wait_for(box.connected.is_set, 10, "the Box to connect")
    box.client.subscribe(topics.down_filter(ident.box_id), 1)
    wait_for(lambda: _downlinks(box, "config"), 10, "the retained configuration")
    (push,) = _downlinks(box, "config")
    assert isinstance(push, downlink.ValidConfig) and push.version == version and push.toml_text == GOOD
    assert push.allow_empty  # the operator's deliberate choice travels with it

    # the Box answers; `boxcloud config show` tells the operator
    box.client.publish(topics.up(ident.box_id, Up.REPLIES), config_reply(version, "applied"), 1)
    wait_for(lambda: cloud.store.config_state(ident.box_id).status == "applied", 10, "the answer")  # type: ignore[union-attr]
    assert boxcloud(["--home", str(cloud.home), "config", "show", ident.box_id]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(f"{version} "))
    assert row.split()[1] == "applied"
    assert boxcloud(["--home", str(cloud.home), "config", "show", ident.box_id, "--json"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    assert doc["version"] == version and doc["status"] == "applied" and doc["allow_empty"] is True
    box.close()


def test_a_command_and_its_reply_through_boxcloud(fresh_cloud: Cloud, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cloud = fresh_cloud
    ident, box = _box(cloud, tmp_path, "CMD-1")

    def play_the_box() -> None:  # answers the read command as the daemon would
        wait_for(lambda: _downlinks(box, "cmd"), 20, "the command")
        (cmd,) = _downlinks(box, "cmd")
        assert isinstance(cmd, Command)
        box.client.publish(topics.up(ident.box_id, Up.REPLIES),
                           reply(cmd.id, "ok", result={"ahu1.supply_temp": 18.5}), 1)

    t = threading.Thread(target=play_the_box)
    t.start()
    code = boxcloud(["--home", str(cloud.home), "cmd", ident.box_id, "read", "points=ahu1.supply_temp",
                     "--wait", "20"])
    t.join()
    out = capsys.readouterr().out
    assert code == 0, out
    assert "read ok" in out and "ahu1.supply_temp = 18.5" in out
    assert boxcloud(["--home", str(cloud.home), "cmd", "list", ident.box_id]) == 0
    assert "read" in capsys.readouterr().out
    box.close()


def test_bad_requests_are_refused_before_anything_is_sent(fresh_cloud: Cloud, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    cloud = fresh_cloud
    ident = provision(cloud, tmp_path / "BAD-1", "BAD-1")
    with pytest.raises(CloudError, match="no Box"):
        cloud.push_config("NOPE", GOOD)
    with pytest.raises(CloudError, match="batch_delay_ms"):
        cloud.push_config(ident.box_id, "[uplink]\nbatch_delay_ms = -5\n")
    with pytest.raises(CloudError, match="unknown command"):
        cloud.send_command(ident.box_id, "format_disk", {})
    assert cloud.store.configs(ident.box_id) == [] and cloud.store.commands(ident.box_id) == []
    # the CLI says the same in one line, exit non-zero
    assert boxcloud(["--home", str(cloud.home), "cmd", ident.box_id, "write", "point"]) == 1
    assert "KEY=VALUE" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[uplink]\nbatch_delay_ms = -5\n\n[queue]\nmax_samples = 5\n")
    assert boxcloud(["--home", str(cloud.home), "config", "push", ident.box_id, str(bad), "--wait", "0"]) == 1
    err = capsys.readouterr().err
    assert "batch_delay_ms" in err and "max_samples" in err  # every reason, not just the first
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    # no points: it would silence the Box's every device; refused without the deliberate option
    assert boxcloud(["--home", str(cloud.home), "config", "push", ident.box_id, str(good), "--wait", "0"]) == 1
    err = capsys.readouterr().err
    assert "no points" in err and "--allow-empty" in err and len(err.strip().splitlines()) == 1
    assert boxcloud(["--home", str(cloud.home), "config", "push", ident.box_id, str(good), "--wait", "0",
                     "--allow-empty"]) == 0
    assert "version 1 for BAD-1 queued" in capsys.readouterr().out
    # a missing file, an unknown Box: one line, the same wording everywhere, nothing queued
    assert boxcloud(["--home", str(cloud.home), "config", "push", ident.box_id, str(tmp_path / "nope.toml")]) == 1
    assert "cannot read" in capsys.readouterr().err
    for argv in (["config", "push", "NOPE", str(good)], ["config", "show", "NOPE"], ["cmd", "list", "NOPE"],
                 ["box", "show", "NOPE"], ["box", "revoke", "NOPE"], ["alerts", "--box", "NOPE"]):
        assert boxcloud(["--home", str(cloud.home), *argv]) == 1
        assert capsys.readouterr().err == "boxcloud: no Box 'NOPE' here ('boxcloud box list' shows them)\n"
    # --no-check sends a broken configuration anyway: the Box decides (and says why)
    assert cloud.push_config(ident.box_id, "[uplink]\nbatch_delay_ms = -5\n", check=False) == 2


def test_a_reply_for_a_command_of_another_box_changes_nothing(fresh_cloud: Cloud, tmp_path: Path) -> None:
    cloud = fresh_cloud
    a, box_a = _box(cloud, tmp_path, "REP-A")
    b, box_b = _box(cloud, tmp_path, "REP-B")
    cmd_id = cloud.send_command(a.box_id, "restart", {})
    wait_for(lambda: _downlinks(box_a, "cmd"), 10, "A's command")
    assert not _downlinks(box_b, "cmd")  # only A's downlink carries it
    box_b.client.publish(topics.up(b.box_id, Up.REPLIES), reply(cmd_id, "failed", "forged"), 1)
    box_a.client.publish(topics.up(a.box_id, Up.REPLIES), reply(cmd_id, "ok"), 1)
    wait_for(lambda: cloud.store.command(cmd_id).status is not None, 10, "A's reply")  # type: ignore[union-attr]
    assert cloud.store.command(cmd_id).status == "ok"  # type: ignore[union-attr]
    box_a.close()
    box_b.close()
